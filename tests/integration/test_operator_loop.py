"""The operator's loop around a rollout, with real processes: strict JSON while the judge has
little evidence, rollouts that finish at 100 %, approval steps with promote, `rollout wait` for
CI jobs, `--watch` through a restart, and the events counted for alerts."""

from __future__ import annotations

import itertools
import json
import math
import shutil
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml
from backends import start_backend
from conftest import PY, ROOT, Proc, eventually, routes_yaml, wait_http
from test_cli import one_line_error, run

from splitter import strictjson
from splitter.admin.common import JSONResponse
from splitter.bucketing import bucket

TOKEN = "loop-token"


def strict_loads(text: str) -> object:
    """json.loads that refuses what JSON does not have (Python's parser accepts Infinity and NaN)."""

    def refuse(name: str) -> None:
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_the_encoder_writes_null_for_infinity_and_nan():
    value = {"interval": [0.5, math.inf], "p": math.nan, "low": -math.inf, "nested": ({"x": [math.inf]},), "n": 3}
    for text in (strictjson.dumps(value), JSONResponse(value).body.decode()):
        assert strict_loads(text) == {
            "interval": [0.5, None],
            "p": None,
            "low": None,
            "nested": [{"x": [None]}],
            "n": 3,
        }
    assert strictjson.dumps({"a": 1.5}) == '{"a": 1.5}'
    with pytest.raises(ValueError):
        strict_loads('{"a": Infinity}')  # the parser the tests below read with


def auth_route(rollout: str, percent: int = 0) -> str:
    return f"""  - name: auth
    prefix: /api/auth
    percent: {percent}
    rollout: {rollout}"""


class Paced:
    """GETs at about `rate` per second from a few threads, each user id sticky; until stop."""

    def __init__(self, url: str, rate: float = 60, threads: int = 4, path: str = "/api/auth/me") -> None:
        self.url, self.path, self.gap = url, path, threads / rate
        self.stop_event = threading.Event()
        self.codes: list[int] = []
        self.threads = [threading.Thread(target=self._run, args=(k, threads)) for k in range(threads)]

    def _run(self, k: int, step: int) -> None:
        i, due = k, time.monotonic()
        with httpx.Client(timeout=10) as c:
            while not self.stop_event.is_set():
                try:
                    self.codes.append(c.get(self.url + self.path, headers={"X-User-ID": f"paced-{i}"}).status_code)
                except httpx.HTTPError:
                    self.codes.append(0)
                i += step
                due += self.gap
                self.stop_event.wait(max(0.0, due - time.monotonic()))

    def __enter__(self) -> Paced:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join()


