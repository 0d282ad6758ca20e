"""`splitter report` never over-claims: a criterion is PASS only when its 95 % interval is within it, else
"not enough evidence" (exit 4) or FAIL; a cohort's requests are left out as the windows leave them out; a
route's rollout gates appear with their numbers."""

from __future__ import annotations

import math
import time

import httpx
from conftest import eventually, routes_yaml
from test_cli import TOKEN, run
from test_operator_loop import strict_loads

from splitter import report
from splitter.bucketing import bucket
from splitter.metrics import Metrics

ROUTES = """  - name: auth
    prefix: /api/auth
    percent: 50
    rollout: {steps: [50, 100], interval_s: 300, gates: {min_requests: 5, max_error_rate: 0.5, no_new_errors: true}}
    cohorts:
      - {name: staff, header: X-Staff, equals: "1", to: new}"""


def test_few_requests_are_not_enough_evidence_and_staff_traffic_is_left_out(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=ROUTES), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    view = eventually(lambda: (v := httpx.get(s.admin + "/admin/rollouts").json()[0])["step"] == 50 and v, timeout=15)
    # a step's evidence is its whole seconds after it began (window.slot_range): traffic from the next second on
    time.sleep(max(0.0, math.floor(view["since"]) + 1.05 - time.time()))
    users = [f"u{i}" for i in range(40)]
    with httpx.Client(base_url=s.url, timeout=10) as c:
        for u in users:
            assert c.get("/api/auth/me", headers={"X-User-ID": u}).status_code == 200
        for i in range(30):  # staff: forced to new, and all of them fail there; not a sample of new
            staff = {"X-User-ID": f"staff{i}", "X-Staff": "1"}
            assert c.get("/api/auth/status?code=500", headers=staff).status_code == 500
    n_new = sum(bucket(u) < 50 for u in users)

    def judged() -> bool:  # the windows are flushed once a second: the rollout has judged the traffic
        return httpx.get(s.admin + "/admin/rollouts").json()[0]["gates"][0]["value"] == n_new
    try:
        eventually(judged, timeout=5)
    except AssertionError:
        import json
        print(json.dumps(httpx.get(s.admin + "/admin/rollouts").json(), indent=1)[:6000])
        print(json.dumps(httpx.get(s.admin + "/admin/routes").json(), indent=1)[:6000])
        raise
    r = run("report", "--admin", s.admin, "--route", "auth", "--json")
    assert r.returncode == 4, r  # none failed, one undecided
    rep = strict_loads(r.stdout)[0]  # type: ignore[index]
    assert rep["new"]["requests"] == n_new and rep["new"]["errors"] == 0, rep["new"]
    assert rep["old"]["requests"] == 40 - n_new and rep["new"]["cohort_requests_left_out"] == 30
    assert rep["verdict"] == "not_enough_evidence"
    low, high = rep["new"]["error_rate_ci"]
    assert low == 0 and high > report.MAX_ERROR_RATE  # 0 errors in ~20: the interval reaches far past 0.1 %
    assert any("error rate 0.000%, but its 95 % interval [0.000% .. " in x for x in rep["reasons"]), rep["reasons"]
    gates = {g["gate"]: g for g in rep["rollout_gates"]["gates"]}
    assert rep["rollout_gates"]["step"] == 50 and {"min_requests", "max_error_rate", "no_new_errors"} <= set(gates)
    assert gates["min_requests"]["value"] == n_new  # the rollout's window leaves staff out too

    table = run("report", "--admin", s.admin, "--route", "auth")
    assert table.returncode == 4 and "NOT ENOUGH EVIDENCE" in table.stdout, table
    assert "left out: cohort requests, 30 to new and 0 to legacy" in table.stdout, table.stdout
    assert "rollout gates (running, at 50%), as last judged" in table.stdout and "no_new_errors" in table.stdout


def metrics_text(per_side: int, new_errors: int, cohort: int = 0) -> str:
    """A real registry's /metrics page: per_side requests on each side at 4 ms and 4.2 ms (one bucket),
    new_errors of new's failing, and `cohort` staff requests to new that all fail in 3 s."""
    m = Metrics()
    for i in range(per_side):
        m.observe("auth", "legacy", "old_auth", 200, 0.0042)
        failed = i < new_errors
        m.observe("auth", "new", "new_auth", 500 if failed else 200, 0.004)
        if failed:
            m.error("auth", "new", "new_auth", "status_5xx")
    for _ in range(cohort):
        m.observe("auth", "new", "new_auth", 500, 3.0)
        m.error("auth", "new", "new_auth", "status_5xx")
        m.cohort_request("auth", "staff", "new", True, 3.0)
    return m.render().decode()


def test_a_criterion_passes_only_when_its_interval_is_within_it_both_ways():
    def verdict(text: str) -> report.RouteReport:
        return report.build(report.from_metrics_text(text))[0]

    few = verdict(metrics_text(60, 0))  # the same rates as below, 60 requests a side: the intervals reach past
    assert few.verdict == "not_enough_evidence", few.reasons
    many = verdict(metrics_text(6000, 0))  # 0 errors in 6,000: upper bound 0.061 % < 0.1 %; p95s in one bucket
    assert many.verdict == "pass" and many.reasons == [], many.reasons
    assert many.p95_ratio is not None and many.p95_ratio[2] is not None and many.p95_ratio[2] <= 1.10
    erring = verdict(metrics_text(6000, 30))  # 0.5 %: its whole interval is above 0.1 %
    assert erring.verdict == "fail" and "error rate" in erring.reasons[0], erring.reasons
    staffed = verdict(metrics_text(6000, 0, cohort=200))  # 200 failing 3 s staff requests, left out: still a pass
    assert staffed.verdict == "pass" and staffed.new.requests == 6000 and staffed.new.errors == 0, staffed.reasons
    assert staffed.new.cohort_requests == 200
    counted = report.judge("auth", *(_with_cohort(metrics_text(6000, 0, cohort=200))))
    assert counted.verdict == "fail"  # the same numbers with the staff counted in: what the report used to say
    assert {0: "pass", 3: "fail", 4: "not_enough_evidence"}  # the exit codes: README "splitter report"


def _with_cohort(text: str) -> tuple[report.Side, report.Side]:
    """The sides as they were read before cohorts were left out (the cohort series ignored)."""
    kept = "\n".join(line for line in text.splitlines() if "splitter_cohort_" not in line)
    sides = report.from_metrics_text(kept)["auth"]
    return sides["legacy"], sides["new"]
