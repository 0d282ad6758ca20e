"""Fast in-process tests of the pure pieces: gate decisions, JSON diff, error mapping, path normalisation,
an upstream exchange's phases."""

import asyncio

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
    assert gate_failure(GATES, Totals(100, 0, 125.0), healthy_legacy) == (
        "p95 ratio 1.25 > 1.1, 25 ms slower than legacy (tolerance 5 ms)"
    )
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
    """listen.transport.Coalescing: a response head and body written in one step reach the socket as
    one writelines call (one send), in order; close() sends what is pending first; abort drops it."""
    import asyncio

    from splitter.listen.transport import Coalescing

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
            return None if name == "socket" else f"info:{name}"  # no socket: nothing in a kernel send queue

    async def scenario() -> list[list[tuple[str, object]]]:
        loop = asyncio.get_running_loop()

        def wrapped() -> tuple[Recording, Coalescing]:
            t = Recording()
            return t, Coalescing(t, loop)  # type: ignore[arg-type]

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


def test_an_exchange_moves_head_body_done_and_a_stray_byte_after_its_length_means_must_close():
    """The parser adapter drives the exchange with no socket: its phase is named at each step, and
    a move the table does not allow is a bug that raises rather than a state nobody expected."""
    from splitter.upstream import Exchange, Phase

    async def scenario() -> list[object]:
        ex = Exchange("GET")
        seen: list[object] = [ex.phase]
        ex.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: x-hop\r\n\r\nhel")
        seen += [ex.phase, ex.headers, ex.connection_header]
        ex.feed(b"lo")
        seen += [ex.phase, await ex.read(), await ex.read(), await ex.read()]
        ex.feed(b"H")  # a byte nobody asked for
        seen.append(ex.phase)
        with pytest.raises(RuntimeError, match="MUST_CLOSE to BODY"):
            ex.move(Phase.BODY)
        head = Exchange("HEAD")
        head.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n")
        seen += [head.phase, head.keep_alive]
        return seen

    seen = asyncio.run(scenario())
    assert seen == [
        Phase.HEAD,
        Phase.BODY, [(b"content-length", b"5"), (b"connection", b"x-hop")], b"x-hop",
        Phase.DONE, b"hel", b"lo", b"",
        Phase.MUST_CLOSE,
        Phase.DONE, True,
    ]  # fmt: skip


def test_an_exchange_that_failed_stays_failed_and_raises_its_first_error():
    from splitter.upstream import Exchange, Phase

    async def scenario() -> tuple[Phase, BaseException | None, str]:
        ex = Exchange("GET")
        ex.feed(b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\n\r\nabc")
        ex.connection_lost(None)  # the close that follows keeps the first error
        try:
            await ex.read()
        except ProtocolFailed as exc:
            return ex.phase, ex.error, exc.detail
        return ex.phase, ex.error, "no error"

    phase, error, detail = asyncio.run(scenario())
    assert phase is Phase.FAILED and isinstance(error, ProtocolFailed)
    assert detail == "upstream sent a body with 204 No Content"


def _cycle(cls, method="GET", keep_alive=True):
    """A request/response cycle of the given class writing into a list (uvicorn's or the proxy's)."""
    from uvicorn.protocols.http.flow_control import FlowControl

    class Transport:
        def __init__(self):
            self.out = []

        def write(self, data):
            self.out.append(data)

        def is_closing(self):
            return False

        def pause_reading(self):
            pass

        def resume_reading(self):
            pass

        def close(self):
            pass

    t = Transport()
    kw = dict(scope={"method": method}, transport=t, flow=FlowControl(t), logger=None, access_logger=None)
    kw.update(access_log=False, default_headers=[], message_event=asyncio.Event(), expect_100_continue=False)
    return cls(**kw, keep_alive=keep_alive, on_response=lambda: None), t


HEADS = [
    (200, [(b"content-type", b"text/plain"), (b"content-length", b"2"), (b"X-Request-ID", b"r1")]),
    (200, [(b"content-length", b"2"), (b"connection", b"keep-alive, Close")]),
    (200, [(b"transfer-encoding", b"Chunked"), (b"vary", b"a\tb")]),
    (200, [(b"content-type", b"text/plain")]),  # no length: uvicorn adds chunked
    (204, [(b"x-a", b"")]),
    (304, [(b"etag", b'"x"'), (b"content-length", b"10")]),
    (500, [(b"content-length", b"0"), (b"content-length", b"5")]),  # the first one counts, as in uvicorn
    (200, [(b"set-cookie", b"a=1; Path=/"), (b"set-cookie", b"b=\xe9")]),  # obs-text is allowed
]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("keep_alive", [True, False])
@pytest.mark.parametrize(("status", "headers"), HEADS)
def test_the_servers_response_head_is_uvicorns_byte_for_byte(status, headers, keep_alive, method):
    """listen.request.response_head builds the head in one pass (one check for all fields): the bytes, and
    the framing the body messages rely on (length or chunked, keep-alive), are what uvicorn's own cycle makes."""
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    from splitter.listen.request import response_head

    message = {"type": "http.response.start", "status": status, "headers": headers}
    theirs, t_theirs = _cycle(RequestResponseCycle, method, keep_alive)
    asyncio.run(_send(theirs, message))
    head, length, alive = response_head(status, headers, method == "HEAD", keep_alive)
    assert [head] == t_theirs.out
    framing = None if theirs.chunked_encoding else theirs.expected_content_length
    assert (length, alive) == (framing, theirs.keep_alive)


async def _send(cycle, message):
    await cycle.send(message)


@pytest.mark.parametrize(("name", "value"), [(b"bad name", b"v"), (b"x", b"a\r\nb"), (b"x", b"\x00"), (b"(x)", b"v")])
def test_a_header_uvicorn_refuses_is_refused_by_the_one_pass_head_too(name, value):
    """The same error uvicorn raises (the app sees the same failure), and nothing is built."""
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle

    from splitter.listen.request import response_head

    theirs, _ = _cycle(RequestResponseCycle)
    with pytest.raises(RuntimeError) as uvicorns:
        asyncio.run(_send(theirs, {"type": "http.response.start", "status": 200, "headers": [(name, value)]}))
    with pytest.raises(RuntimeError, match="Invalid HTTP header") as ours:
        response_head(200, [(name, value)], False, True)
    assert str(ours.value) == str(uvicorns.value)


def test_a_route_lookup_is_remembered_and_the_memory_is_bounded():
    from splitter import routes

    table = routes.RouteTable([("/api/auth", "auth"), ("/", "root")])
    assert table.match("/api/auth/me") == "auth"
    assert table.match("/api/auth/me") == "auth", "the remembered answer"
    assert table.match("/api/authx") == "root"
    assert table.match("x") is None and table.match("x") is None, "a remembered None is still None"
    for i in range(routes.MAX_SEEN + 10):
        assert table.match(f"/api/auth/{i}") == "auth"
    assert len(table._seen) <= routes.MAX_SEEN