def wait_for(s, *args: str) -> subprocess.CompletedProcess[str]:
    """`splitter rollout wait auth ...`, given longer than run()'s 30 s to say its verdict."""
    return subprocess.run(
        [PY, "-m", "splitter", "rollout", "wait", "auth", *args, "--admin", s.admin],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def rollout_view(s) -> dict:
    return strict_loads(httpx.get(s.admin + "/admin/rollouts").text)[0]  # type: ignore[index]


def events(s, event: str) -> float | None:
    return s.metric("splitter_rollout_events_total", route="auth", event=event)


JUDGED_LOW = (
    "{steps: [50, 100], interval_s: 60, gates: {max_error_rate: 0.05, max_p95_ms: 500, max_p95_ratio: 2, "
    "max_error_increase: 0.05, min_requests: 50, confidence: 0.95}}"
)


def test_little_evidence_never_breaks_the_admin_api_and_report_is_strict_json(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=auth_route(JUDGED_LOW)))
    view = eventually(lambda: (v := rollout_view(s))["step"] == 50 and v, timeout=15)  # the first tick: store writes on a loaded machine
    time.sleep(
        max(0.0, math.ceil(view["since"]) - time.time() + 0.05)
    )  # a step's window counts from its first whole second
    users = [u for u in (f"few{i}" for i in range(100)) if bucket(u) < 50][:2] + [
        next(f"old{i}" for i in range(100) if bucket(f"old{i}") >= 50)
    ]
    for u in users:  # three requests: two to new, one to legacy; every upper bound of a p95 is still open
        assert httpx.get(s.url + "/api/auth/me", headers={"X-User-ID": u}).status_code == 200
    judged = eventually(
        lambda: (
            (r := strict_loads(httpx.get(s.admin + "/admin/routes").text)[0])
            and r["window"]["new"]["requests"] == 2
            and r
        )
    )  # type: ignore[index]
    p95 = next(c for c in judged["judgement"]["checks"] if c["gate"] == "max_p95_ms")
    assert p95["interval"][1] is None and p95["verdict"] == "wait", p95  # an open end is null
    codes = []
    t0 = time.monotonic()
    for i in range(30):
        for path in ("/admin/routes", "/admin/rollouts", "/admin/overview"):
            r = httpx.get(s.admin + path)
            codes.append(r.status_code)
            strict_loads(r.text)
        time.sleep(max(0.0, t0 + (i + 1) * 0.1 - time.monotonic()))
    assert codes == [200] * 90  # paced over ~3 s (slower on a loaded machine: the pace is not what is judged)
    rep = run("report", "--admin", s.admin, "--json")
    assert rep.returncode == 4, rep.stderr  # 2 and 1 requests: neither criterion decided
    auth = next(r for r in strict_loads(rep.stdout) if r["route"] == "auth")  # type: ignore[union-attr]
    for side, n in (("new", 2), ("old", 1)):
        assert auth[side]["requests"] == n and type(auth[side]["requests"]) is int and type(auth[side]["errors"]) is int
    assert auth["old"]["p50_ci_ms"][1] is None, auth["old"]  # one request: the interval is open above
    assert "∞]" in run("report", "--admin", s.admin, "--route", "auth").stdout
    status = run("rollout", "status", "auth", "--admin", s.admin)
    assert status.returncode == 0 and "∞]" in status.stdout and "… min_requests" in status.stdout, status.stdout


def test_report_window_without_prometheus_is_an_error():
    one_line_error(run("report", "--window", "10m"), "--window 10m needs --prometheus", code=2)


RELATIVE = (
    "{steps: [50, 100], interval_s: 3, gates: {max_error_increase: 0.05, max_p95_ratio: 3, min_requests: 30, "
    "confidence: 0.95}}"
)


