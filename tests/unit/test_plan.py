"""plan.py's steps return what they decide and leave the request's record alone: only `plan_into`
writes it, in one place (Go's ProxyRequest: In is never mutated, Out is built)."""

from __future__ import annotations

import copy

import pytest

from splitter.config import parse
from splitter.plan import Planner, begin, checked_target, plan_into
from splitter.refused import Refused
from splitter.runtime import Runtime, Settings

YAML = """environment: production
backends:
  legacy: {url: "http://127.0.0.1:1"}
  new: {url: "http://127.0.0.1:2", check_request_id: %s}
trusted_proxies: [10.0.0.0/8]
user_id: [{header: X-User-ID}]
routes:
  - {name: auth, prefix: /api/auth, percent: 50}
unmatched: legacy
"""


def _scope(*headers: tuple[bytes, bytes], path: str = "/api/auth/./x") -> dict[str, object]:
    return {
        "type": "http", "method": "GET", "path": path, "raw_path": path.encode(), "query_string": b"q=1",
        "headers": [(b"host", b"shop.example"), *headers], "client": ("10.0.0.9", 5), "http_version": "1.1",
        "scheme": "http",
    }  # fmt: skip


def _planner(tmp_path, check_ids: bool = False) -> Planner:
    text = YAML % ("true" if check_ids else "false")
    return Planner(Runtime(Settings(config_path=str(tmp_path / "routes.yaml")), parse(text)))


def test_the_steps_return_values_and_leave_the_record_as_it_was(tmp_path):
    planner = _planner(tmp_path)
    scope = _scope((b"x-user-id", b"alice"), (b"x-request-id", b"client-id-1"))
    call, hd, hosts = begin(scope)
    before = {name: copy.copy(getattr(call, name)) for name in call.__slots__ if hasattr(call, name)}
    target, path = checked_target(scope, call.method, call.path, hd, hosts, planner.rt.snapshot.config)
    choice = planner.choose(scope, call, planner.rt.snapshot)
    assert (target, path) == (b"/api/auth/x?q=1", "/api/auth/x")
    assert choice[1] == "auth" and choice[6] == ("new_auth" if choice[2] == "new" else "old_auth")
    after = {name: getattr(call, name) for name in call.__slots__ if hasattr(call, name)}
    assert after == before, "choose and checked_target wrote nothing into the record"
    call.route, call.route_name, call.role, call.backend = choice[0], choice[1], choice[2], choice[3]
    call.user_bucket, call.reason, call.handler, call.set_cookie = choice[4], choice[5], choice[6], choice[7]
    headers, client, request_id, client_request_id = planner.outbound(scope, call, hd, planner.rt.snapshot.config)
    assert (client, request_id, client_request_id) == ("10.0.0.9", "client-id-1", None)  # xff: none sent
    assert call.request_id == "client-id-1" and call.client_request_id == "client-id-1", "outbound wrote nothing"
    assert dict(headers)[b"x-request-id"] == b"client-id-1" and dict(headers)[b"via"] == b"1.1 splitter"


def test_plan_into_writes_the_steps_values_where_the_record_keeps_them(tmp_path):
    planner = _planner(tmp_path, check_ids=True)
    scope = _scope((b"x-user-id", b"alice"), (b"x-request-id", b"mine"), (b"x-forwarded-for", b"203.0.113.7"))
    call, hd, hosts = begin(scope)
    call.target, call.path = checked_target(scope, call.method, call.path, hd, hosts, planner.rt.snapshot.config)
    plan_into(planner, scope, call, hd, planner.rt.snapshot)
    assert (call.route_name, call.client) == ("auth", "203.0.113.7"), "a trusted proxy names the client"
    out = dict(call.headers)
    assert out[b"x-request-id"] == call.request_id.encode() and out[b"x-splitter-handler"] == call.handler.encode()
    if call.role == "new":  # the backend that checks ids gets one the proxy minted, the client's goes beside it
        assert call.request_id != "mine" and call.client_request_id == "mine"
        assert out[b"x-client-request-id"] == b"mine"
    else:
        assert call.request_id == "mine" and call.client_request_id is None


@pytest.mark.parametrize(
    ("path", "extra", "status"),
    [("/../x", (), 400), ("/x", ((b"transfer-encoding", b"gzip"),), 400), ("/x", ((b"content-length", b"x"),), 400)],
)
def test_what_the_proxy_refuses_itself_is_one_refused_with_status_kind_and_message(tmp_path, path, extra, status):
    planner = _planner(tmp_path)
    scope = _scope(*extra, path=path)
    call, hd, hosts = begin(scope)
    with pytest.raises(Refused) as refused:
        checked_target(scope, call.method, call.path, hd, hosts, planner.rt.snapshot.config)
    assert (refused.value.status, refused.value.kind) == (status, "bad_request") and refused.value.message
