"""Rollout gates against real processes: a held rollout says what it waits for, and past
max_wait_s it is `stalled` once (event, history, notification) and keeps holding; the migration
plan's "no new error types" (no_new_errors)."""

from __future__ import annotations

import json
import shutil
import time

import httpx
import yaml
from conftest import eventually, routes_yaml
from test_history import Receiver
from test_operator_loop import Paced, auth_route, events, rollout_view, wait_for

QUIET_GATES = "{min_requests: 10, max_error_rate: 0.5}"


def test_a_rollout_with_no_traffic_past_max_wait_s_is_stalled_once_and_keeps_holding(standin, splitter):
    hook = Receiver()
    try:
        rollout = f"{{steps: [50, 100], interval_s: 1, max_wait_s: 3, gates: {QUIET_GATES}}}"
        extra = f'notify:\n  - {{url: "{hook.url}", events: [rollout_stalled]}}'
        s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=auth_route(rollout), extra=extra))
        view = eventually(lambda: (v := rollout_view(s))["step"] == 50 and v, timeout=15)
        (waiting,) = view["waiting_for"]
        assert waiting["gate"] == "min_requests" and waiting["needs"] == {"new": 10} and waiting["eta_s"] is None
        assert waiting["says"] == "min_requests: needs 10 requests of new; new has 0 — no traffic to get them at the moment"
        assert events(s, "stalled") == 0
        eventually(lambda: events(s, "stalled") == 1, timeout=10)
        stalled = [e for e in httpx.get(s.admin + "/admin/history?route=auth").json() if e["action"] == "rollout_stalled"]
        assert len(stalled) == 1 and "held at 50% for 3 s (max_wait_s 3): min_requests: needs 10" in stalled[0]["reason"]
        got = eventually(lambda: hook.got, timeout=5)
        assert got[0][1]["action"] == "rollout_stalled" and got[0][1]["route"] == "auth"
        time.sleep(2)  # more ticks past max_wait_s: no second `stalled`
        view = rollout_view(s)
        assert view["status"] == "running" and view["percent"] == 50 and view["stalled"] is True, view
        assert events(s, "stalled") == 1 and len(hook.got) == 1
        r = wait_for(s, "--timeout", "1")
        assert r.returncode == 4 and "waiting: min_requests: needs 10 requests of new" in r.stderr, r
    finally:
        hook.close()


# one step, judged at 0.999 so the passing case fails by chance at most 0.1 % of runs; 600 requests of new
# at 5 % 409s hold ~30 of them (legacy none): p = 0.5^30, far below the first look's share of 0.001
NO_NEW_ERRORS = "{steps: [50], interval_s: 1, gates: {no_new_errors: true, min_requests: 600, confidence: 0.999}}"


def test_a_status_only_new_answers_fails_no_new_errors_naming_it_and_one_both_answer_alike_passes(standin, splitter):
    for legacy_rate, expected in (("0", 3), ("0.05", 0)):
        s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=auth_route(NO_NEW_ERRORS)))
        path = f"/api/auth/sometimes?new_status=409&new_rate=0.05&legacy_status=409&legacy_rate={legacy_rate}"
        with Paced(s.url, rate=120, path=path):
            r = wait_for(s, "--timeout", "60")
        view = rollout_view(s)
        assert r.returncode == expected, (legacy_rate, r.stdout, r.stderr, view)
        if expected == 3:
            assert "no_new_errors: 409: new " in view["reason"] and ", legacy 0 of " in view["reason"], view
            assert "e.g. /api/auth/sometimes" in view["reason"], view
            check = next(g for g in view["previous"]["gates"] if g["gate"] == "no_new_errors")
            assert check["verdict"] == "fail" and check["detail"].startswith("409: new "), check
        else:
            check = next(g for g in view["previous"]["gates"] if g["gate"] == "no_new_errors")
            assert check["verdict"] == "pass" and check["detail"].startswith("409: new "), check


# one step at 10 %: most comparisons have legacy as the primary and new as the shadow copy (a new that
# answers 409 where legacy answers 200 is then a mismatch, not noise); judged at the first look (100 new)
MISMATCH = "{steps: [10], interval_s: 1, gates: {max_mismatch_rate: 0.01, min_requests: 100, confidence: 0.99}}"


def test_shadow_mismatches_above_max_mismatch_rate_roll_back_and_identical_answers_pass(standin, splitter):
    for new_rate, expected in (("0.03", 3), ("0", 0)):
        route = auth_route(MISMATCH) + '\n    shadow: {percent: 100, methods: [GET], ignore: ["$.backend", "$.headers"]}'
        s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=route))
        with Paced(s.url, rate=120, path=f"/api/auth/sometimes?new_status=409&new_rate={new_rate}"):
            r = wait_for(s, "--timeout", "60")
        view = rollout_view(s)
        assert r.returncode == expected, (new_rate, r.stdout, r.stderr, view)
        check = next(g for g in view["previous"]["gates"] if g["gate"] == "max_mismatch_rate")
        assert check["detail"].endswith(" shadow comparisons differed"), check
        if expected == 3:
            assert "max_mismatch_rate" in view["reason"] and check["verdict"] == "fail", view
            assert check["interval"][0] > 0.01, check
        else:
            assert check["verdict"] == "pass" and check["estimate"] == 0 and check["interval"][1] <= 0.01, check


