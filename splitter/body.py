"""A request body as it streams upstream: one `BodyState`, moved only by `RequestBody.move`.

Before #37 this was five booleans (gone, too_large, timed_out, complete, answered) that could
hold together in ways nobody meant; the table below says which follow which. Two moves leave an
end state: a watchdog that fired (TIMED_OUT) loses to an upstream answer that came at the same time
(CUT: the answer goes out rather than a 408), and a body whose last piece was already on its way
when the answer came is still COMPLETE (nothing of it is left to drop).

The body timeout is one watchdog timer per body, not one per read: each wait for the
client's next bytes notes when it began, and the watchdog (re-armed for the time left)
cancels the wait once it has lasted `timeout` seconds. Waits for the upstream to take the
bytes (back-pressure) are not the client's fault and do not count.

A large Content-Length body not kept for a shadow is read past uvicorn once its first
piece is in: straight from the client socket into the bytes that go upstream (uvicorn's
path copies each byte twice more and wakes three coroutines per read). uvicorn's parser
then no longer knows where the next request starts, so the connection closes after this
response (`Connection: close`).

The upstream's answer (or failure) ends the body at once, even while it waits for the client
(`interrupt`, the same cancel as the watchdog's): the answer goes out, and `end` sees to the rest.
"""

from __future__ import annotations

import asyncio
import enum
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from . import bypass
from .bypass import ClientConnection
from .refused import Refused
from .upstream import Aborted, BodyCut

Receive = Callable[[], Awaitable[dict[str, Any]]]


class BodyState(enum.Enum):
    STREAMING = "streaming"  # more of it may come from the client
    COMPLETE = "complete"  # all of it came (and went upstream)
    GONE = "gone"  # the client went away mid-body
    TOO_LARGE = "too_large"  # over max_body_bytes: a 413
    TIMED_OUT = "timed_out"  # no bytes for the body timeout: a 408
    CUT = "cut"  # the upstream answered (or failed) first: no more of it goes

    __hash__ = object.__hash__  # members are singletons: hashed in C, not by Enum's hash(name)


_STREAMING, _COMPLETE, _GONE = BodyState.STREAMING, BodyState.COMPLETE, BodyState.GONE
_TOO_LARGE, _TIMED_OUT, _CUT = BodyState.TOO_LARGE, BodyState.TIMED_OUT, BodyState.CUT
BODY_MOVES: dict[BodyState, frozenset[BodyState]] = {
    _STREAMING: frozenset([_COMPLETE, _GONE, _TOO_LARGE, _TIMED_OUT, _CUT]),
    _COMPLETE: frozenset(),
    _GONE: frozenset(),
    _TOO_LARGE: frozenset(),
    _TIMED_OUT: frozenset([_CUT]),  # the answer wins over a watchdog that fired at the same time
    _CUT: frozenset([_COMPLETE]),  # its last piece was already on its way upstream when the answer came
}


