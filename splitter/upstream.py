"""The upstream HTTP/1.1 client: one connection pool per backend, and the one place that maps failures.

Why not a general-purpose client: aiohttp's pool hands out a connection whose read buffer
already holds bytes the upstream wrote while it was idle (aiohttp issue 13656), so a backend
with a double-write bug shifts every later user's answer by one. The rule here, Go's and
nginx's: a connection that received a byte nobody asked for is closed, never reused —
  - bytes after a complete response, in the same read: the connection is not returned;
  - bytes while idle in the pool: `data_received` closes it at once;
  - bytes the event loop has not delivered yet: a zero-timeout poll just before reuse.
What these cannot catch: a stray (a doubled or late answer) that arrives after the next request
went out on the connection is, to HTTP/1.1, that request's answer; no byte tells them apart.
`backends.<name>.check_request_id` closes that gap for a backend that echoes X-Request-ID: an
answer carrying another ID (or none) is a ProtocolFailed and its connection is closed.
Retries (Go's isReplayable): a request goes once more on a fresh connection only when a reused
one closed before any answer byte and the request is replayable (GET, HEAD, OPTIONS, TRACE
without a body, or one carrying Idempotency-Key); a POST/PUT/PATCH/DELETE is never sent twice.
Header bytes pass byte-exact both ways. A response the server cannot relay faithfully
(control bytes, a status outside 100..599, a body on 204/HEAD, an unrequested 101) is a
ProtocolError.

Failures (docstring tree after httpx's _exceptions.py):
    UpstreamError            .status and .kind, what the client gets and how it is counted
      ├─ ConnectFailed        502 connect   refused, reset or closed before a response byte
      ├─ UpstreamTimeout      504 timeout   no connection / no bytes within the backend's timeouts
      ├─ ProtocolFailed       502 protocol  a malformed or unrelayable answer
      └─ Overflow             503 overflow  every connection of the backend busy past connect_timeout
    Aborted                  the client went away; the exchange was cancelled (not an upstream error)
      └─ SendTimedOut         the client took no bytes of a spliced body for the send timeout
    BodyCut                  raised by a request body stream that stops short because the answer came first

An exchange is in one `Phase` (head, body, done, must-close, failed), changed only by `Exchange.move`
along a fixed table (h11's _state.py); httptools' callbacks live apart in `_ResponseParser`, which checks
the head and hands the exchange what it parsed. Splicing a body past Python is bypass.py's.

A request body stops going upstream as soon as the response head (or a failure) arrives: the body
stream is told (the head future's callbacks) and the connection is not reused. After
`Expect: 100-continue` the body waits for the upstream's 100 Continue, its answer, or CONTINUE_WAIT s.
"""

from __future__ import annotations

import asyncio
import enum
import select
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import httptools

from .config import Backend

HIGH_WATER = 256 * 1024  # response bytes buffered before reading from the upstream pauses
_SAFE_METHODS = frozenset(["GET", "HEAD", "OPTIONS", "TRACE"])
_IDEMPOTENCY_KEYS = frozenset([b"idempotency-key", b"x-idempotency-key"])
CONTINUE_WAIT = 1.0  # s a body waits for the upstream's 100 Continue (Go's ExpectContinueTimeout, curl's default)
_EXPECT_LINE = b"\r\nexpect: 100-continue\r\n"  # as the proxy writes it into a request head
# the characters uvicorn refuses to send (its HEADER_RE, HEADER_VALUE_RE; it raises, the client gets a reset):
# tables that keep every other byte as it is and change these (translate then returns an equal string only
# when none was there)
_BAD_IN_NAME = frozenset(b'\x7f()<>@,;:[]={} \t\\"') | frozenset(range(0x20))
_BAD_IN_VALUE = frozenset(b"\x7f") | frozenset(range(0x20)) - {0x09}
_NAME_CHECK = bytes(c ^ 1 if c in _BAD_IN_NAME else c for c in range(256))
_VALUE_CHECK = bytes(c ^ 1 if c in _BAD_IN_VALUE else c for c in range(256))


