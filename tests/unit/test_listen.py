"""splitter's own HTTP/1.1 protocol (splitter/listen/http.py) driven in process with a fake transport, as
uvicorn's tests/protocols/test_http.py drives its own: bytes in through data_received, bytes out from the
transport's buffer; no socket. What needs a real socket (splice, reading past the parser, lingering
close, the send timeout) is in tests/integration/faults/."""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest
import uvicorn
from uvicorn.server import ServerState

from splitter.bypass import CLIENT_HOOK
from splitter.listen.http import ABSOLUTE_FORM, MAX_HEAD_BYTES, HttpProtocol
from splitter.listen.states import NEXT, Conn, Phase, to

GET = b"GET / HTTP/1.1\r\nHost: example.org\r\n\r\n"
BAD_REQUEST = (
    b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 65\r\n"
    b'connection: close\r\n\r\n{"error":"invalid HTTP request","handler":null,"request_id":null}'
)  # the proxy's JSON, as every answer it writes itself (uvicorn's was plain text)


class FakeTransport:
    def __init__(self) -> None:
        self.buffer = b""
        self.closed = False
        self.reading = True
        self.protocol: Any = None

    def get_extra_info(self, name: str) -> Any:
        return {"sockname": ("127.0.0.1", 8000), "peername": ("127.0.0.1", 40000)}.get(name)

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.buffer += data

    def writelines(self, parts: list[bytes]) -> None:
        self.write(b"".join(parts))

    def close(self) -> None:
        self.closed = True

    abort = close

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def get_write_buffer_size(self) -> int:
        return 0

    def set_protocol(self, protocol: Any) -> None:
        self.protocol = protocol


async def until(condition: Any, steps: int = 200) -> None:
    """Run the loop until `condition()` holds (a fake transport: every step is in process)."""
    for _ in range(steps):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def connect(app: Any, **config: Any) -> tuple[HttpProtocol, FakeTransport]:
    cfg = uvicorn.Config(app, interface="asgi3", lifespan="off", log_config=None, **config)
    protocol = HttpProtocol(cfg, ServerState(), {}, asyncio.get_running_loop(), header_timeout=30.0)
    transport = FakeTransport()
    protocol.connection_made(transport)  # type: ignore[arg-type]
    return protocol, transport


