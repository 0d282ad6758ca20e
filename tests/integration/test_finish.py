"""The finish line against real processes: a rollout bakes at its last step (still judged: a failure rolls
back), then is done; a done route whose legacy serves nothing for retire_after_s is ready to retire (one
notification; a request to legacy by a `to: legacy` cohort resets it; a restart neither forgets nor repeats
it); `splitter retire` pins it to new in routes.yaml with every comment kept; a rollout added to a route
already past its first steps starts at the running percent."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time

import httpx
from conftest import ROOT, eventually, routes_yaml
from test_history import Receiver
from test_operator_loop import Paced, auth_route, events, rollout_view

TOKEN = "finish-token"
GATES = "{min_requests: 10, max_error_rate: 0.5}"
BAKED = f"{{steps: [50, 100], interval_s: 1, bake_s: 10, gates: {GATES}}}"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SPLITTER_ADMIN_TOKEN": TOKEN}
    return subprocess.run([sys.executable, "-m", "splitter", *args], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=30)


def history(s, action: str) -> list[dict]:
    return [e for e in httpx.get(s.admin + "/admin/history?route=auth").json() if e["action"] == action]


def auth(s) -> dict:
    return next(r for r in httpx.get(s.admin + "/admin/routes").json() if r["name"] == "auth")


def test_the_last_step_bakes_for_bake_s_then_is_done(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=auth_route(BAKED)))
    with Paced(s.url, rate=40):
        baking = eventually(lambda: (v := rollout_view(s))["status"] == "baking" and v, timeout=30)
        assert baking["percent"] == 100 and baking["bake_s"] == 10 and 0 < baking["bake_ends_in_s"] <= 10, baking
        assert events(s, "baking") == 1 and events(s, "done") == 0
        assert "baking 10 s at 100%" in history(s, "rollout_baking")[0]["reason"]
        done = eventually(lambda: (v := rollout_view(s))["status"] == "done" and v, timeout=40)
    bake = done["previous"]  # the bake's window, as judged: from its start to the moment it was done
    assert bake["until"] - bake["since"] >= 10 and bake["percent"] == 100, bake
    assert done["percent"] == 100 and done["reason"] == "all steps passed and baked 10 s", done
    assert events(s, "baking") == 1 and events(s, "done") == 1 and len(history(s, "rollout_done")) == 1
    # the done notification carries the summary line (progress/words.py), in the plan's words, with both sides compared
    said = history(s, "rollout_done")[0]["reason"]
    assert re.search(r"^all steps passed and baked 10 s\. auth: migrated, 100 % on new since \d{4}-\d\d-\d\d; "
                     r"p95 .*, errors \d+\.\d\d % vs \d+\.\d\d %$", said), said


def test_a_failure_while_baking_rolls_back_as_in_any_step(standin, splitter):
    s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=auth_route(BAKED)))
    with Paced(s.url, rate=40):
        eventually(lambda: rollout_view(s)["status"] == "baking", timeout=30)
    with Paced(s.url, rate=40, path="/api/auth/sometimes?new_status=500&new_rate=1"):
        view = eventually(lambda: (v := rollout_view(s))["status"] == "rolled_back" and v, timeout=20)
    assert view["percent"] == 0 and view["reason"].startswith("gate failed at 100%: error rate"), view
    assert events(s, "rolled_back") == 1 and events(s, "done") == 0 and len(history(s, "rollout_rollback")) == 1


READY = """  - name: auth
    prefix: /api/auth
    percent: 0
    cohorts:
      - {{name: old_clients, header: X-Old-Client, equals: "1", to: legacy}}
    rollout: {{steps: [100], interval_s: 1, retire_after_s: {after}}}"""


def test_a_done_route_legacy_never_serves_is_ready_once_and_a_legacy_cohort_request_resets_it(standin, splitter):
    hook = Receiver()
    try:
        extra = f'notify:\n  - {{url: "{hook.url}", events: [ready_to_retire]}}'
        s = splitter(routes_yaml(standin("legacy"), standin("new"), routes=READY.format(after=5), extra=extra))
        done = eventually(lambda: (v := rollout_view(s))["status"] == "done" and v, timeout=20)
        assert not auth(s)["ready_to_retire"] and done["ready_in_s"] > 0, done
        eventually(lambda: auth(s)["ready_to_retire"], timeout=10)
        told = httpx.get(s.admin + "/admin/progress?route=auth").json()["routes"][0]
        assert told["state"] == "ready to retire", told  # splitter progress says it too
        (ready,) = eventually(lambda: history(s, "ready_to_retire"), timeout=2)  # the driver's next tick says it
        assert 5 <= ready["at"] - done["since"] <= 6, (ready, done)  # within 6 s of the rollout finishing
        got = eventually(lambda: hook.got, timeout=5)
        assert got[0][1]["route"] == "auth" and "legacy has served this route no request" in got[0][1]["text"]
        assert "auth: migrated, ready to retire, 100 % on new since" in got[0][1]["text"], got[0][1]["text"]
        status = cli("status", "--admin", s.admin)
        assert "auth: ready to retire, legacy has served this route no request" in status.stdout, status
        assert events(s, "ready_to_retire") == 1

        sent = time.time()
        r = httpx.get(s.url + "/api/auth/me", headers={"X-User-ID": "u1", "X-Old-Client": "1"})
        assert r.headers["x-splitter-handler"] == "old_auth"
        view = eventually(lambda: (v := auth(s))["legacy_last_request"] and v, timeout=5)
        assert not view["ready_to_retire"] and int(sent) <= view["legacy_last_request"] <= time.time(), view
        assert re.fullmatch(r"legacy last served this route \d s ago", view["retire_says"]), view
        gauge = s.metric("splitter_route_legacy_last_request_timestamp_seconds", route="auth")
        assert gauge == view["legacy_last_request"], (gauge, view)
        assert len(hook.got) == 1 and len(history(s, "ready_to_retire")) == 1, "not ready again yet"
    finally:
        hook.close()


def test_a_restart_neither_forgets_legacy_nor_repeats_the_notification(standin, splitter):
    hook = Receiver()
    try:
        extra = f'notify:\n  - {{url: "{hook.url}", events: [ready_to_retire]}}'
        text = routes_yaml(standin("legacy"), standin("new"), routes=READY.format(after=3), extra=extra)
        s = splitter(text)
        eventually(lambda: rollout_view(s)["status"] == "done", timeout=20)
        httpx.get(s.url + "/api/auth/me", headers={"X-User-ID": "u1", "X-Old-Client": "1"})
        last = eventually(lambda: auth(s)["legacy_last_request"], timeout=5)
        eventually(lambda: auth(s)["ready_to_retire"], timeout=10)
        said = eventually(lambda: len(hook.got), timeout=5)
        s.proc.stop()
        again = splitter(text, config=s.config)
        view = eventually(lambda: (v := auth(again))["legacy_last_request"] and v, timeout=5)
        assert view["legacy_last_request"] == last and view["ready_to_retire"], view
        assert rollout_view(again)["status"] == "done" and rollout_view(again)["percent"] == 100, "finished stays so"
        time.sleep(2)  # ten driver ticks after the restart (one each 0.2 s): none says it again
        assert len(hook.got) == said and len(history(again, "ready_to_retire")) == said
    finally:
        hook.close()


COMMENTED = """# splitter routes for the shop
environment: production   # SPLITTER_ENV overrides this
backends:
  legacy: {{url: "{legacy}", read_timeout: 2}}   # the monolith
  new:    {{url: "{new}", read_timeout: 2}}      # the new service
