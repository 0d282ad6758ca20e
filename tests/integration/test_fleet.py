"""Fleet-true judgement with real processes, real Redis and stand-ins with set latency."""

import asyncio
import subprocess
import time

import httpx
from conftest import PY, ROOT, eventually, routes_yaml
from test_safety import TOKEN, route_state, yaml_for

from splitter.bucketing import bucket


def users(n: int, prefix: str = "u") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


async def _get_all(base: str, paths_users: list[tuple[str, str]], concurrency: int = 25) -> list[int]:
    sem = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:

        async def one(path: str, uid: str) -> int:
            async with sem:
                return (await c.get(path, headers={"X-User-ID": uid})).status_code

        return await asyncio.gather(*(one(p, u) for p, u in paths_users))


P95_GUARD = "    guard: {max_error_rate: 0.5, min_requests: 50, window_s: 60, max_p95_ratio: 1.1}"


def test_p95_ratio_reads_300_vs_306_ms_as_healthy_and_375_ms_as_a_breach(standin, splitter):
    # Latencies of a few hundred ms: a loaded machine's stalls (tens of ms on a handful of
    # requests) stay well inside the 10 % margin, so the healthy half cannot trip by chance.
    s = splitter(yaml_for(standin("legacy"), standin("new"), P95_GUARD))
    ids = users(200)
    assert 60 < sum(bucket(u) < 50 for u in ids) < 140
    codes = asyncio.run(_get_all(s.url, [("/api/auth/delay?legacy_ms=300&new_ms=306", u) for u in ids], concurrency=20))
    assert codes == [200] * 200
    time.sleep(1.5)  # several guard ticks
    state = route_state(s)
    w = state["window"]
    assert state["source"] == "file" and state["percent"] == 50, (state["source"], state.get("reason"), w)
    ratio = w["new"]["p95_ms"] / w["legacy"]["p95_ms"]
    assert w["new"]["requests"] >= 50 and 0.95 < ratio < 1.1, w  # 2 % slower reads as about 2 %, not as 50 %
    assert s.metric("splitter_guard_trips_total", route="auth", reason="p95_ratio") is None

    asyncio.run(_get_all(s.url, [("/api/auth/delay?legacy_ms=300&new_ms=375", u) for u in users(200, "v")]))
    eventually(lambda: route_state(s)["source"] == "guard", timeout=3)
    assert s.metric("splitter_guard_trips_total", route="auth", reason="p95_ratio") == 1


FLEET_GUARD = "    guard: {max_error_rate: 0.5, min_requests: 40, window_s: 10}"


def test_two_replicas_of_two_workers_trip_on_the_fleet_sum(standin, splitter, redis_server):
    text = yaml_for(standin("legacy"), standin("new"), FLEET_GUARD, redis_server.url, percent=100)
    a = splitter(text, env={"SPLITTER_ADMIN_TOKEN": TOKEN}, args=["--workers", "2"])
    cfg_b = a.config.parent / "b.yaml"
    cfg_b.write_text(text)
    b = splitter(text, env={"SPLITTER_ADMIN_TOKEN": TOKEN}, args=["--workers", "2"], config=cfg_b)
    ids = users(25)
    # 25 failing new requests through each replica: no process sees 40, the fleet sees 50
    for s in (a, b):
        assert asyncio.run(_get_all(s.url, [("/api/auth/status?code=500", u) for u in ids], concurrency=4)) == [500] * 25
    sent = time.monotonic()
    eventually(lambda: route_state(a)["source"] == "guard" and route_state(b)["source"] == "guard", timeout=10 + 2)
    assert time.monotonic() - sent < 12
    assert route_state(a)["percent"] == 0 and route_state(b)["percent"] == 0
    trips = sum(s.metric("splitter_guard_trips_total", route="auth", reason="error_rate") or 0 for s in (a, b))
    assert trips >= 1
    trip = next(e for e in a.logs() + b.logs() if "guard tripped" in e["event"])
    assert trip["scope"] == "fleet" and trip["requests"] >= 40