class RequestBody:
    """The request body's bytes for the upstream (`chunks`), and what happened to it (`state`)."""

    __slots__ = (
        "client", "fd", "length", "limit", "receive", "received", "state", "task", "tee", "timeout", "waiting_since",
        "watchdog",
    )  # fmt: skip

    def __init__(
        self,
        receive: Receive,
        limit: int,
        timeout: float,
        tee: list[bytes] | None,
        length: int | None = None,
        client: ClientConnection | None = None,
    ) -> None:
        self.receive, self.limit, self.timeout, self.tee = receive, limit, timeout, tee
        self.length, self.client = length, client
        self.fd: int | None = None  # the client socket (a duplicate) while the body is read past uvicorn
        self.state = _STREAMING
        self.received = 0
        self.waiting_since: float | None = None
        self.watchdog: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[Any] | None = None

    def move(self, to: BodyState) -> None:
        """The one place the state changes."""
        if to not in BODY_MOVES[self.state]:
            raise RuntimeError(f"request body cannot move from {self.state.name} to {to.name}")
        self.state = to

    @property
    def complete(self) -> bool:
        return self.state is _COMPLETE

    @property
    def answered(self) -> bool:
        """The upstream answered (or failed): no more of the body goes."""
        return self.state is _CUT

    def client_gone(self) -> None:
        self.move(_GONE)

    async def chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        task = self.task = asyncio.current_task()
        assert task is not None
        self.watchdog = loop.call_later(self.timeout, self._watch, loop, task)
        try:
            while True:
                if self.state is _CUT:
                    raise BodyCut()
                self.waiting_since = loop.time()
                try:
                    message = await self.receive()
                except asyncio.CancelledError:
                    self.interrupted(task)
                    raise
                finally:
                    self.waiting_since = None
                if message["type"] == "http.disconnect":
                    self.move(_GONE)
                    raise Aborted()
                chunk = message.get("body", b"")
                if chunk:
                    self.count(chunk)
                    yield chunk
                if not message.get("more_body", False):
                    self.move(_COMPLETE)
                    return
                left = (self.length or 0) - self.received
                if left >= bypass.BODY_BYPASS_MIN and self.tee is None and self.client is not None:
                    self.fd = self.client.take_body(self.received)
                    if self.fd is not None:
                        async for chunk in bypass.read_past(self, self.fd, loop, task):
                            yield chunk
                        self.move(_COMPLETE)
                        return
        finally:
            self.stop()

    def count(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.limit:
            self.move(_TOO_LARGE)
            raise Refused(413, "too_large", f"request body over the limit of {self.limit} bytes")
        if self.tee is not None:
            self.tee.append(chunk)

    def interrupted(self, task: asyncio.Task[Any]) -> None:
        """A wait for the client was cancelled: by the upstream's answer, the body stops there (it wins
        over a watchdog that fired at the same time); by the watchdog, it is a 408."""
        state = self.state
        if (state is _CUT or state is _TIMED_OUT) and task.uncancel() == 0:
            if state is _CUT:
                raise BodyCut() from None
            raise Refused(408, "body_timeout", f"no request body bytes for {self.timeout:g} s") from None

    def interrupt(self, _: object = None) -> None:
        """The upstream answered (or failed): no more of the body goes; a wait for the client ends now."""
        was = self.state
        if was is not _STREAMING and was is not _TIMED_OUT:
            return
        self.move(_CUT)
        task = self.task
        if task is not None and self.waiting_since is not None and was is _STREAMING:
            task.cancel()  # the wait ends with CancelledError, turned into BodyCut by interrupted

    def stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        fd = self.fd
        if fd is not None and (self.state is _COMPLETE or self.state is _GONE):
            assert self.client is not None  # it handed out the fd
            self.fd = None
            os.close(fd)
            self.client.body_taken(whole=self.state is _COMPLETE)  # uvicorn reads again (to hear of a disconnect)

    def end(self, scope: dict[str, Any]) -> None:
        """No more of the body goes upstream; called before any answer goes out. If some of it is still
        to come (the upstream answered or failed first, a 408, a 413), that answer carries
        `Connection: close`, and once it is out the rest is read and dropped before the socket closes,
        or the kernel would reset the connection, answer and all (nginx's lingering close)."""
        self.stop()
        client, self.client = self.client, None  # once
        if self.state is _COMPLETE or self.state is _GONE or client is None:
            return
        fd, self.fd = self.fd, None
        if fd is None:  # uvicorn was reading the body: it stops
            cut = client.cut_body(scope)
            if cut is None:
                return  # its parser has the whole body already (the connection lives on), or it is gone
            fd, read = cut
        else:
            read = self.received
        left = None if self.length is None else self.length - read
        bypass.drop_rest(client, fd, left, self.timeout)

    def _watch(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any]) -> None:
        if self.state is not _STREAMING:
            self.watchdog = None
            return
        since = self.waiting_since
        left = self.timeout if since is None else since + self.timeout - loop.time()
        if left > 0:
            self.watchdog = loop.call_later(left, self._watch, loop, task)
            return
        self.watchdog = None
        self.move(_TIMED_OUT)
        task.cancel()  # the task is waiting in receive(): that wait ends with CancelledError
