"""The embedded store (store/sqlite.py): runtime state kept across restarts without Redis, shared
by the workers of one host, refused at start when the file is unusable, and moved to Redis with
`splitter state export` / `import`."""

import json
import os
import signal
import sqlite3
import subprocess
import time

import httpx
from conftest import PY, ROOT, eventually, routes_yaml
from test_fleet import FLEET_GUARD, users
from test_safety import route_state, yaml_for

from splitter.bucketing import bucket

TOKEN = "state-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
ENV = {"SPLITTER_ADMIN_TOKEN": TOKEN}
ROUTES = """  - name: auth
    prefix: /api/auth
    percent: 10
  - name: upload
    prefix: /api/upload
    percent: 0
    rollout: {steps: [10, 50, 100], interval_s: 3600}
  - name: resume_review
    prefix: /api/resume
    percent: 0
    cohorts: [{name: beta, to: new, users: [alice]}]"""


def routes(s) -> dict[str, dict]:
    return {r["name"]: r for r in httpx.get(s.admin + "/admin/routes").json()}


def served_by(s, path: str, user: str) -> str:
    return httpx.get(s.url + path, headers={"X-User-ID": user}).json()["backend"]


def sigkill(s) -> None:
    os.killpg(s.proc.pid, signal.SIGKILL)
    s.proc.p.wait(10)


