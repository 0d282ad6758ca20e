#!/usr/bin/env bash
# Start legacy_backend (BASE_PORT+1), new_backend (+2), upload_service (new_backend's code again, +3: the upload
# route's own new service) and the splitter (proxy +80, admin +81) on routes.yaml ($ROUTES) with no Redis. BASE_PORT
# defaults to 8000 (8001-8003, 8080, 8081: routes.yaml's own URLs); another base serves the same routes.yaml with
# --backend-url, so editing it still hot-reloads. Per-request lines go to $ACCESS_LOG (default
# ./splitter-access.log); the terminal shows this banner, warnings and errors. Ctrl-C stops all four.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
BASE_PORT=${BASE_PORT:-8000}
case "$BASE_PORT" in ''|*[!0-9]*) echo "splitter demo: BASE_PORT must be a number, got '$BASE_PORT'" >&2; exit 2;; esac
if [ "$BASE_PORT" -lt 1024 ] || [ "$BASE_PORT" -gt 65400 ]; then
  echo "splitter demo: BASE_PORT must be 1024..65400 (it uses BASE_PORT+1 .. BASE_PORT+81), got $BASE_PORT" >&2; exit 2
fi
LEGACY_PORT=$((BASE_PORT + 1)) NEW_PORT=$((BASE_PORT + 2)) UPLOAD_PORT=$((BASE_PORT + 3))
PROXY_PORT=$((BASE_PORT + 80)) ADMIN_PORT=$((BASE_PORT + 81))
ACCESS_LOG=${ACCESS_LOG:-./splitter-access.log}
ROUTES=${ROUTES:-routes.yaml}     # or an example: ROUTES=examples/rollout.yaml make run
export DATABASE_URL=${DATABASE_URL:-sqlite:///./splitter-demo.db}
export JWT_SECRET=${JWT_SECRET:-splitter-demo-development-secret-change-me}
export UPLOAD_DIR=${UPLOAD_DIR:-./uploads}
export SPLITTER_ADMIN_TOKEN=${SPLITTER_ADMIN_TOKEN:-demo-admin-token}

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "stopping..."
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap cleanup INT TERM EXIT

names=(legacy_backend new_backend upload_service splitter)
"$PY" -m legacy_backend --port "$LEGACY_PORT" & pids+=($!)
"$PY" -m new_backend --port "$NEW_PORT" & pids+=($!)
"$PY" -m new_backend --port "$UPLOAD_PORT" --name upload_service & pids+=($!)
"$PY" -m splitter serve --config "$ROUTES" --state "${SPLITTER_STATE:-splitter-state.db}" \
  --port "$PROXY_PORT" --admin-port "$ADMIN_PORT" --log-level warning --access-log "$ACCESS_LOG" \
  --backend-url "legacy=http://127.0.0.1:$LEGACY_PORT" --backend-url "new=http://127.0.0.1:$NEW_PORT" \
  --backend-url "upload_service=http://127.0.0.1:$UPLOAD_PORT" & pids+=($!)

# each service must answer its readiness URL with 200, or the demo says which one did not
urls=(http://127.0.0.1:$LEGACY_PORT/health http://127.0.0.1:$NEW_PORT/health http://127.0.0.1:$UPLOAD_PORT/health
      http://127.0.0.1:$ADMIN_PORT/readyz)
for i in 0 1 2 3; do
  ready=""
  for _ in $(seq 1 100); do
    if ! kill -0 "${pids[$i]}" 2>/dev/null; then break; fi
    if "$PY" -c "import sys, httpx; sys.exit(httpx.get('${urls[$i]}', timeout=1).status_code != 200)" 2>/dev/null; then ready=1; break; fi
    sleep 0.2
  done
  if [ -z "$ready" ]; then
    if kill -0 "${pids[$i]}" 2>/dev/null; then why="did not answer ${urls[$i]} within 20 s"; else why="exited (see its output above; is the port already in use?)"; fi
    echo >&2
    echo "splitter demo: ${names[$i]} failed to start: $why" >&2
    exit 1
  fi
done

cat <<MSG

  splitter demo is up (BASE_PORT=$BASE_PORT; no Redis; runtime state kept in ${SPLITTER_STATE:-splitter-state.db})
    proxy          http://localhost:$PROXY_PORT
    admin/metrics  http://127.0.0.1:$ADMIN_PORT/metrics   (admin token: \$SPLITTER_ADMIN_TOKEN=$SPLITTER_ADMIN_TOKEN)
    console        http://127.0.0.1:$ADMIN_PORT/ui
    legacy         http://127.0.0.1:$LEGACY_PORT
    new            http://127.0.0.1:$NEW_PORT
    upload_service http://127.0.0.1:$UPLOAD_PORT   (the upload route's new side)
    access log     $ACCESS_LOG   (one JSON line per request; tail -f it)
    routes         $ROUTES   (edit it: reloaded within 2 s)

  try:
    curl -si localhost:$PROXY_PORT/api/auth/me -H 'X-User-ID: alice'
    curl -si localhost:$PROXY_PORT/api/upload/1 -H 'X-User-ID: alice' -H 'X-Staff: 1'   (staff: X-Served-By: upload_service)
    export SPLITTER_ADMIN_URL=http://127.0.0.1:$ADMIN_PORT
    .venv/bin/splitter status
    SPLITTER_ADMIN_TOKEN=$SPLITTER_ADMIN_TOKEN .venv/bin/splitter set auth 100

  Ctrl-C stops all four.
MSG
wait -n "${pids[@]}"
