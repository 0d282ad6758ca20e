"""decide() and the proxy's one exit, driven without sockets (as uvicorn's tests drive its
protocol with a mock transport): the decision from a snapshot, and what `Outcomes.finish` records for
each way a request can end."""

import asyncio
from dataclasses import replace
from typing import Any

import pytest

from splitter import outcomes as outcomes_mod
from splitter.bucketing import bucket
from splitter.config import parse
from splitter.decide import Decision, Facts, decide
from splitter.plan import plan_into
from splitter.proxy import Proxy
from splitter.record import RequestRecord
from splitter.runtime import Runtime, Settings, make_snapshot
from splitter.shadow import Shadow
from splitter.store import State

YAML = """
environment: production
backends:
  legacy: {url: "http://127.0.0.1:1"}
  new: {url: "http://127.0.0.1:2"}
anonymous: {anonymous}
unmatched: new
user_id: [{header: X-User-ID}]
routes:
  - {name: auth, prefix: /api/auth, percent: 50, salt: s2, guard: {max_error_rate: 0.5, min_requests: 10}}
"""
ALICE, BOB = b"alice", b"bob"
assert bucket(ALICE, "s2") < 50 <= bucket(BOB, "s2"), "alice is on new and bob on legacy at 50 %"


def snapshot(anonymous: str = "legacy", **state: Any):
    return make_snapshot(parse(YAML.replace("{anonymous}", anonymous)), State(**state))


def test_the_rules_apply_in_spec_order_and_name_what_decided():
    snap = snapshot()
    auth = snap.config.by_name["auth"]
    assert decide(snap, auth, Facts(None, ALICE)) == Decision("new", "new", bucket(ALICE, "s2"), "percent")
    assert decide(snap, auth, Facts(None, BOB)) == Decision("legacy", "legacy", bucket(BOB, "s2"), "percent")
    assert decide(snap, auth, Facts("legacy", ALICE)) == Decision("legacy", "legacy", None, "force")
    assert decide(snap, auth, Facts(None, None)) == Decision("legacy", "legacy", None, "anonymous")
    assert decide(snap, None, Facts(None, ALICE)) == Decision("new", "new", bucket(ALICE), "unmatched")
    killed = snapshot(kill=True)
    assert decide(killed, auth, Facts(None, ALICE)) == Decision("legacy", "legacy", None, "kill")
    forced = decide(killed, auth, Facts("new", ALICE))
    assert forced is not None and forced.reason == "force", "an authorized force header wins over the kill switch"
    overridden = snapshot(percents={"auth": 0}, sources={"auth": "guard"})
    assert decide(overridden, auth, Facts(None, ALICE)) == Decision("legacy", "legacy", bucket(ALICE, "s2"), "override")


def test_an_anonymous_request_under_anonymous_cookie_asks_for_an_id_unless_forced_or_killed():
    snap = snapshot("cookie")
    auth = snap.config.by_name["auth"]
    assert decide(snap, auth, Facts(None, None)) is None
    assert decide(snap, None, Facts(None, None)) is None
    assert decide(snap, auth, Facts("new", None)).reason == "force"
    assert decide(snapshot("cookie", kill=True), auth, Facts(None, None)).reason == "kill"


def test_a_role_resolves_to_the_backend_the_route_names():
    snap = snapshot()
    auth = snap.config.by_name["auth"]
    assert auth.backends == {"legacy": "legacy", "new": "new"}, "the defaults, resolved at load"
    moved = replace(auth, backends={"legacy": "legacy", "new": "upload_service"})
    d = decide(snap, moved, Facts(None, ALICE))
    assert (d.role, d.backend) == ("new", "upload_service")


class Captured:
    """logs.ACCESS as the outcomes see it: the lines kept instead of written."""

    enabled = True

    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def stamp(self) -> tuple[int, str]:
        return 1, "2026-01-01T00:00:00.000000Z"

    def write(self, fields: dict[str, Any]) -> None:
        self.lines.append(dict(fields))