user_id:
  - header: X-User-ID
anonymous: legacy
routes:
  # auth moves first (week 2 of the plan)
  - name: auth
    prefix: /api/auth            # login, tokens
    percent: 0                   # the rollout drives it
    guard: {{max_error_rate: 0.5, min_requests: 1000, window_s: 60}}
    rollout: {{steps: [100], interval_s: 1, retire_after_s: 1, gates: {{min_requests: 5}}}}
    # auth's shadow copies stop with the rollout
  # upload stays on legacy for now
  - name: upload
    prefix: /api/upload
    percent: 0                   # week 4
notify:
  - {{url: "{hook}", events: [retire]}}
unmatched: legacy   # the rest of the monolith
"""


def test_retire_prints_a_diff_then_pins_the_route_to_new_keeping_every_comment(standin, splitter):
    hook = Receiver()
    try:
        text = COMMENTED.format(legacy=standin("legacy"), new=standin("new"), hook=hook.url)
        s = splitter(text, env={"SPLITTER_ADMIN_TOKEN": TOKEN})
        path = str(s.config)
        eventually(lambda: rollout_view(s)["step"] == 100, timeout=15)  # held there until 5 requests of new
        early = cli("retire", "auth", "--file", path, "--admin", s.admin)
        assert early.returncode == 1 and early.stdout == "", early
        assert early.stderr.count("\n") == 1 and "not ready to retire: its rollout is running, not done" in early.stderr
        with Paced(s.url, rate=20):  # the step's 5 requests of new (within its window of interval_s + 1)
            eventually(lambda: rollout_view(s)["status"] == "done", timeout=20)
        eventually(lambda: auth(s)["ready_to_retire"], timeout=10)

        dry = cli("retire", "auth", "--dry-run", "--file", path, "--admin", s.admin)
        assert dry.returncode == 0, dry
        assert "-    percent: 0                   # the rollout drives it" in dry.stdout
        assert "+    percent: 100                 # the rollout drives it" in dry.stdout
        assert "-    rollout: {steps: [100], interval_s: 1, retire_after_s: 1, gates: {min_requests: 5}}" in dry.stdout
        assert s.config.read_text() == text and history(s, "retire") == [], "a dry run changes nothing"

        r = cli("retire", "auth", "--reason", "legacy auth unused for 3 days", "--file", path, "--admin", s.admin)
        assert r.returncode == 0 and "retired auth" in r.stdout, r
        after = s.config.read_text()
        comments = [line[line.index("#"):] for line in text.splitlines() if "#" in line]
        assert [c for c in comments if c not in after] == [], "every comment kept"
        assert after == text.replace("percent: 0                   # the rollout", "percent: 100                 # the rollout").replace(
            "    guard: {max_error_rate: 0.5, min_requests: 1000, window_s: 60}\n", "").replace(
            "    rollout: {steps: [100], interval_s: 1, retire_after_s: 1, gates: {min_requests: 5}}\n", ""), after
        check = cli("check", path)
        assert check.returncode == 0 and "auth /api/auth 100%" in check.stdout, check
        applied = eventually(lambda: (v := auth(s))["file_percent"] == 100 and v, timeout=10)
        assert applied["percent"] == 100 and httpx.get(s.admin + "/admin/rollouts").json() == [], applied
        (event,) = history(s, "retire")
        assert event["reason"] == "legacy auth unused for 3 days" and event["new"] == 100 and event["source"] == "cli"
        got = eventually(lambda: hook.got, timeout=5)
        assert got[0][1]["action"] == "retire" and "retired auth: pinned to new" in got[0][1]["text"]
        assert s.metric("splitter_rollout_events_total", route="auth", event="retired") == 1
        # the migration's story outlives the rollout's section: retired, its steps' numbers still there
        (told,) = httpx.get(s.admin + "/admin/progress?route=auth").json()["routes"]
        assert told["state"] == "retired" and told["steps"] and told["summary"].startswith("auth: migrated and retired"), told
    finally:
        hook.close()


def test_retire_force_says_what_it_overrides_and_unknown_routes_are_one_line(standin, splitter):
    text = routes_yaml(standin("legacy"), standin("new"), routes=auth_route("{steps: [50], interval_s: 60}"))
    s = splitter(text, env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    path = str(s.config)
    eventually(lambda: rollout_view(s)["step"] == 50, timeout=15)
    unknown = cli("retire", "nope", "--file", path, "--admin", s.admin)
    assert unknown.returncode == 1 and unknown.stderr.count("\n") == 1 and "unknown route 'nope' (routes: auth)" in unknown.stderr
    forced = cli("retire", "auth", "--force", "--file", path, "--admin", s.admin)
    assert forced.returncode == 0 and "(forced: its rollout is running, not done)" in forced.stdout, forced
    assert history(s, "retire")[0]["reason"] == "forced: its rollout is running, not done"
    assert re.search(r"name: auth\n    prefix: /api/auth\n    percent: 100\n", s.config.read_text())


def test_a_rollout_added_by_reload_to_a_route_at_50_starts_at_50_and_restart_starts_at_the_first_step(
    standin, splitter
):
    legacy, new = standin("legacy"), standin("new")
    plain = "  - name: auth\n    prefix: /api/auth\n    percent: 50"
    s = splitter(routes_yaml(legacy, new, routes=plain), env={"SPLITTER_ADMIN_TOKEN": TOKEN})
    s.config.write_text(routes_yaml(legacy, new, routes=auth_route("{steps: [10, 25, 50, 100], interval_s: 60}", 50)))
    s.proc.signal(1)  # SIGHUP
    view = eventually(lambda: (v := rollout_view(s))["step"] is not None and v, timeout=15)
    assert view["step"] == 50 and view["percent"] == 50 and view["status"] == "running", view
    (step,) = history(s, "rollout_step")
    assert step["old"] == 50 and step["new"] == 50, "no user moved back to legacy"
    r = httpx.post(s.admin + "/admin/rollouts/auth/restart", headers={"Authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json()["step"] == 10 and auth(s)["percent"] == 10, r.text


def test_with_redis_legacy_s_last_request_through_one_replica_is_every_replica_s_and_survives_a_restart(
    standin, splitter, redis_server
):
    route = "  - name: auth\n    prefix: /api/auth\n    percent: 0"
    text = routes_yaml(standin("legacy"), standin("new"), routes=route, extra=f'redis: {{url: "{redis_server.url}"}}')
    a = splitter(text)
    b = splitter(text)
    gauge = "splitter_route_legacy_last_request_timestamp_seconds"
    assert b.metric(gauge, route="auth") is None
    sent = int(time.time())
    assert httpx.get(a.url + "/api/auth/x", headers={"X-User-ID": "u1"}).headers["x-splitter-handler"] == "old_auth"
    seen = eventually(lambda: b.metric(gauge, route="auth"), timeout=5)
    assert sent <= seen <= time.time()
    a.proc.stop()
    again = splitter(text)
    assert eventually(lambda: again.metric(gauge, route="auth"), timeout=5) == seen, "kept: not never, not now"
