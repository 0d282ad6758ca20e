"""splitter's client-side HTTP/1.1 protocol: an asyncio.Protocol on httptools serving one ASGI app.

It keeps uvicorn's HTTP semantics (scope, receive/send, keep-alive, HTTP/1.0, pipelining, 100-continue,
the response's framing and length check) and adds what a proxy in front of production needs:
  - a refused head (400) and a failing app (500) get the proxy's JSON error body, not uvicorn's plain text;
  - absolute-form targets (`GET http://host/x`) are flagged (ABSOLUTE_FORM) so the proxy answers 400;
  - a request head larger than MAX_HEAD_BYTES gets 431 (nginx's 4 x 8k); a chunked body's trailers are dropped;
  - a client has `header_timeout` seconds to send a whole request head (slowloris);
  - a client that takes no response bytes for `send_timeout` seconds is cut (nginx's send_timeout):
    timed while the transport's write buffer is full, and by the splice's own wait (`cut_stalled`).
Large bodies skip the parser: a download's is spliced socket to socket in the kernel (`splice_target`,
then `sent_outside` for the length check); an upload's is read from the client socket by the proxy
(`take_body`, then `body_taken`). An answer that goes out before its request body is all in (`cut_body`)
closes the connection after it, and the proxy reads and drops the rest first (`after_close`: lingering close).
`ClientConnection` (bypass.py) is this protocol as the proxy sees it, found in each scope under CLIENT_HOOK.

uvicorn.Server still owns the sockets, lifespan, signals and graceful shutdown: this class is its
`Config(http=...)`; it registers in `server_state.connections` and stops on `shutdown()`. WebSocket
upgrades are handed to `config.ws_protocol_class` with the request head. A connection is in one `Conn`
state and each request in one `Phase` (listen/states.py).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from collections import deque
from collections.abc import Callable
from typing import Any

import httptools
from uvicorn.config import Config
from uvicorn.protocols.http.flow_control import HIGH_WATER_LIMIT, service_unavailable
from uvicorn.protocols.utils import get_local_addr, get_remote_addr, is_ssl
from uvicorn.server import ServerState

from ..bypass import CLIENT_HOOK, ClientConnection, Stall
from .client import ClientSide
from .request import BAD_REQUEST, LOG, Request, refusal
from .states import BUSY, CLOSED, CLOSING, DETACHED, DONE, HEAD, IDLE, QUEUED, RUNNING, UPGRADED, to
from .transport import DROP, Coalescing, count_rejected
from .websocket import hand_over, request_head, wants_websocket

MAX_HEAD_BYTES = 32 * 1024
_ENDED = frozenset([CLOSING, CLOSED, UPGRADED])  # no more requests: the runner ends
ABSOLUTE_FORM = "splitter.absolute_form"


class HttpProtocol(ClientSide, asyncio.Protocol):
    """One client connection (uvicorn.Config(http=...) builds one per accepted socket)."""

    def __init__(
        self, config: Config, server_state: ServerState, app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None, *, header_timeout: float = 30.0, send_timeout: float = 60.0,
    ) -> None:  # fmt: skip
        if not config.loaded:
            config.load()
        self.config, self.server_state, self.app_state = config, server_state, app_state
        self.app = config.loaded_app
        self.loop = _loop or asyncio.get_event_loop()
        self.tasks = server_state.tasks
        self.asgi = {"version": config.asgi_version, "spec_version": "2.3"}
        self._limit = config.limit_concurrency  # None: no limit (the proxy's), checked without a call
        self.keepalive_timeout = max(config.timeout_keep_alive, 0.001)  # 0: an idle connection closes at once
        self.header_timeout, self.send_timeout = header_timeout, send_timeout  # header_timeout 0: no limit
        self.parser = httptools.HttpRequestParser(self)
        try:  # answer the first of pipelined requests even when the client closed after sending them (uvicorn's)
            self.parser.set_dangerous_leniencies(lenient_data_after_close=True)
        except AttributeError:  # httptools < 0.6.3
            pass
        self.state = HEAD  # its header deadline runs from the accept, not from the first byte
        self.transport: asyncio.Transport = None  # type: ignore[assignment]  # until connection_made
        self.out: Coalescing = None  # type: ignore[assignment]
        self.server: tuple[str, int | None] | None = None
        self.client: tuple[str, int] | None = None
        self.scheme = "http"
        self.stalled = False  # cut for taking no response bytes for send_timeout seconds
        self.write_paused = False  # the client's write buffer is over the high-water mark
        self.current: Request | None = None  # the request whose response is going out
        self.parsing: Request | None = None  # the last request parsed: the body the parser reads is its
        self._queue: deque[tuple[Request, Any]] = deque()  # pipelined requests, with the app to run for each
        self._next: asyncio.Future[tuple[Request, Any] | None] | None = None  # the runner waits for a request
        self._runners = 0  # runners made (the newest is the one that waits for the next request)
        self._keep_alive = True  # False once the server stops: no request after the one in flight
        self._requests = 0
        self._read_paused = False
        self._drain: asyncio.Future[None] | None = None
        self._send_clock: Stall | None = None  # runs while the client's write buffer is full
        self._deadline: float | None = None  # loop time by which a request head must be whole, or the idle end
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._url = b""  # the request head being parsed
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._in_head = False  # False after the head: header fields now are a chunked body's trailers
        self._expect_100 = self._absolute = self._too_large = False
        self._on_lost: Callable[[], None] | None = None
        self._after_close: Callable[[], None] | None = None
        self._splicing: Request | None = None  # the request whose body splice_target handed the socket out for

    # --- the transport's events ---------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.server_state.connections.add(self)  # type: ignore[arg-type]  # uvicorn's set takes any protocol
        self.transport = transport  # type: ignore[assignment]  # a stream transport
        self.out = Coalescing(self.transport, self.loop)
        self.server = get_local_addr(self.transport)
        self.client = get_remote_addr(self.transport)
        self.scheme = "https" if is_ssl(self.transport) else "http"
        self._expire(self.header_timeout)  # a new connection has header_timeout seconds to send its first head

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        to(self, CLOSED)
        self._stop_timer()
        if self._send_clock is not None:
            self._send_clock.cancel()
            self._send_clock = None
        for request in (self.current, self.parsing, *(queued for queued, _ in self._queue)):
            if request is not None:
                request.gone()
        self.current = self.parsing = None  # no cycle through a scope keeps this object (or the parser) alive
        self._queue.clear()
        self.parser = None  # type: ignore[assignment]
        self._stop_runner()
        self._drained()
        hook, self._on_lost = self._on_lost, None
        if hook is not None:
            hook()  # the proxy cancels the upstream request at once
        after, self._after_close = self._after_close, None
        if after is not None:
            after()

    def eof_received(self) -> None:
        """The client shut its side: the transport closes (a half-closed client gets no answer, as with uvicorn
        and nginx's proxy): a FIN from shutdown(SHUT_WR) cannot be told from one from close(), and a client
        that goes away cancels its upstream request at once (SPEC; test_upstream_hygiene.py's abandoned requests)."""

    def data_received(self, data: bytes) -> None:
        if self.state is IDLE:
            to(self, HEAD)
            self._expire(self.header_timeout)  # bytes of a new request head are arriving
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._upgrade()
        except httptools.HttpParserError:
            self._refuse_head()

    def pause_writing(self) -> None:
        """The client is not taking bytes as fast as they come: it has send_timeout seconds to take some."""
        self.write_paused = True
        if self._send_clock is None:
            self._send_clock = Stall(self.loop, self.send_timeout, self.out.taken, self._send_stalled)

    def resume_writing(self) -> None:
        self.write_paused = False
        self._drained()
        clock, self._send_clock = self._send_clock, None
        if clock is not None:
            clock.cancel()

    def shutdown(self) -> None:
        """Graceful stop (uvicorn.Server calls it on each connection). One with no request in flight closes
        now, one in flight after its response; one accepted a moment ago has its first request on the way,
        so it gets a short grace instead of a reset (the rolling-restart test catches this)."""
        self._keep_alive = False
        if self.current is not None:
            self.current.keep_alive = False
        elif self._requests == 0 and not self.out.is_closing():
            self.loop.call_later(1.0, self._close_if_idle)
        else:
            self.close()

    def _close_if_idle(self) -> None:
        if self.current is None:
            self.close()

    # --- the parser's callbacks ---------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url, self._headers, self._head_bytes, self._in_head = b"", [], 0, True
        self._expect_100 = self._absolute = False

    def on_url(self, url: bytes) -> None:
        if not self._url and not url.startswith(b"/") and url != b"*":
            self._absolute = True
        self._url += url
        self._count(len(url))

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._in_head:
            return  # a chunked body's trailer fields: dropped, never merged into the request head (nginx does the same)
        size = self._head_bytes = self._head_bytes + len(name) + len(value) + 4  # _count's sum, inline: per header
        if size > MAX_HEAD_BYTES:
            self._count(0)
        name = name.lower()
        if name == b"expect" and value.lower() == b"100-continue":
            self._expect_100 = True
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._deadline = None  # the head is whole: the timer, when it fires, finds no deadline
        self._requests += 1
        parser = self.parser
        if parser.should_upgrade() and self._websocket():
            self.parsing = None
            return  # data_received hands the connection over
        version, method = parser.get_http_version(), parser.get_method().decode("ascii")
        url = httptools.parse_url(self._url)
        raw_path = url.path
        path = raw_path.decode("ascii")
        if "%" in path:
            path = urllib.parse.unquote(path)
        extensions: dict[str, Any] = {CLIENT_HOOK: self}
        if self._absolute:
            extensions[ABSOLUTE_FORM] = {}
        root = self.config.root_path
        scope = {
            "type": "http", "asgi": self.asgi, "http_version": version, "server": self.server, "client": self.client,
            "scheme": self.scheme, "method": method, "root_path": root, "path": root + path,
            "raw_path": root.encode("ascii") + raw_path if root else raw_path, "query_string": url.query or b"",
            "headers": self._headers, "state": self.app_state.copy(), "extensions": extensions,
        }  # fmt: skip
        keep_alive = self._keep_alive and version != "1.0" and parser.should_keep_alive()
        request = self.parsing = Request(self, scope, keep_alive, self._expect_100, self.current is not None)
        app = self.app if self._limit is None or self._within_limit() else service_unavailable
        if self.current is None:
            self._run(request, app)
        else:  # pipelined: it waits for the one in flight, and nothing more is read meanwhile
            self._queue.append((request, app))
            self.pause_reading()

    def on_body(self, body: bytes) -> None:
        request = self.parsing
        if request is None:
            return
        request.parsed += len(body)
        if request.state is DONE:
            return
        request.body += body
        if len(request.body) > HIGH_WATER_LIMIT:
            self.pause_reading()
        request.wake()

    def on_message_complete(self) -> None:
        request = self.parsing
        if request is not None:
            request.more_body = False
            if request.state is not DONE:
                request.wake()

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            self._too_large = True
            raise ValueError("request head too large")  # the parser turns this into HttpParserError

    def _within_limit(self) -> bool:
        limit = self._limit
        return limit is None or (len(self.server_state.connections) < limit and len(self.tasks) < limit)

    # --- requests -----------------------------------------------------------------------------
    def _run(self, request: Request, app: Any) -> None:
        """The app's awaitable goes to this connection's runner (`_serve`), waiting for it since the request before;
        when there is none waiting (the first request, or one that must start while the runner still finishes
        the one before: its response is out, its app not done), a new runner task takes it."""
        to(self, BUSY)
        if request.state is QUEUED:
            to(request, RUNNING)
        self.current = request
        try:
            run = app(request.scope, request.receive, request.send)
        except Exception as exc:  # noqa: BLE001 - the app failed before returning its awaitable: a 500
            run = _raise(exc)
        waiter, self._next = self._next, None
        if waiter is not None and not waiter.done():
            waiter.set_result((request, run))
            return
        self._runners += 1
        task = self.loop.create_task(self._serve(request, run, self._runners))
        self.tasks.add(task)  # uvicorn's shutdown waits for these
        task.add_done_callback(self.tasks.discard)

    async def _serve(self, request: Request, run: Any, runner: int) -> None:
        """A connection's requests in turn, in one task: a task made per connection, not per request (making
        and freeing a Task, its done callback's loop step: ~1.5 us of a request's ~45 here). Each app is
        awaited here and its end reported (Request.ended); then the runner waits for the next request, unless
        a newer runner took over or the connection is gone. A cancelled runner ends after reporting it."""
        while True:
            try:
                result = await run
            except Exception as exc:  # noqa: BLE001 - reported as uvicorn reports a failing app
                request.ended(exc, None)
            except asyncio.CancelledError:
                request.ended(asyncio.CancelledError(), None)
                raise
            else:
                request.ended(None, result)
            if runner != self._runners or self.state in _ENDED:
                return
            del request, run  # nothing of the answered request is kept while the connection idles
            waiter = self._next = self.loop.create_future()
            taken = await waiter
            if taken is None:
                return  # the connection is gone
            request, run = taken

    def _stop_runner(self) -> None:
        """The connection is gone or handed over: a runner waiting for its next request ends."""
        waiter, self._next = self._next, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def response_done(self, request: Request) -> None:
        """The response is complete: the connection closes, or serves the next pipelined request, or waits."""
        self.server_state.total_requests += 1
        self.current = None
        if not request.keep_alive:
            self.close()
            return
        if self.out.is_closing():
            return
        self.resume_reading()
        if self._queue:
            self._run(*self._queue.popleft())
        else:
            to(self, IDLE)
            self._expire(self.keepalive_timeout)

    def pause_reading(self) -> None:
        if not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        """Reading resumes, unless the proxy reads the body past the parser (DETACHED)."""
        if self._read_paused and self.state is not DETACHED:
            self._read_paused = False
            self.transport.resume_reading()

    def drained(self) -> asyncio.Future[None]:
        if self._drain is None:
            self._drain = self.loop.create_future()
        return self._drain

    def _drained(self) -> None:
        fut, self._drain = self._drain, None
        if fut is not None and not fut.done():
            fut.set_result(None)

    def close(self) -> None:
        if self.state is not CLOSING and self.state is not CLOSED and self.state is not UPGRADED:
            to(self, CLOSING)
            self.out.close()

    # --- the head deadline, the idle end ------------------------------------------------------
    def _expire(self, timeout: float) -> None:
        """The connection closes unless a request is in flight within `timeout` seconds (0: no limit). A
        deadline per wait and one timer per connection that, when it fires early, waits again for the
        time left (not a timer made and cancelled per request); moved earlier only when it must be."""
        if timeout <= 0:
            self._deadline = None
            return
        deadline = self._deadline = self.loop.time() + timeout
        if self._timer is None or self._timer_at > deadline:
            if self._timer is not None:
                self._timer.cancel()
            self._timer, self._timer_at = self.loop.call_later(timeout, self._expired), deadline

    def _expired(self) -> None:
        self._timer = None
        deadline = self._deadline
        if deadline is None or (self.state is not IDLE and self.state is not HEAD):
            return
        left = deadline - self.loop.time()
        if left > 0:
            self._timer, self._timer_at = self.loop.call_later(left, self._expired), deadline
            return
        self._deadline = None
        self.close()  # no complete request head in time (nginx's client_header_timeout), or idle too long

    def _stop_timer(self) -> None:
        """The connection is gone, or is the WebSocket protocol's now: its timer must not keep this object."""
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- answers without the app: bad heads, upgrades -----------------------------------------
    def _refuse_head(self) -> None:
        """A request head the parser refuses: a 400 (JSON); over MAX_HEAD_BYTES a 431."""
        count_rejected(self.app, "headers_too_large" if self._too_large else "bad_request")
        if not self._too_large:
            LOG.warning(BAD_REQUEST)
        self.out.write(refusal(self._too_large, self.server_state.default_headers))
        self.close()

    def _websocket(self) -> bool:
        return self.config.ws_protocol_class is not None and wants_websocket(self._headers)

    def _upgrade(self) -> None:
        """A WebSocket handshake goes to the WebSocket protocol; another Upgrade (h2c) is answered as a plain
        request, and the connection closes after it: the parser stops at its head, so what follows (a body,
        a pipelined request) would be lost or misread as a request head; it is read and dropped."""
        if not self._websocket():
            LOG.warning("Unsupported upgrade request.")
            self._keep_alive = False
            if self.parsing is not None:
                self.parsing.keep_alive = False
            self.parser = DROP  # type: ignore[assignment]  # read and dropped, not left unread: a close sends no reset
            return
        to(self, UPGRADED)
        self._stop_timer()
        self._stop_runner()
        self.server_state.connections.discard(self)
        self.out.flush()
        hand_over(self.config, self.server_state, self.app_state, self.transport, request_head(
            self.parser.get_method(), self._url, self._headers
        ))  # fmt: skip


async def _raise(exc: Exception) -> None:
    raise exc


def _check(protocol: HttpProtocol) -> ClientConnection:
    return protocol  # what the proxy may call on it, checked by mypy