@pytest.fixture
def proxy(tmp_path, monkeypatch):
    log = Captured()
    monkeypatch.setattr(outcomes_mod, "ACCESS", log)
    rt = Runtime(Settings(config_path=str(tmp_path / "routes.yaml")), parse(YAML.replace("{anonymous}", "legacy")))
    p = Proxy(rt, Shadow(rt))
    p.log = log
    return p


def sample(p: Proxy, name: str, **labels: str) -> float:
    return p.rt.metrics.registry.get_sample_value(name, labels) or 0.0


def routed(p: Proxy, user: bytes = ALICE) -> RequestRecord:
    headers = [(b"x-user-id", user)]
    scope = {"type": "http", "method": "GET", "path": "/api/auth/x", "headers": headers, "client": ("10.0.0.1", 5)}
    call = RequestRecord(scope, "rid", dict(scope["headers"]), None)
    plan_into(p.planner, scope, call, call.inbound, p.rt.snapshot)
    return call


def outcomes(p: Proxy, role: str) -> tuple[int, int]:
    pending = p.rt.windows.get("auth").pending[role].values()
    return sum(c.n for c in pending), sum(c.e for c in pending)


def test_every_exit_records_once_through_finish(proxy):
    ok = routed(proxy)
    assert (ok.role, ok.backend, ok.reason, ok.handler) == ("new", "new", "percent", "new_auth")
    ok.status = 200
    proxy.outcomes.finish(ok)
    assert sample(proxy, "splitter_requests_total", route="auth", backend="new", handler="new_auth", code="200") == 1
    assert outcomes(proxy, "new") == (1, 0)

    failed = routed(proxy, BOB)
    failed.status, failed.error = 502, "connect"
    proxy.outcomes.finish(failed)
    assert sample(proxy, "splitter_errors_total", route="auth", backend="legacy", handler="old_auth", kind="connect")
    assert sample(proxy, "splitter_requests_total", route="auth", backend="legacy", handler="old_auth", code="502") == 1
    assert outcomes(proxy, "legacy") == (1, 1)

    cut = routed(proxy)  # the head was out when the upstream broke: an error, no latency sample
    cut.status, cut.error, cut.head_sent = 200, "protocol", True
    proxy.outcomes.finish(cut)
    assert sample(proxy, "splitter_errors_total", route="auth", backend="new", handler="new_auth", kind="protocol") == 1
    assert sample(proxy, "splitter_requests_total", route="auth", backend="new", handler="new_auth", code="200") == 1
    assert outcomes(proxy, "new") == (2, 1)

    busy = routed(proxy)  # the proxy's own connection limit is not new's failure
    busy.status, busy.error = 503, "overflow"
    proxy.outcomes.finish(busy)
    assert outcomes(proxy, "new") == (2, 1)

    gone = routed(proxy)
    gone.status, gone.error = 499, "client_abort"
    proxy.outcomes.finish(gone)
    stalled = routed(proxy)
    stalled.status, stalled.error, stalled.head_sent = 200, "send_timeout", True
    proxy.outcomes.finish(stalled)
    assert sample(proxy, "splitter_client_aborts_total", route="auth", handler="new_auth") == 1
    assert outcomes(proxy, "new") == (2, 1), "a client's abort or stall says nothing about the backend"

    lines = proxy.log.lines
    assert [(e["status"], e.get("error"), e["role"], e["reason"]) for e in lines] == [
        (200, None, "new", "percent"),
        (502, "connect", "legacy", "percent"),
        (200, "protocol", "new", "percent"),
        (503, "overflow", "new", "percent"),
        (499, "client_abort", "new", "percent"),
        (200, "send_timeout", "new", "percent"),
    ]


