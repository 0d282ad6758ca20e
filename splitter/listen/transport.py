"""What the client-side protocols (HTTP and WebSocket) share about the client's transport: writes of one
loop step sent together, how many bytes the client has taken (the send timeout's measure), and the
count and log line of a client cut for taking none."""

from __future__ import annotations

import asyncio
from typing import Any

import structlog

from ..bypass import unsent


class Coalescing:
    """The client's transport, with the writes of one event-loop step sent together: a response head
    and its body are written separately, so a small answer took two send() calls (two loopback TCP
    segments); now it takes one. Pending writes go out when the step ends (`call_soon`), before a
    close, and in order; several are handed to the transport as one `writelines` (no copy)."""

    __slots__ = ("_handed", "_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None
        self._handed = 0  # bytes given to the transport (the send timeout's measure of progress)

    def write(self, data: bytes) -> None:
        if self._pending is None:
            self._pending = [data]
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(data)

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending is None or self._transport.is_closing():
            return
        if len(pending) == 1:
            self._handed += len(pending[0])
            self._transport.write(pending[0])
        else:
            self._handed += sum(map(len, pending))
            self._transport.writelines(pending)

    def taken(self) -> int:
        """Bytes the client has taken so far: handed over, less what still waits in the transport's buffer
        and in the kernel's send queue (which the kernel may hold until a third of it is free)."""
        return self._handed - waiting(self._transport)  # asked only while the client's write buffer is full

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_extra_info(self, name: str) -> Any:
        return self._transport.get_extra_info(name)


def waiting(transport: Any) -> int:
    """Bytes handed to a client's transport that it has not taken: in the transport's buffer and in the
    kernel's send queue (which the kernel may hold until a third of it is free)."""
    sock = transport.get_extra_info("socket")
    return int(transport.get_write_buffer_size()) + (unsent(sock.fileno()) if hasattr(sock, "fileno") else 0)


def send_timed_out(app: Any, client: Any, timeout: float) -> None:
    """A client (HTTP or WebSocket) cut for taking no bytes for the send timeout: counted and logged once."""
    count_rejected(app, "send_timeout")
    peer = client[0] if client else None
    log = structlog.get_logger("splitter")
    log.warning("client took no response bytes: connection cut", client=peer, send_timeout=timeout)


def count_rejected(app: Any, reason: str) -> None:
    runtime = getattr(app, "runtime", None)
    if runtime is not None:
        runtime.metrics.rejected.labels(reason).inc()


class _Drop:
    """The parser after an Upgrade that is not a WebSocket's: what the client sends next is dropped."""

    def feed_data(self, data: bytes) -> None:
        pass


DROP = _Drop()
