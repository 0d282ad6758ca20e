"""Fast in-process tests of the pure pieces: gate decisions, JSON diff, error mapping, path normalisation."""

import httptools
import pytest

from splitter.config import Gates, GuardSpec
from splitter.guard import trip_reason
from splitter.proxy import normalize_path
from splitter.rollout import gate_checks, gate_failure
from splitter.shadow import ignore_matcher, json_diff
from splitter.upstream import ConnectFailed, Overflow, ProtocolFailed, UpstreamTimeout, map_upstream_error
from splitter.window import Totals

GATES = Gates(max_error_rate=0.01, max_p95_ms=200, max_p95_ratio=1.1, min_requests=100)


def test_gates_wait_for_traffic_then_name_the_first_breach():
    healthy_legacy = Totals(1000, 0, 100.0)
    assert gate_failure(GATES, Totals(99, 50, 900.0), healthy_legacy) is None, "too little traffic: no verdict"
    assert gate_failure(GATES, Totals(100, 0, 105.0), healthy_legacy) is None
    assert gate_failure(GATES, Totals(100, 2, 105.0), healthy_legacy) == "error rate 0.02 > 0.01"
    assert gate_failure(GATES, Totals(100, 0, 250.0), healthy_legacy) == "p95 ms 250 > 200"
    assert gate_failure(GATES, Totals(100, 0, 125.0), healthy_legacy) == "p95 ratio 1.25 > 1.1"
    assert gate_failure(GATES, Totals(100, 0, 125.0), Totals(10, 0, 100.0)) is None, "legacy too thin to compare against"


def test_gate_checks_report_value_threshold_and_verdict():
    checks = {c["gate"]: c for c in gate_checks(GATES, Totals(100, 0, 101.0), Totals(500, 0, 99.0))}
    assert checks["min_requests"] == {"gate": "min_requests", "value": 100, "threshold": 100, "ok": True}
    assert checks["max_p95_ratio"]["ok"] is True and 1.0 < checks["max_p95_ratio"]["value"] < 1.03
    empty = {c["gate"]: c for c in gate_checks(GATES, Totals(0, 0, None), Totals(0, 0, None))}
    assert empty["max_error_rate"]["ok"] is None and empty["max_p95_ms"]["ok"] is None


def test_guard_trip_reasons():
    g = GuardSpec(max_error_rate=0.05, min_requests=50, window_s=60, max_p95_ratio=1.1)
    assert trip_reason(g, Totals(50, 3, 100.0), Totals(50, 0, 100.0)) == "error_rate"
    assert trip_reason(g, Totals(50, 2, 102.0), Totals(50, 0, 99.0)) is None
    assert trip_reason(g, Totals(50, 0, 126.0), Totals(50, 0, 100.0)) == "p95_ratio"
    assert trip_reason(g, Totals(50, 0, 126.0), Totals(5, 0, 100.0)) is None


def test_json_diff_names_each_field_and_respects_ignore_paths():
    a = {"id": 1, "items": [{"n": 1, "t": 5}, {"n": 2, "t": 6}], "meta": {"at": 1}, "gone": True}
    b = {"id": 1, "items": [{"n": 1, "t": 9}, {"n": 3, "t": 7}], "meta": {"at": 2}, "new": None}
    paths = [d["path"] for d in json_diff(a, b)]
    assert paths == ["$.items[0].t", "$.items[1].n", "$.items[1].t", "$.meta.at", "$.gone", "$.new"]
    ignore = ignore_matcher(("$.items[*].t", "$.meta"))
    assert [d["path"] for d in json_diff(a, b, ignore=ignore)] == ["$.items[1].n", "$.gone", "$.new"]
    assert json_diff([1, 2], [1, 2, 3]) == [{"path": "$", "primary": [1, 2], "shadow": [1, 2, 3]}]
    assert json_diff(1, 1.0) != [], "int and float differ in type"