def test_a_healthy_rollout_with_legacy_relative_gates_reaches_done_and_wait_says_so(procs, tmp_path, splitter):
    legacy, new = start_backend(procs, "legacy", tmp_path), start_backend(procs, "new", tmp_path)
    s = splitter(routes_yaml(legacy, new, routes=auth_route(RELATIVE)), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    t0 = time.monotonic()
    with Paced(s.url, rate=60):
        r = wait_for(s, "--timeout", "60")
    assert r.returncode == 0, (r.stdout, r.stderr, rollout_view(s))
    assert r.stdout.splitlines()[-1] == "auth: rollout done at 100%: all steps passed", r.stdout
    assert "auth: rollout running at 100% (step 2 of 2)" in r.stdout
    last = rollout_view(s)["previous"]  # the 100 % step, judged against legacy's window at 50 % (no legacy traffic now)
    assert last["percent"] == 100 and last["verdict"] == "pass" and last["legacy"]["requests"] >= 30, last
    assert events(s, "done") == 1 and events(s, "advanced") == 2 and events(s, "rolled_back") == 0
    print(f"done after {time.monotonic() - t0:.1f} s; new at 100 %: {last['new']}; legacy at 50 %: {last['legacy']}")


QUIET = "{steps: [50, 100], interval_s: 3, gates: {max_p95_ratio: 1.5, min_requests: 20, confidence: 0.9}}"


def test_a_quiet_route_is_judged_on_all_its_steps_evidence_and_finishes(standin, splitter):
    """16 requests a second answered in 45 ms: a p95 upper bound at 0.9 needs more requests a side than
    one interval (3 s) holds; judged on everything since the step began, the rollout finishes, and the
    evidence shown never shrinks while it grows."""
    s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=auth_route(QUIET)))
    seen: list[tuple[float, int]] = []
    waits: list[dict] = []

    def at_50_with_evidence() -> bool:
        v = rollout_view(s)
        if v["step"] == 50 and v["status"] == "running":
            seen.append((v["since"], v["new"]["requests"]))
            waits.extend(w for w in v["waiting_for"] if w["gate"] == "max_p95_ratio")
            window = httpx.get(s.admin + "/admin/routes").json()[0]["window"]
            assert window["step_since"] == v["since"] and window["span_s"] <= time.time() - v["since"] + 1, window
            return v["new"]["requests"] >= 45
        return v["step"] == 100  # moved on before a poll saw 45

    with Paced(s.url, rate=16, path="/api/auth/delay?legacy_ms=45&new_ms=45"):
        eventually(at_50_with_evidence, timeout=30, interval=0.3)
        status = run("rollout", "status", "auth", "--admin", s.admin).stdout
        r = wait_for(s, "--timeout", "60")
    # while it waited it said so: the gate, the requests it needs on each side and about how long
    counted = [w for w in waits if w["needs"] is not None]  # (not before new's first request)
    assert counted and all(w["needs"]["new"] > w["has"]["new"] for w in counted), waits
    said = counted[0]["says"]
    assert said.startswith("max_p95_ratio: needs ") and " at confidence 0.9; new has " in said, said
    assert "s at the current rate" in said, said
    assert "waiting: " in status or "done" in status or "at 100%" in status, status
    assert r.returncode == 0, (r.stdout, r.stderr, rollout_view(s))
    for (since_a, n_a), (since_b, n_b) in itertools.pairwise(seen):
        assert since_a != since_b or n_b >= n_a, seen
    last = rollout_view(s)["previous"]
    # legacy's side at 100 % is all of the 50 % step: more than its last 4 s (8 a second) could hold
    assert last["percent"] == 100 and last["verdict"] == "pass" and last["legacy"]["requests"] >= 45, last


FAILING = (
    "{steps: [50, 100], interval_s: 3, gates: {max_error_rate: 0.05, max_error_increase: 0.05, min_requests: 30, "
    "confidence: 0.95}}"
)