def answer(body: bytes = b"hello", headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        length = [(b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": length if headers is None else headers})
        await send({"type": "http.response.body", "body": body})

    return app


def test_a_request_gets_its_scope_and_the_answer_keeps_the_connection_open():
    scopes: list[dict[str, Any]] = []

    async def scenario() -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            scopes.append(scope)
            await answer()(scope, receive, send)

        protocol, t = connect(app)
        protocol.data_received(b"GET /a%20b/c?x=1 HTTP/1.1\r\nHost: example.org\r\nX-Y: z\r\n\r\n")
        await until(lambda: t.buffer.endswith(b"hello"))
        assert t.buffer == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"
        assert not t.closed and protocol.state is Conn.IDLE
        protocol.data_received(GET)
        await until(lambda: t.buffer.count(b"hello") == 2)
        assert not t.closed

    asyncio.run(scenario())
    scope = scopes[0]
    assert scope["extensions"][CLIENT_HOOK] is not None and ABSOLUTE_FORM not in scope["extensions"]
    del scope["extensions"], scope["state"]
    assert scope == {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 40000), "scheme": "http", "method": "GET",
        "root_path": "", "path": "/a b/c", "raw_path": b"/a%20b/c", "query_string": b"x=1",
        "headers": [(b"host", b"example.org"), (b"x-y", b"z")],
    }  # fmt: skip


def test_pipelined_requests_run_one_at_a_time_in_order_and_nothing_more_is_read_meanwhile():
    async def scenario() -> None:
        release = asyncio.Event()
        started: list[str] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            started.append(scope["path"])
            if scope["path"] == "/first":
                await release.wait()
            await answer(scope["path"].encode())(scope, receive, send)

        protocol, t = connect(app)
        protocol.data_received(b"GET /first HTTP/1.1\r\n\r\nGET /second HTTP/1.1\r\n\r\n")
        await until(lambda: started == ["/first"])
        await asyncio.sleep(0)
        assert started == ["/first"] and not t.reading and t.buffer == b"", "the second waits, reading paused"
        release.set()
        await until(lambda: t.buffer.endswith(b"/second"))
        assert t.buffer.index(b"/first") < t.buffer.index(b"/second") and t.reading

    asyncio.run(scenario())


def test_the_requests_of_a_keep_alive_connection_run_in_one_task_and_it_ends_with_the_connection():
    """One runner task per connection, not a task per request; once the connection is gone, no task is left."""

    async def scenario() -> None:
        tasks: list[asyncio.Task[Any] | None] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            tasks.append(asyncio.current_task())
            await answer()(scope, receive, send)

        protocol, t = connect(app)
        for n in range(1, 4):
            protocol.data_received(GET)
            await until(lambda n=n: t.buffer.count(b"hello") == n and protocol.state is Conn.IDLE)
            await asyncio.sleep(0)  # the app returns after its answer is out
        assert len(tasks) == 3 and len(set(tasks)) == 1 and len(protocol.tasks) == 1
        protocol.connection_lost(None)
        await until(lambda: not protocol.tasks and all(task is not None and task.done() for task in tasks))

    asyncio.run(scenario())


@pytest.mark.parametrize("app_done_first", [True, False])
def test_a_request_never_waits_for_an_app_that_still_runs_after_its_answer(app_done_first):
    """Both orders on purpose: the next request arrives after the app before it returned (its runner takes it),
    or while that app still works after its answer is out (a second runner serves it at once, as uvicorn's
    task per request did; the first runner then ends)."""

    async def scenario() -> None:
        after_answer = asyncio.Event()
        finished: list[str] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await answer(scope["path"].encode())(scope, receive, send)
            if scope["path"] == "/first":
                await after_answer.wait()  # work after the answer (a log, a shadow request)
            finished.append(scope["path"])

        protocol, t = connect(app)
        protocol.data_received(b"GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: t.buffer.endswith(b"/first") and protocol.state is Conn.IDLE)
        if app_done_first:
            after_answer.set()
            await until(lambda: finished == ["/first"])
        protocol.data_received(b"GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: t.buffer.endswith(b"/second"))
        assert finished == (["/first", "/second"] if app_done_first else ["/second"])
        after_answer.set()
        await until(lambda: sorted(finished) == ["/first", "/second"])
        protocol.data_received(b"GET /third HTTP/1.1\r\nHost: x\r\n\r\n")
        await until(lambda: t.buffer.endswith(b"/third"))
        await until(lambda: len(protocol.tasks) == 1)  # one runner waits for the next request, whatever the order
        protocol.connection_lost(None)
        await until(lambda: not protocol.tasks)

    asyncio.run(scenario())


def test_an_app_that_fails_after_answering_closes_the_connection_and_its_runner_ends():
    async def scenario() -> None:
        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]})
            await send({"type": "http.response.body", "body": b"ok"})
            raise RuntimeError("after the answer")

        protocol, t = connect(app)
        protocol.data_received(GET)
        await until(lambda: t.closed)
        assert t.buffer.endswith(b"ok")
        protocol.connection_lost(None)
        await until(lambda: not protocol.tasks)

    asyncio.run(scenario())


def test_http_1_0_gets_connection_close_and_the_connection_closes():
    async def scenario() -> None:
        protocol, t = connect(answer())
        protocol.data_received(b"GET / HTTP/1.0\r\n\r\n")
        await until(lambda: t.closed)
        assert t.buffer == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"

    asyncio.run(scenario())


def test_an_idle_keep_alive_connection_closes_after_the_keep_alive_timeout():
    async def scenario() -> None:
        protocol, t = connect(answer(), timeout_keep_alive=1)
        protocol.data_received(GET)
        await until(lambda: t.buffer.endswith(b"hello"))
        assert protocol.state is Conn.IDLE and not t.closed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not t.closed and loop.time() < deadline:
            await asyncio.sleep(0.05)
        assert t.closed and protocol.state is Conn.CLOSING

    asyncio.run(scenario())


def test_a_response_without_length_is_chunked_and_head_or_204_is_not():
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        status = 204 if scope["path"] == "/none" else 200
        await send({"type": "http.response.start", "status": status, "headers": [(b"x-a", b"1")]})
        if status == 200:
            await send({"type": "http.response.body", "body": b"hello", "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": True})
            await send({"type": "http.response.body", "body": b" world", "more_body": False})
        else:
            await send({"type": "http.response.body", "body": b""})

    async def scenario() -> tuple[bytes, bytes, bytes]:
        outs = []
        for request in (GET, b"HEAD / HTTP/1.1\r\n\r\n", b"GET /none HTTP/1.1\r\n\r\n"):
            protocol, t = connect(app)
            protocol.data_received(request)
            await until(lambda t=t, p=protocol: p.state is Conn.IDLE and t.buffer)
            outs.append(t.buffer)
        return outs[0], outs[1], outs[2]

    chunked, head, empty = asyncio.run(scenario())
    assert chunked == b"HTTP/1.1 200 OK\r\nx-a: 1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
    assert head == b"HTTP/1.1 200 OK\r\nx-a: 1\r\n\r\n"
    assert empty == b"HTTP/1.1 204 No Content\r\nx-a: 1\r\n\r\n"


@pytest.mark.parametrize(("body", "error"), [(b"too long", "longer"), (b"hi", "shorter")])
def test_a_body_that_breaks_its_content_length_fails_the_app_and_closes_the_connection(body, error):
    failures: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"5")]})
        try:
            await send({"type": "http.response.body", "body": body})
        except RuntimeError as exc:
            failures.append(str(exc))
            raise

    async def scenario() -> bytes:
        protocol, t = connect(app)
        protocol.data_received(GET)
        await until(lambda: t.closed)
        return t.buffer

    out = asyncio.run(scenario())
    assert failures == [f"Response content {error} than Content-Length"]
    assert out.startswith(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n"), "the head went; no second status"
    assert out.count(b"HTTP/1.1") == 1 and not out.endswith(b"too long")


def test_an_app_that_fails_before_answering_gets_a_500():
    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise ValueError("boom")

    async def scenario() -> bytes:
        protocol, t = connect(app)
        protocol.data_received(GET)
        await until(lambda: t.closed)
        return t.buffer

    assert asyncio.run(scenario()) == (
        b"HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: 66\r\n"
        b'connection: close\r\n\r\n{"error":"internal server error","handler":null,"request_id":null}'
    )


@pytest.mark.parametrize("garbage", [b"NOT HTTP\r\n\r\n", b"GET / HTTP/1.1\r\nno colon\r\n\r\n"])
def test_a_head_the_parser_refuses_gets_uvicorns_400(garbage):
    async def scenario() -> FakeTransport:
        protocol, t = connect(answer())
        protocol.data_received(garbage)
        await until(lambda: t.closed)
        return t

    t = asyncio.run(scenario())
    assert t.buffer == BAD_REQUEST


def test_a_head_over_max_head_bytes_gets_431_and_the_app_never_runs():
    ran: list[str] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        ran.append(scope["path"])

    async def scenario() -> FakeTransport:
        protocol, t = connect(app)
        protocol.data_received(b"GET / HTTP/1.1\r\n")
        for i in range(MAX_HEAD_BYTES // 1000 + 8):  # the parser hands a field on when the next one starts
            if not t.closed:
                protocol.data_received(b"x-filler-%d: %s\r\n" % (i, b"a" * 1000))
        await until(lambda: t.closed)
        return t

    t = asyncio.run(scenario())
    assert t.buffer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n")
    assert b"connection: close" in t.buffer and ran == []


def test_an_absolute_form_target_is_flagged_for_the_proxy_and_its_path_parsed():
    scopes: list[dict[str, Any]] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        scopes.append(scope)
        await answer()(scope, receive, send)

    async def scenario() -> None:
        protocol, t = connect(app)
        protocol.data_received(b"GET http://example.org/x?q=1 HTTP/1.1\r\n\r\n")
        await until(lambda: t.buffer.endswith(b"hello"))

    asyncio.run(scenario())
    assert ABSOLUTE_FORM in scopes[0]["extensions"] and scopes[0]["path"] == "/x"


def test_a_chunked_bodys_trailers_are_dropped_and_the_body_arrives_whole():
    got: list[Any] = []

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message["body"]
            if not message["more_body"]:
                break
        got.append((body, list(scope["headers"])))
        await answer()(scope, receive, send)

    async def scenario() -> None:
        protocol, t = connect(app)
        protocol.data_received(b"POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n")
        protocol.data_received(b"0\r\nx-trailer: sneaky\r\n\r\n")
        await until(lambda: t.buffer.endswith(b"hello"))

    asyncio.run(scenario())
    assert got == [(b"hello", [(b"transfer-encoding", b"chunked")])]


def test_expect_100_continue_goes_out_at_the_first_receive_and_never_before_an_early_answer():
    async def reads(scope: dict[str, Any], receive: Any, send: Any) -> None:
        message = await receive()
        await answer(message["body"])(scope, receive, send)

    async def scenario() -> tuple[bytes, bytes]:
        request = b"POST / HTTP/1.1\r\ncontent-length: 2\r\nexpect: 100-continue\r\n\r\n"
        protocol, t = connect(reads)
        protocol.data_received(request)
        await until(lambda: t.buffer == b"HTTP/1.1 100 Continue\r\n\r\n")
        protocol.data_received(b"ok")
        await until(lambda: t.buffer.endswith(b"ok"))
        early, t2 = connect(answer(b"no"))
        early.data_received(request)
        await until(lambda: t2.buffer.endswith(b"no"))
        return t.buffer, t2.buffer

    read, answered = asyncio.run(scenario())
    assert read == b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
    assert answered == b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nno", "the answer came first: no 100"


def test_the_app_hears_of_a_disconnect_while_it_waits_for_the_body():
    async def scenario() -> list[dict[str, Any]]:
        messages: list[dict[str, Any]] = []

        async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
            messages.append(await receive())
            messages.append(await receive())

        protocol, t = connect(app)
        protocol.data_received(b"POST / HTTP/1.1\r\ncontent-length: 10\r\n\r\nabc")
        await until(lambda: len(messages) == 1)
        protocol.connection_lost(None)
        await until(lambda: len(messages) == 2)
        return messages

    first, second = asyncio.run(scenario())
    assert first == {"type": "http.request", "body": b"abc", "more_body": True}
    assert second == {"type": "http.disconnect"}


def test_a_connection_shut_down_just_after_accept_serves_its_first_request_with_close():
    async def scenario() -> FakeTransport:
        protocol, t = connect(answer())
        protocol.shutdown()
        assert not t.closed, "a grace for the request on its way"
        protocol.data_received(GET)
        await until(lambda: t.closed)
        return t

    t = asyncio.run(scenario())
    assert t.buffer == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello"


def test_a_websocket_upgrade_is_handed_to_the_websocket_protocol_with_the_request_head():
    async def scenario() -> tuple[HttpProtocol, FakeTransport]:
        protocol, t = connect(answer(), ws="websockets-sansio")
        protocol.data_received(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        return protocol, t

    protocol, t = asyncio.run(scenario())
    assert protocol.state is Conn.UPGRADED and type(t.protocol).__name__ == "WebSocketsSansIOProtocol"
    assert protocol not in protocol.server_state.connections and t.protocol in protocol.server_state.connections


def test_every_state_move_the_table_lists_is_allowed_and_no_other():
    class Holder:
        state: Any

    for old, new in itertools.product([*Conn, *Phase], repeat=2):
        holder = Holder()
        holder.state = old
        if new is old or new in NEXT[old]:
            to(holder, new)
            assert holder.state is new
        else:
            with pytest.raises(RuntimeError, match=f"no move from {old.name} to {new.name}"):
                to(holder, new)
    assert set(NEXT) == {*Conn, *Phase}


def test_a_client_that_sends_no_whole_head_within_the_header_timeout_is_dropped_without_an_answer():
    async def scenario() -> FakeTransport:
        cfg = uvicorn.Config(answer(), interface="asgi3", lifespan="off", log_config=None)
        protocol = HttpProtocol(cfg, ServerState(), {}, asyncio.get_running_loop(), header_timeout=0.2)
        t = FakeTransport()
        protocol.connection_made(t)  # type: ignore[arg-type]
        protocol.data_received(b"GET / HTTP/1.1\r\nHost: exa")
        assert not t.closed
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while not t.closed and loop.time() < deadline:
            protocol.data_received(b"m")  # a byte now and then does not extend the deadline (slowloris)
            await asyncio.sleep(0.02)
        return t

    t = asyncio.run(scenario())
    assert t.closed and t.buffer == b""


@pytest.mark.parametrize("resumed_first", [False, True])
def test_a_response_waits_while_the_clients_buffer_is_full_and_goes_once_it_drains(resumed_first):
    async def scenario() -> None:
        protocol, t = connect(answer())
        protocol.pause_writing()
        if resumed_first:
            protocol.resume_writing()
        protocol.data_received(GET)
        for _ in range(20):
            await asyncio.sleep(0)
        assert (t.buffer != b"") is resumed_first
        protocol.resume_writing()
        await until(lambda: t.buffer.endswith(b"hello"))
        assert t.buffer == b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello" and not protocol.stalled

    asyncio.run(scenario())