def relayable(headers: list[tuple[bytes, bytes]]) -> bool:
    """No header name or value has a character uvicorn refuses to send. One pass over all names and
    one over all values ("-" is a name character, tab a value one), each a C loop (translate): a
    fraction of the cost of a regex search per field (a dozen per response)."""
    if not headers:
        return True
    names, values = zip(*headers, strict=True)  # two tuples, made in C
    name_bytes, value_bytes = b"-".join(names), b"\t".join(values)
    return name_bytes.translate(_NAME_CHECK) == name_bytes and value_bytes.translate(_VALUE_CHECK) == value_bytes


_FIELD = b": ".join  # (name, value) -> b"name: value"
_FRAMING = frozenset([b"connection", b"content-length", b"transfer-encoding", b"x-request-id"])  # read from a head
_POLL_DIRTY = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | getattr(select, "POLLRDHUP", 0)


class UpstreamError(Exception):
    """`message` is what the client reads (one per kind); `detail` what the log says."""

    status = 502
    kind = "protocol"
    message = "upstream sent a malformed response"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ConnectFailed(UpstreamError):
    kind = "connect"
    message = "upstream connection failed"


class UpstreamTimeout(UpstreamError):
    status = 504
    kind = "timeout"
    message = "upstream timed out"


class ProtocolFailed(UpstreamError):
    kind = "protocol"


class Overflow(UpstreamError):
    status = 503
    kind = "overflow"
    message = "all connections to the backend are busy"


class Aborted(Exception):
    """The client went away and the exchange was cancelled."""


class SendTimedOut(Aborted):
    """The client took no response bytes for the send timeout: it is cut, the exchange cancelled."""


class BodyCut(Exception):
    """A request body stream stops short on purpose: the upstream answered (or failed) before it was all sent."""


def map_upstream_error(exc: BaseException) -> UpstreamError:
    """The one place that decides what an upstream failure means for the client."""
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, TimeoutError):
        return UpstreamTimeout("upstream timed out")
    if isinstance(exc, httptools.HttpParserError):
        return ProtocolFailed(f"unparseable response: {exc}")
    if isinstance(exc, OSError):
        return ConnectFailed(f"{type(exc).__name__}: {exc}")
    return ProtocolFailed(f"upstream failed: {type(exc).__name__}: {exc}")


class Phase(enum.Enum):
    """Where an exchange is (h11's _state.py: one table of moves, one method that makes them)."""

    HEAD = "head"  # waiting for the response head (100/102/103 heads pass by)
    BODY = "body"  # the head is in, body bytes are coming
    DONE = "done"  # the whole response is in
    MUST_CLOSE = "must_close"  # the whole response is in, but the connection saw a byte nobody asked for, or closed
    FAILED = "failed"  # `error` ended it (the upstream failed, timed out, or the client went away)

    __hash__ = object.__hash__  # members are singletons: hashed in C, not by Enum's hash(name) (per response)


# the members as module constants for the per-response code: an Enum attribute costs ~50 ns in 3.11, a global ~8
_HEAD, _BODY, _DONE, _MUST_CLOSE, _FAILED = Phase.HEAD, Phase.BODY, Phase.DONE, Phase.MUST_CLOSE, Phase.FAILED
_MOVES = {
    Phase.HEAD: {Phase.BODY, Phase.DONE, Phase.FAILED},
    Phase.BODY: {Phase.DONE, Phase.MUST_CLOSE, Phase.FAILED},
    Phase.DONE: {Phase.MUST_CLOSE, Phase.FAILED},
    Phase.MUST_CLOSE: {Phase.MUST_CLOSE, Phase.FAILED},
    Phase.FAILED: {Phase.FAILED},
}
_COMPLETE = frozenset([_DONE, _MUST_CLOSE])
_SPOILED = frozenset([_MUST_CLOSE, _FAILED])  # the connection closes


