"""Bytes that skip the Python copy path, and what the server's connection offers the proxy for it.

- A response body of known length goes from the upstream socket to the client socket inside the
  kernel (`splice`: splice(2) through a pipe), once the head is out and nothing of it is buffered.
- A large request body of known length is read from the client socket itself once its first piece
  is in (`read_past`): the protocol's path copies each byte twice more and wakes coroutines per read.
- A request body cut short (the answer came first) is read and dropped after the answer is out, then
  its socket closes (`drop_rest`: nginx's lingering close), or the kernel would reset the connection.

`ClientConnection` is the server's HTTP protocol as the proxy sees it (found in a request's scope
under CLIENT_HOOK); listen.http.HttpProtocol implements it.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import socket
import struct
import termios
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Protocol

from .upstream import Aborted, BodyCut, Exchange, Phase, ProtocolFailed, SendTimedOut, UpstreamError

CLIENT_HOOK = "splitter.client"  # scope extension: the server's connection, to hear of a disconnect at once
# A key of `http.response.start`: the app vouches that every field is relayable (the proxy: the upstream's
# fields were checked by its exchange, its own are made from checked parts), so the server does not check twice
RELAYABLE = "splitter.relayable"
SPLICE_MIN = 256 * 1024  # a Content-Length body with this much left moves socket to socket in the kernel
SPLICE_PIPE = 1024 * 1024  # the pipe between the two sockets (Linux's default pipe-max-size)
_SPLICE_FLAGS = getattr(os, "SPLICE_F_MOVE", 1) | getattr(os, "SPLICE_F_NONBLOCK", 2)
CAN_SPLICE = hasattr(os, "splice")
BODY_BYPASS_MIN = 1024 * 1024  # request body bytes still to come for reading them past the parser
BODY_READ = 256 * 1024  # the most one read of such a body takes
STALL_SAMPLES = 20  # looks a send timeout takes at whether the client took bytes: it cuts at most 5 % late
LINGER_MAX = 30.0  # seconds the rest of a body cut short may take to arrive (and be dropped) before its socket closes
_LINGERING: set[asyncio.Task[None]] = set()


class ClientConnection(Protocol):
    """The client's connection as the proxy uses it (listen.http.HttpProtocol, splitter's own HTTP/1.1 protocol)."""

    stalled: bool  # cut for taking no response bytes for the send timeout
    loop: asyncio.AbstractEventLoop  # the loop serving it (asking asyncio for it costs a system call in 3.11)

    def watch(self, hook: Callable[[], None] | None) -> bool:
        """Call `hook()` when the client goes away (None: stop watching). False if it already has."""

    async def splice_target(self, size: int) -> int | None:
        """The client socket's fd, to take `size` response body bytes past the protocol; None when it cannot."""

    def sent_outside(self, n: int) -> None:
        """`n` response body bytes went to the client past the protocol."""

    def cut_stalled(self) -> None:
        """The client took no response bytes for the send timeout: abort its connection."""

    def take_body(self, delivered: int) -> int | None:
        """A duplicate of the client socket's fd, to read the rest of the request body past the parser."""

    def body_taken(self, whole: bool = True) -> None:
        """The proxy is done reading the request body itself (`whole`: to its end)."""

    def cut_body(self, scope: Any) -> tuple[int, int] | None:
        """The parser stops reading the request body: (a duplicate fd to drop the rest from, bytes it parsed)."""

    def after_close(self, hook: Callable[[], None]) -> None:
        """Call `hook()` once the connection is closed."""


class BodyReading(Protocol):
    """A request body as `read_past` reads it (body.RequestBody)."""

    length: int | None
    received: int
    waiting_since: float | None

    @property
    def answered(self) -> bool:
        """The upstream answered: no more of the body goes."""

    def client_gone(self) -> None: ...

    def count(self, chunk: bytes) -> None: ...

    def interrupted(self, task: asyncio.Task[Any]) -> None: ...


