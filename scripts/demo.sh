#!/usr/bin/env bash
# Start legacy_backend (8001), new_backend (8002), upload_service (new_backend's code again, 8003: the
# upload route's own new service) and the splitter (8080, admin 8081) on routes.yaml with no Redis.
# Ctrl-C stops all four.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
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
"$PY" -m legacy_backend --port 8001 & pids+=($!)
"$PY" -m new_backend --port 8002 & pids+=($!)
"$PY" -m new_backend --port 8003 --name upload_service & pids+=($!)
"$PY" -m splitter serve --config routes.yaml --state "${SPLITTER_STATE:-splitter-state.db}" & pids+=($!)

# each service must answer its readiness URL with 200, or the demo says which one did not
urls=(http://127.0.0.1:8001/health http://127.0.0.1:8002/health http://127.0.0.1:8003/health http://127.0.0.1:8081/readyz)
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

  splitter demo is up (no Redis; runtime state kept in ${SPLITTER_STATE:-splitter-state.db})
    proxy          http://localhost:8080
    admin/metrics  http://127.0.0.1:8081/metrics   (admin token: \$SPLITTER_ADMIN_TOKEN=$SPLITTER_ADMIN_TOKEN)
    legacy         http://127.0.0.1:8001
    new            http://127.0.0.1:8002
    upload_service http://127.0.0.1:8003   (the upload route's new side)

  try:
    curl -si localhost:8080/api/auth/me -H 'X-User-ID: alice'
    curl -si localhost:8080/api/upload/1 -H 'X-User-ID: alice' -H 'X-Staff: 1'   (staff: X-Served-By: upload_service)
    .venv/bin/splitter status
    SPLITTER_ADMIN_TOKEN=$SPLITTER_ADMIN_TOKEN .venv/bin/splitter set auth 100

  Ctrl-C stops all four.
MSG
wait -n "${pids[@]}"
