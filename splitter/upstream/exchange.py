"""One request/response on one upstream connection.

An exchange is in one `Phase` (head, body, done, must-close, failed), changed only by `Exchange.move`
along a fixed table (h11's _state.py); httptools' callbacks live apart in `_ResponseParser`, which checks
the head and hands the exchange what it parsed. Splicing a body past Python is bypass.py's.
Header bytes pass byte-exact both ways. A response the server cannot relay faithfully
(control bytes, a status outside 100..599, a body on 204/HEAD, an unrequested 101) is a ProtocolFailed.

A request body stops going upstream as soon as the response head (or a failure) arrives: the body
stream is told (the head future's callbacks) and the connection is not reused. After
`Expect: 100-continue` the body waits for the upstream's 100 Continue, its answer, or CONTINUE_WAIT s.
"""

from __future__ import annotations

import asyncio
import enum
from collections import deque
from typing import Any

import httptools

from ..headers import relayable
from .connection import Connection
from .errors import Aborted, ConnectFailed, ProtocolFailed, UpstreamError, UpstreamTimeout, map_upstream_error

HIGH_WATER = 256 * 1024  # response bytes buffered before reading from the upstream pauses
CONTINUE_WAIT = 1.0  # s a body waits for the upstream's 100 Continue (Go's ExpectContinueTimeout, curl's default)
_FRAMING = frozenset([b"connection", b"content-length", b"transfer-encoding", b"x-request-id"])  # read from a head


class Phase(enum.Enum):
    """Where an exchange is (h11's _state.py: one table of moves, one method that makes them)."""

    HEAD = "head"  # waiting for the response head (100/102/103 heads pass by)
    BODY = "body"  # the head is in, body bytes are coming
    DONE = "done"  # the whole response is in
    MUST_CLOSE = "must_close"  # the whole response is in, but the connection saw a byte nobody asked for, or closed
    FAILED = "failed"  # `error` ended it (the upstream failed, timed out, or the client went away)

    __hash__ = object.__hash__  # members are singletons: hashed in C, not by Enum's hash(name) (per response)


# the members as module constants for the per-response code: an Enum attribute costs ~50 ns in 3.11, a global ~8
_HEAD_PHASE, _BODY_PHASE, _DONE_PHASE = Phase.HEAD, Phase.BODY, Phase.DONE
_MUST_CLOSE_PHASE, _FAILED_PHASE = Phase.MUST_CLOSE, Phase.FAILED
MOVES: dict[Phase, set[Phase]] = {
    Phase.HEAD: {Phase.BODY, Phase.DONE, Phase.FAILED},
    Phase.BODY: {Phase.DONE, Phase.MUST_CLOSE, Phase.FAILED},
    Phase.DONE: {Phase.MUST_CLOSE, Phase.FAILED},
    Phase.MUST_CLOSE: {Phase.MUST_CLOSE, Phase.FAILED},
    Phase.FAILED: {Phase.FAILED},
}
_COMPLETE = frozenset([_DONE_PHASE, _MUST_CLOSE_PHASE])
_SPOILED = frozenset([_MUST_CLOSE_PHASE, _FAILED_PHASE])  # the connection closes


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
    read by the proxy, released back to the pool. `phase` says where it is; only `move` changes it.

    The other fields are not states of the exchange: `done` is `phase` in DONE or MUST_CLOSE, kept by
    `move` for the per-chunk checks; `head_only`, `until_eof`, `keep_alive`, `content_length` are what
    the request and the answer's head say about framing; `aborted` (the client went away: it outlives a
    retry's `reset`) and `body_cut` (the request body was not all sent) are the request side's."""

    __slots__ = (
        "aborted", "body_cut", "buffered", "chunks", "conn", "connection_header", "content_length", "deadline",
        "done", "error", "expect_id", "head", "head_only", "headers", "keep_alive", "loop", "parser", "phase",
        "raw_left", "read_timeout", "status", "until_eof", "waiter",
    )  # fmt: skip

    def __init__(self, method: str, loop: asyncio.AbstractEventLoop | None = None) -> None:
        # the caller's loop when it has it: get_running_loop() costs a getpid() system call in 3.11
        self.loop = loop or asyncio.get_running_loop()
        self.aborted = False  # the client went away
        self.read_timeout = 60.0
        self.deadline = 0.0  # loop time a wait for the upstream times out (0: not waiting)
        self.expect_id: bytes | None = None  # the X-Request-ID the answer must carry (check_request_id)
        self.reset(method)

    def reset(self, method: str) -> None:
        """A fresh exchange (and parser) for another attempt of the same request."""
        self.phase = _HEAD_PHASE
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
        if to not in MOVES[self.phase]:
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
        self.move(_DONE_PHASE if self.head_only else _BODY_PHASE)
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
        self.move(_DONE_PHASE)
        self.wake()

    def stray(self) -> None:
        """A byte nobody asked for arrived after the whole response: the connection is never reused."""
        self.move(_MUST_CLOSE_PHASE)

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
        if self.raw_left == 0 and self.phase is _BODY_PHASE:
            self.move(_DONE_PHASE)
        self.wake()
        if spoiled and self.phase is not _FAILED_PHASE:
            self.stray()
        if self.phase in _SPOILED and self.conn is not None:
            self.conn.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.done:
            self.stray()
            return
        if self.head.done() and self.until_eof and not self.aborted and self.phase is _BODY_PHASE:
            self.move(_MUST_CLOSE_PHASE)  # a body delimited by the connection's close
            self.wake()
            return
        if self.head.done():
            self.fail(ProtocolFailed("upstream closed the connection mid-body"))
        else:
            self.fail(ConnectFailed("upstream closed the connection before responding"))

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.move(_FAILED_PHASE)
        if not self.head.done():
            self.head.set_exception(exc)
            self.head.exception()  # retrieved: nobody may be waiting yet
        self.wake()
        if self.conn is not None:
            self.conn.close()

    def waiting(self) -> None:
        """The proxy waits for the upstream from now on: at most `read_timeout` s (until `deadline` is reset).
        One timer per connection, re-armed for the time left when it fires, not one per wait: asyncio's
        TimerHandle is Python code, and making and cancelling one cost ~200 opcodes a request."""
        self.deadline = deadline = self.loop.time() + self.read_timeout
        conn = self.conn
        if conn is not None and conn.timer is None:
            conn.timer = self.loop.call_at(deadline, conn.check_deadline)

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
    def read_nowait(self) -> bytes | None:
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
            data = self.read_nowait()
            if data is not None:
                return data
            self.waiter = self.loop.create_future()
            self.waiting()
            try:
                await self.waiter
            finally:
                self.deadline = 0.0
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
            clean = self.phase is _DONE_PHASE and self.keep_alive and not self.body_cut and not self.chunks
            conn.pool.release(conn, clean)
        self.chunks.clear()  # an aborted download's buffered bytes go now, not at the next GC
        parser, self.parser = self.parser, None
        if parser is not None:
            parser.parser = None  # break the cycles exchange <-> adapter <-> httptools: freed by refcount, no GC work
        if self.error is not None:
            self.error.__traceback__ = None  # its frames hold body chunks: no cycle for the GC to find later