# --- a response body spliced socket to socket ------------------------------------------------
def spliceable(ex: Exchange) -> bool:
    """The rest of the body is plain bytes of a known length, none buffered: it can skip Python."""
    conn = ex.conn
    left = ex.raw_left
    return (
        CAN_SPLICE and left is not None and left >= SPLICE_MIN and not ex.chunks and ex.phase is Phase.BODY
        and conn is not None and not conn.closed and conn.pool.ssl is None
    )  # fmt: skip


async def splice(ex: Exchange, fd: int, send_timeout: float = 60.0) -> None:
    """Move the rest of a Content-Length body from the upstream socket to socket `fd` inside
    the kernel (splice(2) through a pipe): no copy into Python, none out of it. `raw_left`
    counts down as bytes leave for `fd`; the same errors as read() (timeout, closed early,
    Aborted when the client goes), and SendTimedOut when `fd` takes no byte for `send_timeout`
    seconds. Out of file descriptors, it returns having moved nothing."""
    conn = ex.conn
    assert conn is not None and conn.transport is not None and ex.raw_left is not None
    fds: list[int] = []
    try:
        # add_reader/add_writer refuse a transport's own fd: wait on duplicates of the two sockets
        fds += (os.dup(conn.transport.get_extra_info("socket").fileno()), os.dup(fd))
        fds += os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:  # out of file descriptors: the body goes the ordinary way
        for f in fds:
            os.close(f)
        return
    try:
        fcntl.fcntl(fds[3], getattr(fcntl, "F_SETPIPE_SZ", 1031), SPLICE_PIPE)
    except OSError:
        pass  # over the user's pipe quota: the default 64 KiB pipe still works
    conn.pause_reading()  # the event loop must not read the bytes this moves
    try:
        await _move(ex, fds, send_timeout)
    except (UpstreamError, Aborted) as exc:
        ex.fail(exc)
        raise
    except OSError as exc:  # from the upstream socket: a reset mid-body
        cut = ProtocolFailed(f"upstream closed the connection mid-body ({type(exc).__name__})")
        ex.fail(cut)
        raise cut from exc
    finally:
        for f in fds:
            os.close(f)
    ex.move(Phase.DONE)
    conn.resume_reading()  # a byte past the declared length now shows, and the connection is not reused


async def _move(ex: Exchange, fds: list[int], send_timeout: float) -> None:
    """The splice loop: upstream socket -> pipe -> client socket until `raw_left` is 0."""
    src, dst, pipe_out, pipe_in = fds
    assert ex.raw_left is not None
    held = 0
    while ex.raw_left > 0:
        if ex.error is not None:
            raise ex.error
        if not held:
            try:
                held = os.splice(src, pipe_in, min(ex.raw_left, SPLICE_PIPE), flags=_SPLICE_FLAGS)
            except BlockingIOError:
                await _wait_fd(ex, src, write=False)
                continue
            if not held:
                raise ProtocolFailed("upstream closed the connection mid-body")
        try:
            n = os.splice(pipe_out, dst, held, flags=_SPLICE_FLAGS)
        except BlockingIOError:
            await _wait_fd(ex, dst, write=True, timeout=send_timeout)
            continue
        except OSError as exc:  # EPIPE, ECONNRESET: the client is gone
            raise Aborted() from exc
        held -= n
        ex.raw_left -= n


async def _wait_fd(ex: Exchange, fd: int, write: bool, timeout: float = 60.0) -> None:
    """Until `fd` is ready; a failure of the exchange (client gone, upstream closed) ends the wait
    and is raised. Waits to read are bounded by the backend's read timeout, waits to write
    (for the client to take bytes) by `timeout`."""
    loop = ex.loop
    fut = ex.waiter = loop.create_future()
    ready = fut.set_result
    timer: Stall | asyncio.TimerHandle
    if write:
        loop.add_writer(fd, lambda: fut.done() or ready(None))
        timer = Stall(loop, timeout, lambda: -unsent(fd), lambda: ex.fail(SendTimedOut()))
    else:
        loop.add_reader(fd, lambda: fut.done() or ready(None))
        timer = loop.call_later(ex.read_timeout, ex.time_out)
    try:
        await fut
    finally:
        timer.cancel()
        ex.waiter = None
        (loop.remove_writer if write else loop.remove_reader)(fd)
    if ex.error is not None:
        raise ex.error


