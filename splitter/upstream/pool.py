"""Connections to one backend: reused LIFO, at most `max_connections` open, idle ones given up before the
backend would close them (`idle_timeout_s`), and a request sent once more only when that is safe.

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
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

from ..config import Backend
from .connection import Connection, ConnState
from .errors import Aborted, BodyCut, ConnectFailed, Overflow, UpstreamTimeout
from .exchange import CONTINUE_WAIT, Exchange

_SAFE_METHODS = frozenset(["GET", "HEAD", "OPTIONS", "TRACE"])
_IDEMPOTENCY_KEYS = frozenset([b"idempotency-key", b"x-idempotency-key"])
_EXPECT_LINE = b"\r\nexpect: 100-continue\r\n"  # as the proxy writes it into a request head
_FIELD = b": ".join  # (name, value) -> b"name: value"
_ACTIVE, _IDLE, _CLOSED = ConnState.ACTIVE, ConnState.IDLE, ConnState.CLOSED


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

    async def send_request(
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
                    ex.waiting()
                    try:
                        await ex.head
                    finally:
                        ex.deadline = 0.0
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
                    await conn.drain(ex.head)
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
            conn.move(_ACTIVE)
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
                conn.move(_CLOSED)
                self.forget(conn, False)
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
        conn.move(_IDLE)
        conn.idle_since = time.monotonic()
        self.idle.append(conn)

    def forget(self, conn: Connection, was_idle: bool) -> None:
        """A connection closed: free its slot, and let one waiter open a new one."""
        self.open -= 1
        if was_idle:
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
    """A body already in memory, as the stream `Pool.send_request` sends."""
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
