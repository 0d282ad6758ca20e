"""The WebSocket protocol: uvicorn's sans-I/O one, which listen/http.py hands an upgrade to, with the
shutdown, flow control and send timeout a proxy needs (ProxyWebSocketProtocol says which)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from uvicorn.config import Config
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from uvicorn.server import ServerState

from ..bypass import CLIENT_HOOK, Stall
from .transport import send_timed_out, waiting


def wants_websocket(headers: list[tuple[bytes, bytes]]) -> bool:
    """`Connection` names `upgrade` and `Upgrade` is `websocket` (uvicorn's test, the last of each counts)."""
    connection: list[bytes] = []
    upgrade = None
    for name, value in headers:
        if name == b"connection":
            connection = [token.lower().strip() for token in value.split(b",")]
        elif name == b"upgrade":
            upgrade = value.lower()
    return upgrade == b"websocket" and b"upgrade" in connection


def request_head(method: bytes, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    head = [method, b" ", target, b" HTTP/1.1\r\n"]
    for name, value in headers:
        head += (name, b": ", value, b"\r\n")
    head.append(b"\r\n")
    return b"".join(head)


def hand_over(
    config: Config, server_state: ServerState, app_state: dict[str, Any], transport: asyncio.Transport, head: bytes
) -> None:
    """The connection becomes the WebSocket protocol's, as uvicorn's own HTTP protocols hand it over: a new
    `config.ws_protocol_class` gets the transport and the request head (it parses the handshake itself)."""
    protocol = config.ws_protocol_class(  # type: ignore[call-arg, misc]
        config=config, server_state=server_state, app_state=app_state
    )
    protocol.connection_made(transport)
    protocol.data_received(head)
    transport.set_protocol(protocol)


class ProxyWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, with the shutdown an operator expects: on SIGTERM no new
    upgrade is taken, and open connections keep running until the grace period ends, then get
    1001 (going away); uvicorn would close them at once with 1012. Control frames count against
    flow control: while the client's write buffer is over the high-water mark (pongs it does not
    read), nothing more is read from it (`_ReadsWaitForWrites`). The send timeout covers it as it covers HTTP:
    a client that takes no bytes for `send_timeout` s while its buffer is full is cut (`stalled`;
    a close frame would wait behind what it does not read, and its backend connection with it,
    for ever: websocket.py closes that at once). `heard` is when the client last sent a ping
    or a pong of its own (not the answer to uvicorn's keepalive ping): the proxy's idle timer
    counts it as activity. Relies on `handshake_complete`, `close_sent`, `disconnected`, `conn`, `queue`,
    `handle_ping`, `handle_pong` and `pending_ping_payload` of uvicorn's sans-I/O protocol (public names;
    `pending_ping_payload` since uvicorn 0.44, pyproject's lower bound; tests/integration/test_websocket.py's
    SIGTERM, ping flood and ping idle cases fail if they change)."""

    def __init__(self, *args: Any, graceful_timeout: float = 30.0, send_timeout: float = 60.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._graceful_timeout = graceful_timeout
        self._send_timeout = send_timeout
        self._send_clock: Stall | None = None  # runs while the client's write buffer is full
        self.stalled = False  # cut for taking no bytes for send_timeout seconds
        self.heard = 0.0  # time.monotonic() of the client's last ping or unsolicited pong

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(_ReadsWaitForWrites(transport))  # type: ignore[arg-type]  # a transport to uvicorn

    def pause_writing(self) -> None:
        super().pause_writing()
        self.transport.hold(True)  # type: ignore[attr-defined]  # a _ReadsWaitForWrites
        if self._send_clock is None:  # while paused nothing but a keepalive ping is written: less waiting is progress
            self._send_clock = Stall(self.loop, self._send_timeout, lambda: -waiting(self.transport), self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self.transport.hold(False)  # type: ignore[attr-defined]
        clock, self._send_clock = self._send_clock, None
        if clock is not None:
            clock.cancel()

    def _stalled(self) -> None:
        """No byte taken for send_timeout seconds: abort (a close would wait for the buffer to drain). uvicorn's
        connection_lost ends the app's receive and send; counted and logged as HTTP's cut_stalled."""
        self._send_clock = None
        if self.disconnected:
            return
        self.stalled = True
        send_timed_out(self.app, self.client, self._send_timeout)
        self.transport.abort()

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        if not self.close_sent:  # accepted by uvicorn: the app runs with this scope
            self.scope["extensions"][CLIENT_HOOK] = self  # type: ignore[assignment]  # ASGI types extensions as dicts

    def connection_lost(self, exc: Exception | None) -> None:
        if self._send_clock is not None:
            self._send_clock.cancel()
            self._send_clock = None
        super().connection_lost(exc)
        scope: Any = getattr(self, "scope", None)  # uvicorn sets it once it takes the handshake
        if scope is not None:
            scope["extensions"].pop(CLIENT_HOOK, None)  # scope <-> protocol: a cycle, left to the (rare) gc otherwise

    def handle_ping(self) -> None:
        self.heard = time.monotonic()
        super().handle_ping()

    def handle_pong(self, event: Any) -> None:
        if self.pending_ping_payload is None or bytes(event.data) != self.pending_ping_payload:
            self.heard = time.monotonic()  # the client's own heartbeat, not its answer to ours
        super().handle_pong(event)

    def shutdown(self) -> None:
        if self.close_sent or not self.handshake_complete:
            super().shutdown()
            return
        self.loop.call_later(max(0.0, self._graceful_timeout - 0.5), self._going_away)

    def _going_away(self) -> None:
        if self.close_sent or self.transport.is_closing():
            return
        self.queue.put_nowait({"type": "websocket.disconnect", "code": 1001, "reason": "server shutting down"})
        self.conn.send_close(1001, "server shutting down")
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.loop.call_later(2.0, self.transport.close)  # the client's close frame, or not


class _ReadsWaitForWrites:
    """A WebSocket client's transport, whose reading stays paused while `held` (its write buffer is
    over the high-water mark) even when uvicorn resumes it (its queue emptied): uvicorn answers
    each ping at once, so a client that pings and never reads would grow the buffer without bound."""

    __slots__ = ("_transport", "_wanted", "held")

    def __init__(self, transport: Any) -> None:
        self._transport = transport
        self._wanted = True  # uvicorn's own wish: it pauses while the app has a message to take
        self.held = False

    def pause_reading(self) -> None:
        self._wanted = False
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._wanted = True
        if not self.held:
            self._transport.resume_reading()

    def hold(self, held: bool) -> None:
        self.held = held
        if self._transport.is_closing():
            return
        if held:
            self._transport.pause_reading()
        elif self._wanted:
            self._transport.resume_reading()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)