def test_a_new_failing_half_its_requests_is_rolled_back_and_wait_exits_3(procs, tmp_path, splitter):
    legacy, new = (
        start_backend(procs, "legacy", tmp_path),
        start_backend(procs, "new", tmp_path, {"FAULT_ERROR_RATE": "0.5"}),
    )
    s = splitter(routes_yaml(legacy, new, routes=auth_route(FAILING)), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    with Paced(s.url, rate=60):
        r = wait_for(s, "--timeout", "60")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "auth: rollout rolled_back at 0%: gate failed at 50%: max_error_rate" in r.stdout.splitlines()[-1], r.stdout
    assert events(s, "rolled_back") == 1 and events(s, "done") == 0
    view = rollout_view(s)
    evidence = view["previous"]
    # half of new's answers fail, judged on min_requests 30 or a few more: its evidence is far above the 5 % gate
    # (> 0.3 failed about one run in a hundred: 10 errors of 35 is 0.29; 4 or fewer of 30: 3 runs in 10^5)
    assert evidence["percent"] == 50 and evidence["verdict"] == "fail" and evidence["new"]["error_rate"] > 0.15, evidence
    # neither promote nor pause applies to a rolled-back rollout (pause then resume once brought it
    # back onto the failed step); resume starts over at the first step, and says where
    one_line_error(run("rollout", "promote", "auth", "--admin", s.admin, token=TOKEN), "409")
    one_line_error(run("rollout", "pause", "auth", "--admin", s.admin, token=TOKEN), "is rolled_back: pause")
    assert rollout_view(s)["percent"] == 0
    resumed = run("rollout", "resume", "auth", "--admin", s.admin, token=TOKEN)
    assert resumed.stdout.strip() == "auth: rollout running at 50% (step 1 of 2)", resumed.stdout
    assert events(s, "resumed") == 1
    one_line_error(run("rollout", "resume", "auth", "--admin", s.admin, token=TOKEN), "is running: resume")
    restarted = run("rollout", "restart", "auth", "--admin", s.admin, token=TOKEN)
    assert restarted.stdout.strip() == "auth: rollout running at 50% (step 1 of 2)", restarted.stdout


# interval_s 4: after the promote to 50 % the step to 100 % comes 4 s later, time enough for `promote --full` to
# find the rollout still at 50 % on a loaded machine (at 1 s a slow CLI start let the rollout finish by itself)
APPROVAL = (
    "{steps: [10, {percent: 50, approval: true}, 100], interval_s: 4, gates: {max_error_rate: 0.5, min_requests: 3}}"
)


def test_an_approval_step_holds_until_promote_and_promote_full_finishes(procs, tmp_path, splitter):
    legacy, new = start_backend(procs, "legacy", tmp_path), start_backend(procs, "new", tmp_path)
    s = splitter(routes_yaml(legacy, new, routes=auth_route(APPROVAL)), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    with Paced(s.url, rate=60):
        held = eventually(lambda: (v := rollout_view(s))["status"] == "awaiting_approval" and v, timeout=15)
        assert held["percent"] == 10 and held["awaiting"] == 50 and held["approval_steps"] == [50]
        time.sleep(max(0.0, held["since"] + held["interval_s"] + 3 - time.time()))  # 3 s past the interval
        view = rollout_view(s)
        assert view["status"] == "awaiting_approval" and view["percent"] == 10 and view["new"]["requests"] >= 3, view
        waited = run("rollout", "wait", "auth", "--timeout", "1", "--admin", s.admin)
        assert (
            waited.returncode == 5
            and "awaiting approval to enter 50%" in waited.stdout
        ), "awaiting approval: exit 5 at once, not a timeout"
        one_line_error(run("rollout", "resume", "auth", "--admin", s.admin, token=TOKEN), "awaiting approval")
        promoted = run("rollout", "promote", "auth", "--admin", s.admin, token=TOKEN)
        assert promoted.stdout.strip() == "auth: rollout running at 50% (step 2 of 3)", promoted
        assert rollout_view(s)["percent"] == 50
        full = run("rollout", "promote", "auth", "--full", "--admin", s.admin, token=TOKEN)
        assert full.stdout.strip() == "auth: rollout done at 100%: promoted to 100% by operator", full
    view = rollout_view(s)
    assert view["status"] == "done" and view["percent"] == 100
    assert run("rollout", "wait", "auth", "--admin", s.admin).returncode == 0
    assert events(s, "awaiting_approval") == 1 and events(s, "promoted") == 2 and events(s, "done") == 1
    promotions = [(e["who"], e["old"], e["new"]) for e in httpx.get(s.admin + "/admin/history?route=auth").json()
                  if e["action"] == "rollout_promote"]
    assert promotions == [("admin", 50, 100), ("admin", 10, 50)], promotions  # newest first, the token's name
    one_line_error(run("rollout", "pause", "auth", "--full", "--admin", s.admin), "--full goes with promote", code=2)


def test_watch_says_the_proxy_went_away_and_carries_on_when_it_is_back(standin, splitter, tmp_path: Path):
    s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=auth_route(JUDGED_LOW)))
    out, err = tmp_path / "watch.out", tmp_path / "watch.err"
    with open(out, "w") as o, open(err, "w") as e:
        watch = subprocess.Popen(
            [PY, "-m", "splitter", "rollout", "status", "auth", "--watch", "--json", "--admin", s.admin],
            cwd=ROOT,
            stdout=o,
            stderr=e,
        )
    try:
        eventually(lambda: out.read_text().count("\n") >= 1)
        s.proc.stop()
        eventually(lambda: "cannot reach the admin API" in err.read_text(), timeout=5)
        lines = out.read_text().count("\n")
        time.sleep(1.5)
        assert watch.poll() is None and err.read_text().count("\n") == 1, err.read_text()  # said once, still watching
        again = Proc(
            [
                PY,
                "-m",
                "splitter",
                "serve",
                "--config",
                str(s.config),
                "--host",
                "127.0.0.1",
                "--port",
                str(s.port),
                "--admin-port",
                str(s.admin_port),
            ],
            log=tmp_path / "again.log",
        )
        try:
            wait_http(s.admin + "/readyz", proc=again.p)
            eventually(lambda: out.read_text().count("\n") > lines + 1, timeout=5)
            assert "answers again" in err.read_text()
            assert all(json.loads(line)["route"] == "auth" for line in out.read_text().splitlines())
        finally:
            again.stop()
    finally:
        watch.terminate()
        watch.wait(5)