class Answering(Receiver):
    """A before_step hook: answers every POST with `status`, keeping the bodies (Receiver's, with 204)."""

    def __init__(self, status: int) -> None:
        super().__init__()
        got, handler = self.got, self.server.RequestHandlerClass

        def do_post(h) -> None:  # noqa: ANN001 - http.server's handler
            got.append((time.monotonic(), json.loads(h.rfile.read(int(h.headers["Content-Length"])))))
            h.send_response(status)
            h.send_header("Content-Length", "0")
            h.end_headers()

        handler.do_POST = do_post  # type: ignore[attr-defined]


HOOKED = "{{steps: [50, 100], interval_s: 1, before_step: [{{url: '{url}', timeout_s: 2, retries: 2}}]}}"


def test_a_before_step_hook_answering_500_holds_then_rolls_back_and_one_answering_204_lets_it_in(standin, splitter):
    failing, passing = Answering(500), Answering(204)
    try:
        s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=auth_route(HOOKED.format(url=failing.url))))
        held = eventually(lambda: (v := rollout_view(s))["before_step"] and v, timeout=10)
        assert held["status"] == "running" and held["percent"] == 0 and held["step"] is None, held
        assert held["before_step"]["last"] == f"{failing.url} answered 500", held
        r = wait_for(s, "--timeout", "30")
        assert r.returncode == 3, (r.stdout, r.stderr)
        view = rollout_view(s)
        assert view["percent"] == 0 and view["status"] == "rolled_back", view
        assert f"before_step hook before 50%: {failing.url} answered 500 (3 of 3 tries)" in view["reason"], view
        assert [body for _, body in failing.got] == [{"route": "auth", "from": 0, "to": 50}] * 3

        s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=auth_route(HOOKED.format(url=passing.url))))
        r = wait_for(s, "--timeout", "30")
        assert r.returncode == 0, (r.stdout, r.stderr)
        assert [body for _, body in passing.got] == [
            {"route": "auth", "from": 0, "to": 50},
            {"route": "auth", "from": 50, "to": 100},
        ]
    finally:
        failing.close()
        passing.close()


PROM_GATE = (
    "{steps: [50], interval_s: 7, gates: {min_requests: 20, prometheus: "
    "[{name: ok, query: 'sum(rate(standin_ok_total{backend=\"{role}\"}[5s]))', min_ratio: 0.8}]}}"
)


def view_since(s) -> float:
    return float(rollout_view(s)["since"])


def _prometheus(procs, tmp_path, targets: list[str]) -> str:
    """A real Prometheus scraping `targets` (origins) every second; its URL once it answers queries."""
    from conftest import Proc, free_port

    work = tmp_path / "prom"
    work.mkdir(exist_ok=True)
    hosts = [t.split("//")[1] for t in targets]
    jobs = [{"job_name": "standins", "metrics_path": "/standin/metrics", "static_configs": [{"targets": hosts}]}]
    (work / "prometheus.yml").write_text(yaml.safe_dump({"global": {"scrape_interval": "1s"}, "scrape_configs": jobs}))
    port = free_port()
    binary = shutil.which("prometheus")
    assert binary, "prometheus is not installed: `make system-deps` installs Debian's prometheus"
    args = [f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}"]
    procs.append(Proc([binary, *args, f"--web.listen-address=127.0.0.1:{port}"], log=work / "prometheus.log"))
    url = f"http://127.0.0.1:{port}"
    eventually(lambda: httpx.get(url + "/api/v1/query", params={"query": "up"}).json()["data"]["result"], timeout=30)
    return url


def test_a_prometheus_gate_waits_without_prometheus_fails_when_news_counter_drops_and_passes_when_equal(
    procs, tmp_path, standin, splitter
):
    from conftest import free_port

    legacy, new = standin("legacy"), standin("new")
    dead = splitter(routes_yaml(legacy, new, routes=auth_route(PROM_GATE)),
                    args=["--prometheus", f"http://127.0.0.1:{free_port()}"])
    url = _prometheus(procs, tmp_path, [legacy, new])
    with Paced(dead.url, rate=40, path="/api/auth/ok"):
        eventually(lambda: rollout_view(dead)["step"] == 50)
        time.sleep(max(0.0, view_since(dead) + 8 - time.time()))  # past interval_s: held, never passed
        view = rollout_view(dead)
    assert view["status"] == "running" and view["percent"] == 50, view
    gate = next(g for g in view["gates"] if g["gate"] == "prometheus.ok")
    assert gate["ok"] is None and gate["detail"] == "Prometheus did not answer (ConnectError)", gate
    # interval_s 7 > the query's 5 s: a step is judged on its own traffic, not the run before's
    for path, expected in (("/api/auth/ok?new_ok=0.4", 3), ("/api/auth/ok", 0)):
        s = splitter(routes_yaml(legacy, new, routes=auth_route(PROM_GATE)), args=["--prometheus", url])
        with Paced(s.url, rate=40, path=path):
            r = wait_for(s, "--timeout", "60")
        view = rollout_view(s)
        assert r.returncode == expected, (path, r.stdout, r.stderr, view)
        if expected == 3:
            assert "prometheus.ok" in view["reason"] and "ratio" in view["reason"], view