class _ResponseParser:
    """httptools' callbacks for one response: the head collected and checked, the body and its end
    handed to the exchange. Interim heads (1xx) and trailers stop here."""

    __slots__ = ("ex", "headers", "interim", "on_body", "parser", "trailers")

    def __init__(self, ex: Exchange) -> None:
        self.ex = ex
        self.on_body = ex.body_in  # body bytes go straight to the exchange (httptools reads the callbacks once, here)
        self.parser: Any = httptools.HttpResponseParser(self)
        self.headers: list[tuple[bytes, bytes]] = []
        self.interim = False
        self.trailers = False

    def on_message_begin(self) -> None:
        self.headers = []
        self.trailers = False
        if self.ex.done:
            self.ex.stray()  # a second response to one request
            self.trailers = True  # its head is not collected either

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.trailers:
            return  # trailers are dropped, never merged into the head
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self.ex
        if ex.done:
            return
        self.trailers = True
        status = ex.status = self.parser.get_status_code()
        if not 100 <= status <= 599:
            raise ProtocolFailed(f"upstream sent status {status}, outside 100..599")
        if status == 101:
            raise ProtocolFailed("upstream switched protocols (101) although no upgrade was requested")
        if status < 200:
            self.interim = True  # 100/102/103: not relayed; the final response follows
            if status == 100:
                ex.wake()  # a body waiting for the go-ahead goes
            return
        if not relayable(self.headers):
            raise ProtocolFailed("upstream sent a header the proxy cannot relay faithfully")
        chunked = False
        rid: bytes | None = None
        connection: bytes | None = None
        content_length: int | None = None
        lowered = [(name.lower(), value) for name, value in self.headers]
        for name, value in lowered:
            if name not in _FRAMING:
                continue
            if name == b"connection":
                connection = value if connection is None else connection + b"," + value
            elif name == b"content-length":
                if not value.strip().isdigit():
                    raise ProtocolFailed("upstream sent an invalid Content-Length")
                content_length = int(value)
            elif name == b"transfer-encoding":
                # a coding besides chunked would reach the client undecoded, its header dropped (hop-by-hop);
                # "chunked" twice is not a framing (RFC 9112 6.1): both are the upstream's fault, as h11 says
                if chunked or value.strip().lower() != b"chunked":
                    raise ProtocolFailed("upstream sent a Transfer-Encoding other than one chunked")
                chunked = True
            else:  # x-request-id
                rid = value if rid is None or rid == value else b"(several)"
        self.headers = []
        ex.head_in(lowered, connection, content_length, chunked, rid, self.parser.should_keep_alive())

    def on_message_complete(self) -> None:
        if self.interim:
            self.interim = False
            return
        self.ex.complete(self.parser.should_keep_alive())