def drive(p: Proxy, scope: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(p(scope, receive, send))
    return sent


def test_the_proxys_own_answers_end_in_finish_and_honour_no_access_log(proxy):
    base = {"type": "http", "http_version": "1.1", "query_string": b"", "client": ("10.0.0.1", 5)}
    options = {**base, "method": "OPTIONS", "path": "*", "raw_path": b"*", "headers": [(b"host", b"x")]}
    refused = {**base, "method": "GET", "path": "/a", "raw_path": b"/a", "headers": []}  # HTTP/1.1 without Host
    assert drive(proxy, options)[0]["status"] == 200
    assert drive(proxy, refused)[0]["status"] == 400
    assert sample(proxy, "splitter_rejected_total", reason="bad_request") == 1
    assert [(e["status"], e["path"]) for e in proxy.log.lines] == [(200, "*"), (400, "/a")]
    proxy.outcomes.access_log = False
    drive(proxy, options)
    drive(proxy, refused)
    assert len(proxy.log.lines) == 2, "--no-access-log: no per-request line, OPTIONS * included"
    assert sample(proxy, "splitter_rejected_total", reason="bad_request") == 2


COHORTS = """
backends:
  legacy: {url: "http://127.0.0.1:1"}
  new: {url: "http://127.0.0.1:2"}
  upload_service: {url: "http://127.0.0.1:3"}
anonymous: cookie
user_id: [{header: X-User-ID}, {jwt_sub: Authorization}]
routes:
  - name: upload
    prefix: /api/upload
    percent: 100
    new: upload_service
    cohorts:
      - {name: staff, header: X-Staff, equals: "1", to: new}
      - {name: tenants, header: X-Tenant, in: [acme, initech], to: new}
      - {name: canary_ua, header: User-Agent, prefix: "canary/", to: new}
      - {name: pinned, users: [carol], to: legacy}
      - {name: corp, jwt_claim: email, suffix: "@example.com", to: legacy}
      - {name: admins, jwt_claim: groups, in: [admin], to: legacy}
      - {name: enterprise, cookie: plan, in: [enterprise], to: legacy}
      - {name: beta, users: [], to: new}
"""


def jwt(**claims: Any) -> bytes:
    import base64
    import json

    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=")
    return b"Bearer e30." + body + b".sig"


def cohort_of(snap: Any, uid: bytes | None, **headers: bytes) -> str | None:
    route = snap.config.by_name["upload"]
    hd = {k.replace("_", "-").lower().encode(): v for k, v in headers.items()}
    d = decide(snap, route, Facts(None, uid, hd))
    return None if d is None else f"{d.reason} {d.role} {d.backend}"


def test_cohorts_decide_before_the_percent_in_order_and_name_themselves():
    snap = make_snapshot(parse(COHORTS), State())
    assert cohort_of(snap, b"zed") == "percent new upload_service"
    assert cohort_of(snap, b"carol") == "cohort:pinned legacy legacy", "pinned to legacy at 100 %"
    assert cohort_of(snap, b"carol", x_staff=b"1") == "cohort:staff new upload_service", "the first match decides"
    assert cohort_of(snap, b"zed", x_staff=b"0") == "percent new upload_service"
    assert cohort_of(snap, b"zed", x_staff=b"1 \t") == "cohort:staff new upload_service", "whitespace is no part of it"
    assert cohort_of(snap, b"zed", x_tenant=b"initech") == "cohort:tenants new upload_service"
    assert cohort_of(snap, b"zed", x_tenant=b"initech2") == "percent new upload_service"
    assert cohort_of(snap, b"zed", user_agent=b"canary/1.0") == "cohort:canary_ua new upload_service"
    assert cohort_of(snap, b"zed", user_agent=b"curl/8 canary/") == "percent new upload_service"
    assert cohort_of(snap, b"zed", authorization=jwt(sub="zed", email="z@example.com")) == "cohort:corp legacy legacy"
    assert cohort_of(snap, b"zed", authorization=jwt(email="z@example.com.evil")) == "percent new upload_service"
    assert cohort_of(snap, b"zed", authorization=jwt(groups=["dev", "admin"])) == "cohort:admins legacy legacy"
    assert cohort_of(snap, b"zed", authorization=b"Bearer not-a-jwt") == "percent new upload_service"
    assert cohort_of(snap, b"zed", cookie=b"a=1; plan=enterprise") == "cohort:enterprise legacy legacy"
    assert cohort_of(snap, b"zed", cookie=b"plan=free") == "percent new upload_service"


def test_runtime_members_join_a_users_cohort_and_force_and_kill_come_first():
    snap = make_snapshot(parse(COHORTS), State())
    assert cohort_of(snap, b"dave") == "percent new upload_service"
    joined = replace(snap, members={("upload", "beta"): frozenset({b"dave"}), ("other", "pinned"): frozenset({b"zed"})})
    assert cohort_of(joined, b"dave") == "cohort:beta new upload_service"
    assert cohort_of(joined, b"zed") == "percent new upload_service", "members are per route and cohort"
    route = snap.config.by_name["upload"]
    assert decide(snap, route, Facts("new", b"carol")) == Decision("new", "upload_service", None, "force")
    killed = make_snapshot(parse(COHORTS), State(kill=True))
    assert decide(killed, route, Facts(None, b"zed", {b"x-staff": b"1"})) == Decision("legacy", "legacy", None, "kill")


def test_an_anonymous_request_matches_header_cohorts_but_never_users_cohorts():
    snap = make_snapshot(parse(COHORTS), State())
    assert cohort_of(snap, None, x_staff=b"1") == "cohort:staff new upload_service", "no id is minted for it"
    assert cohort_of(snap, None) is None, "anonymous: cookie: the caller mints an id and decides again"
    route = snap.config.by_name["upload"]
    assert decide(snap, route, Facts(None, None)) is None


def test_a_trusted_cohort_matches_only_when_the_peer_is_trusted_and_the_next_cohort_is_tried_otherwise():
    text = COHORTS.replace('{name: staff, header: X-Staff, equals: "1", to: new}',
                           '{name: staff, header: X-Staff, equals: "1", to: new, trusted: true}')
    assert text != COHORTS
    snap = make_snapshot(parse(text + "trusted_proxies: [10.0.0.0/8]\n"), State())
    route = snap.config.by_name["upload"]
    assert route.trusted_cohorts, "the proxy looks the peer up only for a route with a trusted cohort"
    staff = {b"x-staff": b"1", b"cookie": b"plan=enterprise"}
    assert decide(snap, route, Facts(None, b"zed", staff, True)) == Decision("new", "upload_service", None, "cohort:staff")
    assert decide(snap, route, Facts(None, b"zed", staff)) == Decision("legacy", "legacy", None, "cohort:enterprise"), (
        "an untrusted peer skips the cohort: the next one is tried"
    )
    assert cohort_of(snap, b"zed", x_staff=b"1") == "percent new upload_service"
    assert not make_snapshot(parse(COHORTS), State()).config.by_name["upload"].trusted_cohorts


def test_a_cohort_request_is_counted_apart_and_never_enters_the_window(tmp_path, monkeypatch):
    log = Captured()
    monkeypatch.setattr(outcomes_mod, "ACCESS", log)
    staff = "min_requests: 10}, cohorts: [{name: staff, header: X-Staff, equals: '1', to: new}]}"
    text = YAML.replace("{anonymous}", "legacy").replace("min_requests: 10}}", staff)
    rt = Runtime(Settings(config_path=str(tmp_path / "routes.yaml")), parse(text))
    p = Proxy(rt, Shadow(rt))
    headers = [(b"x-user-id", BOB), (b"x-staff", b"1")]  # bob is on legacy by his bucket
    scope = {"type": "http", "method": "GET", "path": "/api/auth/x", "headers": headers, "client": ("10.0.0.1", 5)}
    call = RequestRecord(scope, "rid", dict(headers), None)
    plan_into(p.planner, scope, call, call.inbound, rt.snapshot)
    assert (call.role, call.reason, call.handler, call.user_bucket) == ("new", "cohort:staff", "new_auth", None)
    call.status, call.error = 502, "connect"
    p.outcomes.finish(call)
    assert sample(p, "splitter_cohort_requests_total", route="auth", cohort="staff", backend="new") == 1
    assert sample(p, "splitter_errors_total", route="auth", backend="new", handler="new_auth", kind="connect") == 1
    assert sample(p, "splitter_requests_total", route="auth", backend="new", handler="new_auth", code="502") == 1
    assert outcomes(p, "new") == (0, 0) and outcomes(p, "legacy") == (0, 0), "not a random sample: not judged"
    assert (log.lines[-1]["reason"], log.lines[-1]["role"], log.lines[-1]["backend"]) == ("cohort:staff", "new", "new")