def test_upstream_errors_map_to_one_status_and_kind():
    cases = [
        (ConnectionRefusedError(), 502, "connect"),
        (ConnectionResetError(), 502, "connect"),
        (TimeoutError(), 504, "timeout"),
        (httptools.HttpParserError("bad"), 502, "protocol"),
        (ConnectFailed("x"), 502, "connect"),
        (UpstreamTimeout("x"), 504, "timeout"),
        (ProtocolFailed("x"), 502, "protocol"),
        (Overflow("x"), 503, "overflow"),
        (ValueError("odd"), 502, "protocol"),
    ]
    for exc, status, kind in cases:
        err = map_upstream_error(exc)
        assert (err.status, err.kind) == (status, kind), exc


@pytest.mark.parametrize(
    ("raw", "forward", "match"),
    [
        (b"/api/auth/me", b"/api/auth/me", "/api/auth/me"),
        (b"/api/auth/../upload/x", b"/api/upload/x", "/api/upload/x"),
        (b"/a/./b/.", b"/a/b/", "/a/b/"),
        (b"/a/b/..", b"/a/", "/a/"),
        (b"/a/%2E%2e/b", b"/b", "/b"),
        (b"/a%2Fb/c", b"/a%2Fb/c", "/a%2Fb/c"),
        (b"/caf%C3%A9", b"/caf%C3%A9", "/café"),
        (b"//evil/x", b"//evil/x", "//evil/x"),
        (b"/..", None, None),
        (b"/a/../../b", None, None),
    ],
)
def test_path_normalisation(raw, forward, match):
    got = normalize_path(raw)
    assert got == (None if forward is None else (forward, match))


def test_client_writes_of_one_loop_step_go_out_together_in_order():
    """server._Coalescing: a response head and body written in one step reach the socket as
    one writelines call (one send), in order; close() sends what is pending first; abort drops it."""
    import asyncio

    from splitter.server import _Coalescing

    class Recording:
        def __init__(self) -> None:
            self.calls: list[tuple[str, object]] = []
            self.closing = False

        def write(self, data: bytes) -> None:
            self.calls.append(("write", data))

        def writelines(self, data: list[bytes]) -> None:
            self.calls.append(("writelines", list(data)))

        def close(self) -> None:
            self.calls.append(("close", None))
            self.closing = True

        def abort(self) -> None:
            self.calls.append(("abort", None))
            self.closing = True

        def is_closing(self) -> bool:
            return self.closing

        def get_extra_info(self, name: str) -> str | None:
            return None if name == "socket" else f"info:{name}"  # no socket: _Coalescing writes through the transport

    async def scenario() -> list[list[tuple[str, object]]]:
        loop = asyncio.get_running_loop()

        def wrapped() -> tuple[Recording, _Coalescing]:
            t = Recording()
            return t, _Coalescing(t, loop)  # type: ignore[arg-type]

        t, c = wrapped()
        c.write(b"HTTP/1.1 200 OK\r\n\r\n")
        c.write(b"body")
        assert t.calls == [], "nothing is sent before the step ends"
        await asyncio.sleep(0)
        c.write(b"next")
        await asyncio.sleep(0)
        assert c.get_extra_info("peername") == "info:peername"
        t2, c2 = wrapped()
        c2.write(b"last words")
        c2.close()
        await asyncio.sleep(0)
        c2.write(b"after close")
        await asyncio.sleep(0)
        t3, c3 = wrapped()
        c3.write(b"dropped")
        c3.abort()
        await asyncio.sleep(0)
        return [t.calls, t2.calls, t3.calls]

    one, closed, aborted = asyncio.run(scenario())
    assert one == [("writelines", [b"HTTP/1.1 200 OK\r\n\r\n", b"body"]), ("write", b"next")]
    assert closed == [("write", b"last words"), ("close", None)], "sent before the close, nothing after it"
    assert aborted == [("abort", None)]