class Stall:
    """Calls `cut()` once `taken()` (a count that grows while the peer takes bytes) has reached no new
    high for `timeout` s: nginx's send_timeout. It is sampled STALL_SAMPLES times a timeout, so the cut
    comes at most timeout/STALL_SAMPLES late; a single check at the end of each period saw bytes taken
    early in it and began a whole new period (a client cut after up to twice the timeout). Progress is
    what the kernel took, not the socket turning writable: the kernel may not call it writable again
    until a third of its buffer is free, and a slow reader must not be cut for that."""

    __slots__ = ("_best", "_cut", "_loop", "_since", "_taken", "_timeout", "_timer")

    def __init__(
        self, loop: asyncio.AbstractEventLoop, timeout: float, taken: Callable[[], int], cut: Callable[[], None]
    ) -> None:
        self._loop, self._timeout, self._taken, self._cut = loop, timeout, taken, cut
        self._best = taken()
        self._since = loop.time()  # when `taken` last reached a new high
        self._timer: asyncio.TimerHandle | None = loop.call_later(timeout / STALL_SAMPLES, self._check)

    def _check(self) -> None:
        now = self._loop.time()
        taken = self._taken()
        if taken > self._best:
            self._best, self._since = taken, now
        left = self._since + self._timeout - now
        if left <= 0:
            self._timer = None
            self._cut()
            return
        self._timer = self._loop.call_later(min(left, self._timeout / STALL_SAMPLES), self._check)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


def unsent(fd: int) -> int:
    """Bytes in a socket's send queue the peer has not yet acknowledged (SIOCOUTQ): 0 when unknown."""
    try:
        return int(struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0\0\0\0"))[0])
    except OSError:
        return 0


# --- a request body read past the parser, and the rest of one cut short ------------------------
async def read_past(
    body: BodyReading, fd: int, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]
) -> AsyncIterator[bytes]:
    """The rest of the body read from the client socket itself (`fd`, a duplicate of its fd)."""
    assert body.length is not None
    while body.received < body.length:
        if body.answered:
            raise BodyCut()
        try:
            chunk = os.read(fd, min(body.length - body.received, BODY_READ))
        except BlockingIOError:
            body.waiting_since = loop.time()
            try:
                await _readable(fd)
            except asyncio.CancelledError:
                body.interrupted(task)
                raise
            finally:
                body.waiting_since = None
            continue
        except OSError as exc:  # reset by the client
            body.client_gone()
            raise Aborted() from exc
        if not chunk:
            body.client_gone()  # the client closed mid-body
            raise Aborted()
        body.count(chunk)
        yield chunk


def drop_rest(client: ClientConnection, fd: int, left: int | None, timeout: float) -> None:
    """Once the client's connection is closed (its answer is out), read and drop the rest of its body from `fd`."""
    client.after_close(lambda: _spawn(_linger(fd, left, timeout)))


def _spawn(coro: Coroutine[Any, Any, None]) -> None:
    task = asyncio.get_running_loop().create_task(coro)
    _LINGERING.add(task)
    task.add_done_callback(_LINGERING.discard)


async def _linger(fd: int, left: int | None, timeout: float) -> None:
    """nginx's lingering close on `fd`, a duplicate of a client socket whose answer is out: shut its
    write side (the client sees the end), then read and drop up to `left` bytes (None: until the
    client closes), waiting at most `timeout` s for each read and LINGER_MAX s in all; then close it."""
    try:
        sock = socket.socket(fileno=fd)
        try:
            sock.shutdown(socket.SHUT_WR)
        finally:
            sock.detach()
        async with asyncio.timeout(LINGER_MAX):
            while left is None or left > 0:
                try:
                    dropped = len(os.read(fd, BODY_READ if left is None else min(left, BODY_READ)))
                except BlockingIOError:
                    await asyncio.wait_for(_readable(fd), timeout)
                    continue
                if not dropped:
                    return
                if left is not None:
                    left -= dropped
    except (OSError, TimeoutError):
        pass
    finally:
        os.close(fd)


async def _readable(fd: int) -> None:
    """Until `fd` (not a transport's own: a duplicate) has bytes or an EOF to read."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, _resolve, ready)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)
