"""Migration safety with real processes: guard, shadow traffic, gated rollouts."""

import threading
import time

import httpx
from backends import start_backend
from conftest import eventually, routes_yaml

TOKEN = "safety-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def yaml_for(legacy: str, new: str, route_extra: str, redis_url: str | None = None, percent: int = 50) -> str:
    routes = f"""  - name: auth
    prefix: /api/auth
    percent: {percent}
{route_extra}
  - name: upload
    prefix: /api/upload
    percent: 0"""
    extra = f'redis: {{url: "{redis_url}", prefix: "s"}}' if redis_url else ""
    return routes_yaml(legacy, new, routes=routes, extra=extra)


def route_state(s, name="auth") -> dict:
    return next(r for r in httpx.get(s.admin + "/admin/routes").json() if r["name"] == name)


class Load:
    """Background GETs spread over replicas; bounded by stop() and a request cap."""

    def __init__(self, urls: list[str], path: str = "/api/auth/me", cap: int = 20000, threads: int = 4) -> None:
        self.urls, self.path, self.cap = urls, path, cap
        self.stop_event = threading.Event()
        self.codes: list[int] = []
        self.threads = [threading.Thread(target=self._run, args=(i,)) for i in range(threads)]

    def _run(self, k: int) -> None:
        i = k
        with httpx.Client(timeout=10) as c:
            while not self.stop_event.is_set() and len(self.codes) < self.cap:
                url = self.urls[i % len(self.urls)]
                try:
                    self.codes.append(c.get(url + self.path, headers={"X-User-ID": f"load-{i}"}).status_code)
                except httpx.HTTPError:
                    self.codes.append(0)  # a replica stopped by the test
                i += len(self.threads)

    def __enter__(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join()


GUARD = "    guard: {max_error_rate: 0.05, min_requests: 50, window_s: 5}"


def test_guard_trips_fleet_wide_within_window_plus_1s(procs, tmp_path, splitter, redis_server):
    legacy = start_backend(procs, "legacy", tmp_path)
    new = start_backend(procs, "new", tmp_path, {"FAULT_ERROR_RATE": "0.3"})
    text = yaml_for(legacy, new, GUARD, redis_server.url)
    a = splitter(text, env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    cfg_b = a.config.parent / "b.yaml"
    cfg_b.write_text(text)
    b = splitter(text, env={"SPLITTER_ADMIN_TOKEN": TOKEN}, config=cfg_b)
    t0 = time.monotonic()
    with Load([a.url, b.url]):
        eventually(lambda: route_state(a)["source"] == "guard" and route_state(b)["source"] == "guard", timeout=5 + 1)
    assert time.monotonic() - t0 <= 6
    assert route_state(a)["percent"] == 0 == route_state(b)["percent"]
    trips = sum(s.metric("splitter_guard_trips_total", route="auth", reason="error_rate") or 0 for s in (a, b))
    assert trips >= 1
    trip = eventually(lambda: next((e for e in a.logs() + b.logs() if "guard tripped" in e["event"]), None))
    assert trip["route"] == "auth" and trip["error_rate"] > 0.05 and trip["requests"] >= 50
    events = httpx.get(b.admin + "/admin/history", params={"route": "auth"}).json()
    assert [(e["who"], e["action"], e["new"]) for e in events] == [("guard", "guard_trip", 0)], "one trip, one event"
    # it stays at 0 (no flapping): more traffic, still 0 and all on legacy
    with Load([a.url, b.url], cap=300):
        time.sleep(1.5)
    assert route_state(a)["percent"] == 0 and route_state(a)["source"] == "guard"
    # a person raises it again: a fresh window, the guard judges anew
    assert httpx.put(a.admin + "/admin/routes/auth", json={"percent": 50}, headers=AUTH).status_code == 200
    assert route_state(b)["source"] == "override" or eventually(lambda: route_state(b)["source"] == "override", timeout=1)


def test_guard_never_trips_on_a_healthy_new_over_5000_requests(procs, tmp_path, splitter):
    legacy = start_backend(procs, "legacy", tmp_path)
    new = start_backend(procs, "new", tmp_path)
    s = splitter(yaml_for(legacy, new, GUARD), args=["--no-access-log"])
    with Load([s.url], cap=5000, threads=8) as load:
        while len(load.codes) < 5000:
            time.sleep(0.2)
    assert len(load.codes) >= 5000 and set(load.codes) == {401}
    state = route_state(s)
    window = state.pop("window")
    assert state == {"name": "auth", "prefix": "/api/auth", "percent": 50, "file_percent": 50, "source": "file"}
    assert window["scope"] == "process" and window["new"]["errors"] == 0 and window["new"]["requests"] + window["legacy"]["requests"] > 0
    assert s.metric("splitter_guard_trips_total", route="auth", reason="error_rate") is None


SHADOW = '    shadow: {percent: 100, methods: [GET, HEAD], ignore: ["$.generated_at"]}'


def test_shadow_counts_mismatches_for_the_one_differing_endpoint_and_names_the_field(standin, splitter):
    legacy, new = standin("legacy"), standin("new")
    s = splitter(yaml_for(legacy, new, SHADOW, percent=0), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    with httpx.Client(base_url=s.url) as c:
        for i in range(20):
            assert c.get("/api/auth/json/same", headers={"X-User-ID": f"u{i}"}).json()["score"] == 10
            assert c.get("/api/auth/json/scored", headers={"X-User-ID": f"u{i}"}).json()["score"] == 10, "users get their own backend's answer"
        assert c.post("/api/auth/json/scored", json={}).status_code == 200  # POST is never shadowed
    eventually(lambda: (s.metric("splitter_shadow_total", route="auth", result="match") or 0) + (s.metric("splitter_shadow_total", route="auth", result="mismatch") or 0) == 40)
    assert s.metric("splitter_shadow_total", route="auth", result="mismatch") == 20
    assert s.metric("splitter_shadow_total", route="auth", result="match") == 20
    mismatches = httpx.get(s.admin + "/admin/shadow/auth").json()["mismatches"]
    assert mismatches and {m["path"] for m in mismatches} == {"/api/auth/json/scored"}
    assert all([d["path"] for d in m["diff"]] == ["$.score"] for m in mismatches), mismatches[0]
    assert mismatches[0]["diff"][0] == {"path": "$.score", "primary": 10, "shadow": 11}
    from test_cli import run

    out = run("shadow", "auth", "--admin", s.admin)
    assert out.returncode == 0 and "$.score: 10 != 11" in out.stdout


def test_shadow_backend_down_costs_users_nothing(standin, splitter, procs):
    legacy, new = standin("legacy"), standin("new")
    s = splitter(yaml_for(legacy, new, SHADOW, percent=0))
    procs[1].stop()  # the new stand-in: the shadow target for users on legacy
    with httpx.Client(base_url=s.url) as c:
        codes = [c.get("/api/auth/json/same", headers={"X-User-ID": f"u{i}"}).status_code for i in range(50)]
    assert codes == [200] * 50
    eventually(lambda: s.metric("splitter_shadow_total", route="auth", result="error") == 50)


ROLLOUT = "    rollout: {{steps: [10, 25, 50, 100], interval_s: {interval}, gates: {{max_error_rate: 0.05, max_p95_ms: 500, min_requests: 20}}}}"


def rollout_view(s) -> dict:
    return httpx.get(s.admin + "/admin/rollouts").json()[0]


def steps_logged(s) -> list[int]:
    time.sleep(0.25)  # logs are written in batches every 0.1 s
    return [e["new"] for e in s.logs() if e["event"] == "rollout step"]


def test_rollout_walks_a_healthy_new_to_100(procs, tmp_path, splitter):
    legacy = start_backend(procs, "legacy", tmp_path)
    new = start_backend(procs, "new", tmp_path)
    s = splitter(yaml_for(legacy, new, ROLLOUT.format(interval=1), percent=0))
    with Load([s.url], cap=20000):
        eventually(lambda: rollout_view(s)["status"] == "done", timeout=20)
    assert steps_logged(s) == [10, 25, 50, 100]
    assert route_state(s)["percent"] == 100 and route_state(s)["source"] == "rollout"
    assert s.metric("splitter_rollout_step", route="auth") == 100
    advance = [e for e in s.logs() if e.get("action") == "advance"]
    assert all(a["requests"] >= 20 and a["error_rate"] <= 0.05 for a in advance), "every step is logged with the gate values that justified it"


def test_rollout_rolls_a_faulty_new_back_at_the_first_failed_gate(procs, tmp_path, splitter):
    legacy = start_backend(procs, "legacy", tmp_path)
    new = start_backend(procs, "new", tmp_path, {"FAULT_ERROR_RATE": "0.5"})
    s = splitter(yaml_for(legacy, new, ROLLOUT.format(interval=2), percent=0), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    with Load([s.url], cap=20000):
        eventually(lambda: rollout_view(s)["status"] == "rolled_back", timeout=15)
    view = rollout_view(s)
    assert view["percent"] == 0 and "gate failed at 10%" in view["reason"] and "error rate" in view["reason"]
    assert steps_logged(s) == [10]
    # operators: resume starts over; abort sends it to 0
    from test_cli import run

    assert run("rollout", "resume", "auth", "--admin", s.admin, token=TOKEN).returncode == 0
    eventually(lambda: rollout_view(s)["status"] == "running", timeout=15)
    r = run("rollout", "abort", "auth", "--admin", s.admin, token=TOKEN)
    assert r.returncode == 0 and "aborted at 0%" in r.stdout
    assert "aborted" in run("rollout", "status", "--admin", s.admin).stdout


def test_one_replica_drives_and_another_takes_over_when_it_dies(procs, tmp_path, splitter, redis_server):
    legacy = start_backend(procs, "legacy", tmp_path)
    new = start_backend(procs, "new", tmp_path)
    text = yaml_for(legacy, new, ROLLOUT.format(interval=2), redis_server.url, percent=0)
    a = splitter(text)
    cfg_b = a.config.parent / "b.yaml"
    cfg_b.write_text(text)
    b = splitter(text, config=cfg_b)
    with Load([a.url, b.url], cap=40000) as load:
        eventually(lambda: rollout_view(a)["step"] == 25, timeout=10)
        drivers = [s for s in (a, b) if rollout_view(s)["driven_here"]]
        assert len(drivers) == 1
        driver, other = drivers[0], (b if drivers[0] is a else a)
        assert steps_logged(other) == []
        load.urls = [other.url]
        driver.proc.stop()
        eventually(lambda: rollout_view(other)["driven_here"], timeout=6)
        eventually(lambda: rollout_view(other)["status"] == "done", timeout=20)
    assert steps_logged(other)[-1] == 100 and 10 not in steps_logged(other)
    assert redis_server.command("HGET", "s:percent", "auth") == "100"