def test_kill_switch_override_finished_rollout_members_and_history_survive_sigterm_and_sigkill(standin, splitter):
    text = routes_yaml(standin("legacy"), standin("new"), routes=ROUTES)
    s = splitter(text, env=ENV)
    eventually(lambda: httpx.get(s.admin + "/admin/rollouts").json()[0]["step"] == 10, timeout=5)
    assert httpx.put(s.admin + "/admin/routes/auth", json={"percent": 60}, headers=AUTH).status_code == 200
    r = httpx.post(s.admin + "/admin/rollouts/upload/promote", json={"full": True}, headers=AUTH)
    assert r.status_code == 200 and r.json()["status"] == "done", r.text
    r = httpx.put(s.admin + "/admin/routes/resume_review/cohorts/beta", json={"add": ["carol"]}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert httpx.put(s.admin + "/admin/kill", headers=AUTH).status_code == 200
    before = httpx.get(s.admin + "/admin/history").json()
    assert {e["action"] for e in before} >= {"set", "kill", "cohort"}, before

    for stop in ("SIGTERM", "SIGKILL"):
        s.proc.stop() if stop == "SIGTERM" else sigkill(s)
        s = splitter("", env=ENV, config=s.config)
        assert httpx.get(s.admin + "/admin/kill").json()["on"] is True, stop
        assert served_by(s, "/api/resume/x", "carol") == "legacy", f"kill switch still on after {stop}"
        time.sleep(0.5)  # several rollout ticks: a rollout that started over would be back at 10 %
        overrides = httpx.get(s.admin + "/admin/state").json()["overrides"]
        assert overrides["auth"] == {"percent": 60, "source": "override"}, stop
        assert overrides["upload"] == {"percent": 100, "source": "rollout"}, stop
        assert httpx.get(s.admin + "/admin/rollouts").json()[0]["status"] == "done", stop
        assert httpx.get(s.admin + "/admin/history").json()[: len(before)] == before, stop

    assert httpx.delete(s.admin + "/admin/kill", headers=AUTH).status_code == 200
    now = routes(s)
    assert (now["auth"]["percent"], now["upload"]["percent"]) == (60, 100)
    assert httpx.get(s.admin + "/admin/rollouts").json()[0]["percent"] == 100
    assert served_by(s, "/api/resume/x", "carol") == "new", "the runtime member is still in the cohort"
    assert served_by(s, "/api/resume/x", "dave") == "legacy"
    listed = httpx.get(s.admin + "/admin/routes/resume_review/cohorts/beta").json()
    assert listed["runtime_members"] == ["carol"] and listed["file_members"] == ["alice"]


def test_sigkill_within_5_ms_after_the_200_loses_nothing_20_of_20(standin, splitter):
    legacy, new = standin("legacy"), standin("new")
    s = splitter(routes_yaml(legacy, new), env=ENV)
    kept = 0
    for i in range(20):
        pct = 11 + i
        with httpx.Client() as c:
            r = c.put(s.admin + "/admin/routes/auth", json={"percent": pct}, headers=AUTH)
            os.killpg(s.proc.pid, signal.SIGKILL)  # right after the answer's last byte
        assert r.status_code == 200
        s.proc.p.wait(10)
        s = splitter("", env=ENV, config=s.config)
        kept += routes(s)["auth"]["percent"] == pct
    assert kept == 20


def test_two_workers_share_the_file_a_change_is_in_force_in_both_within_a_second(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new")), env=ENV, args=["--workers", "2"])
    user = next(u for u in users(100) if bucket(u) >= 50)  # legacy at routes.yaml's 50 %, new at 100 %

    def by_worker() -> dict[int, set[str]]:
        """Each request on a connection of its own (the kernel spreads them over the workers); the
        access log's pid says which worker served it."""
        seen: dict[int, set[str]] = {}
        for _ in range(40):
            rid = httpx.get(s.url + "/api/auth/x", headers={"X-User-ID": user}).headers["x-request-id"]
            line = s.wait_log(lambda e, rid=rid: e.get("event") == "request" and e.get("request_id") == rid)
            seen.setdefault(line["pid"], set()).add(line["backend"])
        return seen

    def both() -> dict[int, set[str]] | None:
        seen = by_worker()
        return seen if len(seen) == 2 else None

    before = eventually(both, timeout=20)
    assert all(sides == {"legacy"} for sides in before.values()), before
    r = httpx.put(s.admin + "/admin/routes/auth", json={"percent": 100}, headers=AUTH)
    assert r.status_code == 200, r.text
    time.sleep(1.0)  # the promise: in force in every worker within 1 s of the answer
    after = eventually(both, timeout=20)
    assert all(sides == {"new"} for sides in after.values()), after
    assert httpx.get(s.admin + "/healthz").json()["store"] == f"sqlite {s.config.parent / 'splitter-state.db'}"


def test_two_workers_trip_the_guard_on_their_traffic_together(standin, splitter):
    s = splitter(yaml_for(standin("legacy"), standin("new"), FLEET_GUARD, percent=100), env=ENV, args=["--workers", "2"])
    # 44 failing requests, each on a connection of its own so the kernel spreads them over both
    # workers; the guard needs 40, which only the two workers' counts together reach
    for u in users(44):
        assert httpx.get(s.url + "/api/auth/status?code=500", headers={"X-User-ID": u}).status_code == 500
    served = eventually(lambda: (lines := [e for e in s.logs() if e.get("event") == "request"]) and len(lines) == 44
                        and lines, timeout=10)
    per_worker = {pid: sum(e["pid"] == pid for e in served) for pid in {e["pid"] for e in served}}
    assert len(per_worker) == 2 and max(per_worker.values()) < 40, f"neither worker alone has 40: {per_worker}"
    eventually(lambda: route_state(s)["source"] == "guard", timeout=12)
    trip = eventually(lambda: next((e for e in s.logs() if "guard tripped" in e["event"]), None), timeout=5)
    assert trip["scope"] == "fleet" and trip["requests"] >= 40, trip


def serve_fails(cfg, *extra: str) -> str:
    r = subprocess.run([PY, "-m", "splitter", "serve", "--config", str(cfg), "--port", "0", "--admin-port", "0", *extra], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr
    return r.stderr


def test_a_corrupt_or_unreadable_state_file_or_a_read_only_path_stops_the_start_with_one_line(tmp_path):
    cfg = tmp_path / "routes.yaml"
    cfg.write_text(routes_yaml("http://127.0.0.1:1", "http://127.0.0.1:2"))
    db = tmp_path / "splitter-state.db"
    db.write_bytes(b"this is not a database" * 200)
    said = serve_fails(cfg)
    assert str(db) in said and "not a sound SQLite database" in said and "move it away" in said, said

    # a database whose pages are damaged: quick_check finds it
    db.unlink()
    with sqlite3.connect(db) as c:
        c.execute("CREATE TABLE t (x TEXT)")
        c.executemany("INSERT INTO t VALUES (?)", [("x" * 500,)] * 200)
    raw = bytearray(db.read_bytes())
    raw[4096 * 2 : 4096 * 2 + 64] = b"\xff" * 64
    db.write_bytes(bytes(raw))
    said = serve_fails(cfg)
    assert str(db) in said and "not a sound SQLite database" in said, said

    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        # root writes anywhere a mode allows: /proc takes no new files from anyone
        want = ro / "splitter-state.db" if not os.access(ro, os.W_OK) else "/proc/splitter-state.db"
        (tmp_path / "ro-routes.yaml").write_text(cfg.read_text() + f"state: {{path: {want}}}\n")
        said = serve_fails(tmp_path / "ro-routes.yaml")
        assert f"state file {want} cannot be opened for writing" in said and "writable" in said, said
    finally:
        ro.chmod(0o755)


def test_state_moves_from_the_embedded_file_to_redis_with_export_and_import(standin, splitter, redis_server):
    from test_cli import run

    legacy, new = standin("legacy"), standin("new")
    text = routes_yaml(legacy, new, routes=ROUTES)
    a = splitter(text, env=ENV)
    httpx.put(a.admin + "/admin/routes/auth", json={"percent": 60}, headers=AUTH)
    httpx.post(a.admin + "/admin/rollouts/upload/promote", json={"full": True}, headers=AUTH)
    httpx.put(a.admin + "/admin/routes/resume_review/cohorts/beta", json={"add": ["carol"]}, headers=AUTH)
    httpx.put(a.admin + "/admin/kill", headers=AUTH)
    httpx.get(a.url + "/api/auth/x", headers={"X-User-ID": "u1"})  # legacy serves it (the kill switch)
    gauge = "splitter_route_legacy_last_request_timestamp_seconds"
    legacy_last = eventually(lambda: a.metric(gauge, route="auth"), timeout=5)
    out = run("state", "export", "--admin", a.admin)
    assert out.returncode == 0, out.stderr
    exported = json.loads(out.stdout)
    assert exported["store"].startswith("sqlite ") and exported["kill"] is True
    assert exported["legacy_last"] == {"auth": legacy_last}
    saved = a.config.parent / "state.json"
    saved.write_text(out.stdout)
    a.proc.stop()

    cfg_b = a.config.parent / "fleet" / "routes.yaml"
    cfg_b.parent.mkdir()
    cfg_b.write_text(routes_yaml(legacy, new, routes=ROUTES, extra=f'redis: {{url: "{redis_server.url}", prefix: "m"}}'))
    b = splitter("", env=ENV, config=cfg_b)
    assert httpx.get(b.admin + "/healthz").json()["store"] == f"redis {redis_server.url}"
    # on its empty store b starts upload's rollout at its first tick (1 s): wait for that step, so that its own
    # event is told apart from the imported ones (an import slower than the tick once added it to the comparison)
    strip = lambda events: [{k: v for k, v in e.items() if k != "id"} for e in events]  # noqa: E731
    history = lambda: strip(httpx.get(b.admin + "/admin/history").json())  # noqa: E731
    own = eventually(lambda: (h := history()) and any(e["action"] == "rollout_step" for e in h) and h)
    imported = subprocess.run([PY, "-m", "splitter", "state", "import", str(saved), "--admin", b.admin], cwd=ROOT, capture_output=True, text=True, timeout=30, env={**os.environ, **ENV})
    assert imported.returncode == 0, imported.stderr
    assert f"redis {redis_server.url}" in imported.stdout and "1 cohort member," in imported.stdout, imported.stdout
    assert httpx.get(b.admin + "/admin/kill").json()["on"] is True
    assert eventually(lambda: b.metric(gauge, route="auth"), timeout=5) == legacy_last, "moved, not lost"
    assert httpx.get(b.admin + "/admin/state").json()["overrides"] == exported["overrides"]
    assert exported["overrides"]["auth"]["percent"] == 60 and exported["overrides"]["upload"]["percent"] == 100
    assert httpx.get(b.admin + "/admin/rollouts").json()[0]["status"] == "done"
    listed = httpx.get(b.admin + "/admin/routes/resume_review/cohorts/beta").json()
    assert listed["runtime_members"] == ["carol"]
    assert [e for e in history() if e not in own] == strip(exported["history"])
    again = subprocess.run([PY, "-m", "splitter", "state", "import", str(saved), "--admin", b.admin], cwd=ROOT, capture_output=True, text=True, timeout=30, env={**os.environ, **ENV})
    assert "0 history events" in again.stdout, "the same export imported twice adds no history twice"
    status = run("status", "--admin", b.admin)
    assert f"store: redis {redis_server.url}" in status.stdout

    bad = a.config.parent / "bad.json"
    bad.write_text('{"kill": true}')
    r = subprocess.run([PY, "-m", "splitter", "state", "import", str(bad), "--admin", b.admin], cwd=ROOT, capture_output=True, text=True, timeout=30, env={**os.environ, **ENV})
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "not a splitter state export" in r.stderr, r.stderr