class Exchange:
    """One request/response on one upstream connection: fed by the connection (through its parser),
    read by the proxy, released back to the pool. `phase` says where it is; only `move` changes it."""

    __slots__ = (
        "aborted", "body_cut", "buffered", "chunks", "conn", "connection_header", "content_length", "done", "error",
        "expect_id", "head", "head_only", "headers", "keep_alive", "loop", "parser", "phase", "raw_left",
        "read_timeout", "status", "until_eof", "waiter",
    )  # fmt: skip

    def __init__(self, method: str, loop: asyncio.AbstractEventLoop | None = None) -> None:
        # the caller's loop when it has it: get_running_loop() costs a getpid() system call in 3.11
        self.loop = loop or asyncio.get_running_loop()
        self.aborted = False  # the client went away
        self.read_timeout = 60.0
        self.expect_id: bytes | None = None  # the X-Request-ID the answer must carry (check_request_id)
        self.reset(method)

    def reset(self, method: str) -> None:
        """A fresh exchange (and parser) for another attempt of the same request."""
        self.phase = _HEAD
        self.done = False  # the whole response is in (DONE or MUST_CLOSE): kept by `move`
        self.head_only = method == "HEAD"
        self.head: asyncio.Future[None] = self.loop.create_future()
        self.parser: _ResponseParser | None = _ResponseParser(self)
        self.conn: Connection | None = None  # the upstream connection
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []  # names lower-cased
        self.connection_header: bytes | None = None  # the Connection header(s), for the hop-by-hop names they list
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.waiter: asyncio.Future[None] | None = None
        self.error: BaseException | None = None
        self.until_eof = False
        self.keep_alive = False
        self.body_cut = False  # the request body was not all sent: the connection is not reused
        self.content_length: int | None = None
        self.raw_left: int | None = None  # body bytes still to come of a Content-Length response

    def move(self, to: Phase) -> None:
        """The one place the phase changes."""
        if to not in _MOVES[self.phase]:
            raise RuntimeError(f"exchange cannot move from {self.phase.name} to {to.name}")
        self.phase = to
        self.done = to in _COMPLETE

    @property
    def answered(self) -> bool:
        """The upstream answered (or failed): no more of the request body goes."""
        return self.head.done() or self.error is not None

    # --- from the parser ----------------------------------------------------------------
    def head_in(
        self, headers: list[tuple[bytes, bytes]], connection: bytes | None, content_length: int | None, chunked: bool,
        rid: bytes | None, keep_alive: bool,
    ) -> None:
        """The final response head, checked by the parser; names lower-cased (ASGI relays them so anyway)."""
        if self.expect_id is not None and rid != self.expect_id:
            # a shifted or doubled answer (another request's) or none: never relayed, the connection closes
            raise ProtocolFailed(f"upstream answered with X-Request-ID {rid!r}, not the request's {self.expect_id!r}")
        self.headers = headers
        self.connection_header = connection
        self.content_length = None if chunked else content_length  # the body's length as framed (None: unknown)
        status = self.status
        if status == 204 and (chunked or content_length):
            raise ProtocolFailed("upstream sent a body with 204 No Content")
        bodiless = self.head_only or status in (204, 304)
        self.until_eof = not bodiless and not chunked and content_length is None
        if self.head_only or (content_length is not None and not chunked and not bodiless):
            self.keep_alive = keep_alive
        if content_length is not None and not chunked and not bodiless:
            # a known length: once this read is parsed, later bytes are counted, not parsed (no copy)
            self.raw_left = content_length
        # a HEAD answer ends with its head; a body after it makes the connection unusable
        self.move(_DONE if self.head_only else _BODY)
        if not self.head.done():
            self.head.set_result(None)

    def body_in(self, body: bytes) -> None:
        """Body bytes for the proxy; reading from the upstream pauses past HIGH_WATER buffered."""
        if self.done:
            self.stray()  # a body on a HEAD answer
            return
        if self.raw_left is not None:
            self.raw_left -= len(body)
        self.chunks.append(body)
        self.buffered += len(body)
        if self.buffered > HIGH_WATER and self.conn is not None:
            self.conn.pause_reading()
        self.wake()

    def complete(self, keep_alive: bool) -> None:
        if self.done:
            return
        self.keep_alive = keep_alive
        self.move(_DONE)
        self.wake()

    def stray(self) -> None:
        """A byte nobody asked for arrived after the whole response: the connection is never reused."""
        self.move(_MUST_CLOSE)

    # --- from the connection --------------------------------------------------------
    def feed(self, data: bytes) -> None:
        if self.done:
            self.stray()  # bytes after a complete response
            if self.conn is not None:
                self.conn.close()
            return
        left = self.raw_left
        if left is not None and self.head.done():
            self._raw(data, left)
            return
        assert self.parser is not None
        try:
            self.parser.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # 101 was refused in on_headers_complete
        except httptools.HttpParserError as exc:
            if self.done:
                self.stray()  # garbage after a complete response
            else:
                cause = exc.__context__ if isinstance(exc.__context__, UpstreamError) else exc
                self.fail(map_upstream_error(cause))
        if self.phase in _SPOILED and self.conn is not None:
            self.conn.close()

    def _raw(self, data: bytes, left: int) -> None:
        """Body bytes of a Content-Length response, past the read that held the head."""
        spoiled = len(data) > left  # bytes after the declared length: never reuse this connection
        if spoiled:
            data = data[:left]
        if data:
            self.body_in(data)  # counts raw_left down
        if self.raw_left == 0 and self.phase is _BODY:
            self.move(_DONE)
        self.wake()
        if spoiled and self.phase is not _FAILED:
            self.stray()
        if self.phase in _SPOILED and self.conn is not None:
            self.conn.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.done:
            self.stray()
            return
        if self.head.done() and self.until_eof and not self.aborted and self.phase is _BODY:
            self.move(_MUST_CLOSE)  # a body delimited by the connection's close
            self.wake()
            return
        if self.head.done():
            self.fail(ProtocolFailed("upstream closed the connection mid-body"))
        else:
            self.fail(ConnectFailed("upstream closed the connection before responding"))

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.move(_FAILED)
        if not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()  # retrieved: nobody may be waiting yet
        self.wake()
        if self.conn is not None:
            self.conn.close()

    def time_out(self) -> None:
        self.fail(UpstreamTimeout("upstream timed out"))

    def abort(self) -> None:
        """The client went away: cancel the exchange and close the upstream connection."""
        if self.done and not self.chunks:
            return
        self.aborted = True
        self.fail(Aborted())

    def wake(self) -> None:
        """Whoever waits on the exchange looks again; once it has ended, a body still being sent stops."""
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)
        if (self.done or self.error is not None) and self.conn is not None:  # DONE, MUST_CLOSE or FAILED
            self.conn.wake_writer()

    # --- for the proxy ----------------------------------------------------------------
    def take(self) -> bytes | None:
        """The next body bytes if there is no need to wait (b"" at the end), else None."""
        if self.chunks:
            data = self.chunks.popleft()  # one received piece at a time: no copy to join them
            self.buffered -= len(data)
            if self.buffered <= HIGH_WATER and self.conn is not None:
                self.conn.resume_reading()
            return data
        if self.error is not None:
            raise self.error
        if self.done:
            return b""
        return None

    async def read(self) -> bytes:
        """The next body bytes (everything buffered), b"" at the end."""
        while True:
            data = self.take()
            if data is not None:
                return data
            self.waiter = self.loop.create_future()
            timer = self.loop.call_later(self.read_timeout, self.time_out)
            try:
                await self.waiter
            finally:
                timer.cancel()
                self.waiter = None

    async def go_ahead(self, wait: float) -> None:
        """After `Expect: 100-continue`: until the upstream's 100 Continue, its answer or its failure,
        at most `wait` s (then the body goes anyway: RFC 9110 10.1.1, an upstream may not know Expect).
        Whichever comes first ends the wait: the 100 wakes `waiter`, the answer completes `head`, and
        only a silent upstream costs the whole `wait` (waiting for both cost every upload a second)."""
        if self.status == 100 or self.head.done():
            return
        self.waiter = self.loop.create_future()
        try:
            await asyncio.wait((self.waiter, self.head), timeout=wait, return_when=asyncio.FIRST_COMPLETED)
        finally:
            self.waiter = None

    def release(self) -> None:
        """Done with it: the connection goes back to the pool only if it is clean."""
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.exchange = None
            ok = self.phase is _DONE and self.keep_alive and not self.body_cut and not self.chunks
            conn.pool.release(conn, ok)
        self.chunks.clear()  # an aborted download's buffered bytes go now, not at the next GC
        parser, self.parser = self.parser, None
        if parser is not None:
            parser.parser = None  # break the cycles exchange <-> adapter <-> httptools: freed by refcount, no GC work
        if self.error is not None:
            self.error.__traceback__ = None  # its frames hold body chunks: no cycle for the GC to find later