SHADOW = '    shadow: {percent: 100, methods: [GET, HEAD], ignore: ["$.generated_at"]}'


def test_shadow_mismatches_made_through_one_replica_are_listed_by_another(standin, splitter, redis_server):
    text = yaml_for(standin("legacy"), standin("new"), SHADOW, redis_server.url, percent=0)
    a = splitter(text)
    cfg_b = a.config.parent / "b.yaml"
    cfg_b.write_text(text)
    b = splitter(text, config=cfg_b, args=["--workers", "2"])
    with httpx.Client(base_url=a.url) as c:
        for i in range(5):
            assert c.get("/api/auth/json/scored", headers={"X-User-ID": f"u{i}"}).status_code == 200
    eventually(lambda: a.metric("splitter_shadow_total", route="auth", result="mismatch") == 5)
    for _ in range(4):  # whichever worker of b answers
        listed = httpx.get(b.admin + "/admin/shadow/auth").json()["mismatches"]
        assert len(listed) == 5 and listed[0]["diff"][0] == {"path": "$.score", "primary": 10, "shadow": 11}
    from test_cli import run

    out = run("shadow", "auth", "--admin", b.admin)
    assert out.returncode == 0 and out.stdout.count("$.score: 10 != 11") == 5


def test_workers_with_a_guard_and_state_in_memory_is_a_start_up_error(standin, tmp_path):
    cfg = tmp_path / "routes.yaml"
    cfg.write_text(yaml_for("http://127.0.0.1:1", "http://127.0.0.1:2", FLEET_GUARD) + 'state: {path: ":memory:"}\n')
    r = subprocess.run([PY, "-m", "splitter", "serve", "--config", str(cfg), "--workers", "2", "--port", "0", "--admin-port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip().count("\n") == 0 and "needs a shared store" in r.stderr and "auth" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


# a long interval and a loose p95 gate: the rollout must still be running at 10 % when its status is read
ROLLOUT = "    rollout: {steps: [10, 50, 100], interval_s: 120, gates: {max_error_rate: 0.05, max_p95_ratio: 50, min_requests: 5}}"


def test_rollout_status_shows_each_gate_against_its_threshold(standin, splitter):
    from test_cli import run

    s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=f"""  - name: auth
    prefix: /api/auth
    percent: 0
{ROLLOUT}"""), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    eventually(lambda: httpx.get(s.admin + "/admin/rollouts").json()[0]["step"] == 10, timeout=5)
    asyncio.run(_get_all(s.url, [("/api/auth/me", u) for u in users(300)]))
    out = run("rollout", "status", "auth", "--json", "--admin", s.admin)
    view = __import__("json").loads(out.stdout)
    gates = {g["gate"]: g for g in view["gates"]}
    assert gates["max_error_rate"]["threshold"] == 0.05 and gates["min_requests"]["threshold"] == 5
    assert view["scope"] == "process" and "next_step_in_s" in view
    table = run("rollout", "status", "--admin", s.admin)
    assert table.returncode == 0 and "max_error_rate" in table.stdout and ("✓" in table.stdout or "…" in table.stdout)
    watch = subprocess.Popen([PY, "-m", "splitter", "rollout", "status", "auth", "--watch", "--json", "--admin", s.admin], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        lines = [watch.stdout.readline() for _ in range(3)]  # type: ignore[union-attr]
    finally:
        watch.terminate()
        watch.wait(5)
        watch.stdout.close()  # type: ignore[union-attr]
    assert all(line.startswith("{") for line in lines), lines


# 8 s a step: the advance test reads the live evidence mid-way through the last step, before it is done
JUDGED = "    rollout: {steps: [10, 50], interval_s: 8, gates: {max_error_rate: 0.05, max_p95_ratio: 3.0, min_requests: 30, confidence: 0.95}}"


def _judged_rollout(procs, tmp_path, splitter, new_env, new_kind="new"):
    from backends import start_backend
    from test_safety import Load

    legacy = start_backend(procs, "legacy", tmp_path)
    (tmp_path / "side-new").mkdir()
    new = start_backend(procs, new_kind, tmp_path / "side-new", new_env)
    s = splitter(routes_yaml(legacy, new, routes=f"""  - name: auth
    prefix: /api/auth
    percent: 0
{JUDGED}"""), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    return s, Load([s.url], threads=6, cap=200_000)  # ~2,000 req/s on an idle machine: 20,000 end within 10 s


def rollout_view(s) -> dict:
    return httpx.get(s.admin + "/admin/rollouts").json()[0]


def test_the_judge_advances_a_healthy_new_with_its_evidence(procs, tmp_path, splitter):
    from test_cli import run

    # a healthy new: the same service on both sides, so only the judge is under test (new_backend costs more CPU
    # per request than legacy_backend: with both cores busy its p95 read 31 ms against 5.3, and the judge rightly
    # rolled it back at x5.93, interval x3.6 .. x9.21)
    s, load = _judged_rollout(procs, tmp_path, splitter, {}, new_kind="legacy")
    with load:
        # a loaded machine's latency tails can keep the 95 % interval of the p95 ratio open for a while (a run
        # with both cores busy and 4 xdist workers took over 60 s): wait; the verdicts below must still pass
        try:
            eventually(lambda: rollout_view(s)["step"] == 50 and rollout_view(s)["new"]["requests"] >= 100, timeout=120)
            out = run("rollout", "status", "auth", "--admin", s.admin).stdout  # mid-step: the live evidence
            eventually(lambda: rollout_view(s)["status"] == "done", timeout=120)
        except AssertionError as exc:  # what the judge saw, for the one who reads the failure
            judged = next(r for r in httpx.get(s.admin + "/admin/routes").json() if r["name"] == "auth")["judgement"]
            raise AssertionError(f"{exc}\nrollout: {rollout_view(s)}\njudgement: {judged}") from None
    advanced = [e for e in s.logs() if e["event"] == "rollout step" and e.get("action") == "advance"]
    assert advanced and all(c["verdict"] == "pass" for c in advanced[0]["checks"]), advanced
    assert {c["gate"] for c in advanced[0]["checks"]} == {"max_error_rate", "max_p95_ratio"}
    assert "judged at confidence 0.95" in out and "max_p95_ratio" in out and "p=" in out, out


def test_the_judge_rolls_back_a_slower_new_and_says_why(procs, tmp_path, splitter):
    from test_cli import run

    s, load = _judged_rollout(procs, tmp_path, splitter, {"FAULT_LATENCY_MS": "60"})
    with load:
        eventually(lambda: rollout_view(s)["status"] == "rolled_back", timeout=60)
    view = rollout_view(s)
    assert view["percent"] == 0 and "max_p95_ratio" in view["reason"] and "interval" in view["reason"], view
    back = s.wait_log(lambda e: e["event"] == "rollout rolled back")
    ratio = next(c for c in back["checks"] if c["gate"] == "max_p95_ratio")
    assert ratio["verdict"] == "fail" and ratio["interval"][0] > 2.0 and ratio["p_value"] < 0.05
    judged = next(r for r in httpx.get(s.admin + "/admin/routes").json() if r["name"] == "auth")["judgement"]
    assert judged["confidence"] == 0.95 and {c["gate"] for c in judged["checks"]} == {"max_error_rate", "max_p95_ratio"}
    assert all(set(c) == {"gate", "threshold", "estimate", "interval", "p_value", "verdict"} for c in judged["checks"])
    out = run("rollout", "status", "auth", "--admin", s.admin).stdout
    assert "rolled_back" in out and "max_p95_ratio" in out, out