def test_the_rolled_back_alert_fires_on_the_first_rollback_of_a_route(tmp_path: Path):
    """promtool's rule unit test: the series exists at 0 from the start (Rollouts zeroes every
    event), so increase() sees the first rollback; one alert per route, whatever the replicas."""

    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("prometheus is not installed (make test installs the Debian package)")
    series = [
        {
            "series": 'splitter_rollout_events_total{route="auth",event="rolled_back",instance="a"}',
            "values": "0 0 0 1 1 1 1 1 1 1",
        },
        {"series": 'splitter_rollout_events_total{route="auth",event="rolled_back",instance="b"}', "values": "0x9"},
        {
            "series": 'splitter_rollout_events_total{route="auth",event="done",instance="a"}',
            "values": "0 1 1 1 1 1 1 1 1 1",
        },
    ]
    fired = {
        "exp_labels": {"severity": "page", "route": "auth"},
        "exp_annotations": {
            "summary": "rollout of route auth was rolled back to legacy",
            "runbook": "splitter rollout status auth  # reason and evidence; fix new, then rollout resume",
        },
    }
    test = {
        "rule_files": [str(ROOT / "deploy/prometheus/alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "2m", "alertname": "SplitterRolloutRolledBack", "exp_alerts": []},
                    {"eval_time": "5m", "alertname": "SplitterRolloutRolledBack", "exp_alerts": [fired]},
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    r = subprocess.run([promtool, "test", "rules", str(tmp_path / "test.yml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_stalled_alert_fires_once_a_rollout_is_held_past_max_wait_s(tmp_path: Path):
    """promtool's rule unit test for SplitterRolloutStalled: quiet at 0, fires on the first `stalled`."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is not installed: `make test` installs Debian's prometheus")
    stalled = 'splitter_rollout_events_total{route="auth",event="stalled",instance="a"}'
    fired = {
        "exp_labels": {"severity": "ticket", "route": "auth"},
        "exp_annotations": {
            "summary": "rollout of route auth is stalled: held past max_wait_s",
            "runbook": "splitter rollout status auth  # the waiting lines say what each gate needs",
        },
    }
    test = {
        "rule_files": [str(ROOT / "deploy/prometheus/alerts.yml")],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": stalled, "values": "0 0 0 1 1 1 1 1 1 1"}],
                "alert_rule_test": [
                    {"eval_time": "2m", "alertname": "SplitterRolloutStalled", "exp_alerts": []},
                    {"eval_time": "5m", "alertname": "SplitterRolloutStalled", "exp_alerts": [fired]},
                ],
            }
        ],
    }
    (tmp_path / "test.yml").write_text(yaml.safe_dump(test))
    r = subprocess.run([promtool, "test", "rules", str(tmp_path / "test.yml")], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