class Connection(asyncio.Protocol):
    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.poller: Any = None
        self.closed = False
        self.idle = False
        self.idle_since = 0.0  # loop time it went back to the pool
        self.reading_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: Any) -> None:  # uvloop's transports do not subclass asyncio's
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.poller = select.poll()
            self.poller.register(sock.fileno(), _POLL_DIRTY)

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            self.close()  # nobody asked: a stray response on an idle connection
            return
        ex.feed(data)

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost finishes an until-EOF body

    def connection_lost(self, exc: BaseException | None) -> None:
        self._gone()
        ex = self.exchange
        if ex is not None:
            ex.connection_lost(exc)
        self.wake_writer()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        self.wake_writer()

    def wake_writer(self) -> None:
        w, self.drain_waiter = self.drain_waiter, None
        if w is not None and not w.done():
            w.set_result(None)

    async def drain(self, ex: Exchange) -> None:
        """Wait while the upstream reads slower than the body arrives; stop waiting once it has answered."""
        while self.write_paused and not self.closed and not ex.answered:
            self.drain_waiter = asyncio.get_running_loop().create_future()
            await self.drain_waiter

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def clean(self) -> bool:
        """Nothing arrived that the event loop has not delivered yet (no bytes, no FIN)."""
        if self.closed:
            return False
        return self.poller is None or not self.poller.poll(0)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self._gone()

    def _gone(self) -> None:
        if not self.closed:
            self.closed = True
            self.pool.forget(self)


