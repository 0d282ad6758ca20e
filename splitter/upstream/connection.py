"""One upstream connection: its lifecycle as one `ConnState`, moved only by `Connection.move` (httpcore's
HTTPConnectionState, h11's one mover). Flow control (the loop paused reading or writing) is kept apart on
purpose: a connection is paused or not in any of its states, so folding it in would multiply them.

Before #37 the state was four booleans (closed, idle, and the two pauses); a closed connection could
still look idle until `forget` ran. Now CLOSED is final, and the idle list holds exactly the IDLE ones.
"""

from __future__ import annotations

import asyncio
import enum
import select
import ssl
from typing import Any, Protocol

_POLL_DIRTY = select.POLLIN | select.POLLPRI | select.POLLERR | select.POLLHUP | getattr(select, "POLLRDHUP", 0)


class ConnState(enum.Enum):
    CONNECTING = "connecting"  # create_connection is under way
    ACTIVE = "active"  # an exchange (or the caller about to start one) holds it
    IDLE = "idle"  # in its pool's idle list, kept alive for the next request
    CLOSED = "closed"  # gone: never used again

    __hash__ = object.__hash__  # members are singletons: hashed in C, not by Enum's hash(name) (twice a request)


_CONNECTING, _ACTIVE, _IDLE, _CLOSED = ConnState.CONNECTING, ConnState.ACTIVE, ConnState.IDLE, ConnState.CLOSED
CONN_MOVES: dict[ConnState, frozenset[ConnState]] = {
    _CONNECTING: frozenset([_ACTIVE, _CLOSED]),
    _ACTIVE: frozenset([_IDLE, _CLOSED]),
    _IDLE: frozenset([_ACTIVE, _CLOSED]),
    _CLOSED: frozenset(),
}


class Owner(Protocol):
    """The pool, as a connection reports to it (pool.Pool)."""

    ssl: ssl.SSLContext | None

    def release(self, conn: Connection, reusable: bool) -> None: ...

    def forget(self, conn: Connection, was_idle: bool) -> None: ...


class Reader(Protocol):
    """The exchange a connection feeds (exchange.Exchange)."""

    deadline: float  # loop time its wait for the upstream times out; 0: not waiting

    def feed(self, data: bytes) -> None: ...

    def time_out(self) -> None: ...

    def connection_lost(self, exc: BaseException | None) -> None: ...


class Connection(asyncio.Protocol):
    def __init__(self, pool: Owner) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.exchange: Reader | None = None
        self.poller: Any = None
        self.state = _CONNECTING
        self.idle_since = 0.0  # monotonic time it went back to the pool
        self.reading_paused = False
        self.write_paused = False
        self.drain_waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None  # fires at or before its exchange's deadline

    def move(self, to: ConnState) -> None:
        """The one place the state changes."""
        if to not in CONN_MOVES[self.state]:
            raise RuntimeError(f"upstream connection cannot move from {self.state.name} to {to.name}")
        self.state = to

    @property
    def closed(self) -> bool:
        return self.state is _CLOSED

    def check_deadline(self) -> None:
        """The timer fired: the exchange's wait times out if its deadline passed, else the timer waits for
        the time left. A wait that began later has a later deadline, so the timer never fires late."""
        self.timer = None
        ex = self.exchange
        if ex is None or not ex.deadline or self.state is _CLOSED:
            return  # nobody waits: the next wait arms it again
        loop = asyncio.get_running_loop()
        if ex.deadline > loop.time():
            self.timer = loop.call_at(ex.deadline, self.check_deadline)
            return
        ex.time_out()

    def connection_made(self, transport: Any) -> None:  # uvloop's transports do not subclass asyncio's
        self.transport = transport
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self.poller = select.poll()
            self.poller.register(sock.fileno(), _POLL_DIRTY)
        if self.state is _CONNECTING:
            self.move(_ACTIVE)

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

    async def drain(self, answered: asyncio.Future[None]) -> None:
        """Wait while the upstream reads slower than the body arrives; stop waiting once it has answered."""
        while self.write_paused and self.state is not _CLOSED and not answered.done():
            self.drain_waiter = asyncio.get_running_loop().create_future()
            await self.drain_waiter

    def pause_reading(self) -> None:
        if not self.reading_paused and self.transport is not None and self.state is not _CLOSED:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and self.transport is not None and self.state is not _CLOSED:
            self.reading_paused = False
            self.transport.resume_reading()

    def clean(self) -> bool:
        """Nothing arrived that the event loop has not delivered yet (no bytes, no FIN)."""
        if self.state is _CLOSED:
            return False
        return self.poller is None or not self.poller.poll(0)

    def close(self) -> None:
        if self.transport is not None and self.state is not _CLOSED:
            self.transport.close()
        self._gone()

    def _gone(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if self.state is not _CLOSED:
            was_idle = self.state is _IDLE
            self.move(_CLOSED)
            self.pool.forget(self, was_idle)