class Pool:
    """Connections to one backend: reused LIFO, at most `max_connections` open at once."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        parts = urlsplit(backend.url)
        self.host = parts.hostname or "127.0.0.1"
        self.ssl: ssl.SSLContext | None = ssl.create_default_context() if parts.scheme == "https" else None
        self.port = parts.port or (443 if self.ssl else 80)
        self.authority = parts.netloc.encode()
        self.idle: list[Connection] = []
        self.open = 0
        self.limit = backend.max_connections
        self.waiters: deque[asyncio.Future[Connection | None]] = deque()
        self.retired = False

    async def exchange(
        self, ex: Exchange, method: str, target: bytes, headers: list[tuple[bytes, bytes]],
        body: AsyncIterator[bytes] | None, chunked: bool,
    ) -> None:
        """Send the request (streaming its body) and wait for the response head on `ex`."""
        ex.read_timeout = self.backend.read_timeout
        if self.backend.check_request_id:
            ex.expect_id = next((v for n, v in reversed(headers) if n == b"x-request-id"), None)
        head = _head(method, target, headers, body is not None and chunked)
        for attempt in (0, 1):
            conn = self._idle()  # no coroutine for the common case: a kept-alive connection is free
            reused = conn is not None
            if conn is None:
                conn, reused = await self._acquire()
            if ex.aborted:
                self.release(conn, True)
                raise Aborted()
            ex.conn = conn
            conn.exchange = ex
            assert conn.transport is not None
            conn.transport.write(head)
            if body is not None:
                if _EXPECT_LINE in head:
                    await ex.go_ahead(CONTINUE_WAIT)
                await self._send_body(ex, conn, body, chunked)
            try:
                if ex.head.done():
                    ex.head.result()  # raises what ended it
                else:
                    timer = ex.loop.call_later(ex.read_timeout, ex.time_out)
                    try:
                        await ex.head
                    finally:
                        timer.cancel()
                return
            except ConnectFailed:
                # A reused connection the upstream closed just as it was taken, before any answer
                # byte: only a replayable request goes once more on a fresh one (Go's isReplayable).
                # The upstream may have run the first one: a POST/PUT/PATCH/DELETE never runs twice.
                if attempt or not reused or body is not None or ex.aborted or not _replayable(method, headers):
                    raise
                ex.release()
                ex.reset(method)

    async def _send_body(self, ex: Exchange, conn: Connection, body: AsyncIterator[bytes], chunked: bool) -> None:
        """The body, until it ends or the upstream answers (or fails): the rest is not sent, the connection
        not reused. The body stream is not even started when the answer came first (so a client's
        `Expect: 100-continue` gets no 100 Continue)."""
        transport = conn.transport
        assert transport is not None
        if ex.answered:
            ex.body_cut = True
            return
        ex.head.add_done_callback(lambda _: conn.wake_writer())  # a wait for the upstream to read ends too
        try:
            async for chunk in body:
                if ex.answered or conn.closed:
                    ex.body_cut = True  # the upstream answered (or failed) before the body was sent: stop
                    break
                transport.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                if conn.write_paused:
                    await conn.drain(ex)
            else:
                if chunked and not conn.closed:
                    transport.write(b"0\r\n\r\n")
        except BodyCut:
            ex.body_cut = True
        except BaseException:
            ex.body_cut = True
            ex.release()
            raise

    def _idle(self) -> Connection | None:
        """The most recently used idle connection that is still clean (LIFO) and not idle for longer than the
        backend's `idle_timeout_s`, if any. A backend closes an idle keep-alive connection on its own clock;
        one that does it just as a request is written loses that request, and a POST is never sent twice:
        so a connection is given up well before the backend would (the older ones under it too: LIFO)."""
        if not self.idle:
            return None
        stale = time.monotonic() - self.backend.idle_timeout_s
        while self.idle:
            conn = self.idle.pop()
            conn.idle = False
            if conn.idle_since < stale:
                conn.close()
                for old in list(self.idle):  # LIFO: every one under it went idle even earlier
                    old.close()
                return None
            if conn.clean():
                return conn
            conn.close()
        return None

    async def _acquire(self) -> tuple[Connection, bool]:
        """A connection when none is idle: a new one, or one handed over by a finishing exchange."""
        conn = self._idle()
        if conn is not None:
            return conn, True
        if self.open >= self.limit:
            waiter: asyncio.Future[Connection | None] = asyncio.get_running_loop().create_future()
            self.waiters.append(waiter)
            try:
                handed = await asyncio.wait_for(waiter, self.backend.connect_timeout)
            except TimeoutError:
                raise Overflow(f"all {self.limit} connections to {self.backend.name} are busy") from None
            finally:
                if waiter in self.waiters:
                    self.waiters.remove(waiter)
            if handed is not None:
                return handed, True
            if self.open >= self.limit:
                return await self._acquire()
        return await self._connect(), False

    async def _connect(self) -> Connection:
        self.open += 1
        loop = asyncio.get_running_loop()
        conn = Connection(self)
        try:
            await asyncio.wait_for(
                loop.create_connection(
                    lambda: conn, self.host, self.port, ssl=self.ssl, server_hostname=self.host if self.ssl else None
                ),
                self.backend.connect_timeout,
            )
        except BaseException as exc:
            if not conn.closed:
                conn.closed = True
                self.forget(conn)
            if isinstance(exc, TimeoutError):
                raise UpstreamTimeout("upstream connect timed out") from None
            if isinstance(exc, OSError):
                raise ConnectFailed("upstream connection failed") from None
            raise
        return conn

    def release(self, conn: Connection, reusable: bool) -> None:
        # Checked for unread bytes just before reuse: here when a waiter takes it at once,
        # else by _acquire when it leaves the idle list (and data_received while idle).
        if not reusable or self.retired or (self.waiters and not conn.clean()):
            conn.close()
            return
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        conn.idle = True
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def forget(self, conn: Connection) -> None:
        """A connection closed: free its slot, and let one waiter open a new one."""
        self.open -= 1
        if conn.idle:
            conn.idle = False
            self.idle.remove(conn)
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def retire(self) -> None:
        """The backend left the config: close idle connections now, busy ones when they finish."""
        self.retired = True
        for conn in list(self.idle):
            conn.close()


async def once(body: bytes) -> AsyncIterator[bytes]:
    """A body already in memory, as the stream `Pool.exchange` sends."""
    yield body


def _replayable(method: str, headers: list[tuple[bytes, bytes]]) -> bool:
    """A bodyless request that is safe to send twice: GET, HEAD, OPTIONS, TRACE, or one carrying
    an `Idempotency-Key` (RFC draft-ietf-httpapi-idempotency-key-header; Go checks the same)."""
    return method in _SAFE_METHODS or any(n.lower() in _IDEMPOTENCY_KEYS for n, _ in headers)


def _head(method: str, target: bytes, headers: list[tuple[bytes, bytes]], chunked: bool) -> bytes:
    lines = [method.encode() + b" " + target + b" HTTP/1.1", *map(_FIELD, headers)]  # "name: value", made in C
    if chunked:
        lines.append(b"transfer-encoding: chunked")
    lines.append(b"\r\n")
    return b"\r\n".join(lines)
