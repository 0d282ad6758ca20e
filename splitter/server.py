"""Listening: sockets, the uvicorn server per worker, the multi-worker supervisor.

The HTTP protocol is uvicorn's httptools protocol with four things a proxy in
front of production needs and uvicorn does not do itself:
  - absolute-form targets (`GET http://host/x`) are flagged so the proxy answers 400;
  - a request head larger than MAX_HEAD_BYTES gets 431 (nginx's 4 x 8k);
  - a client has `header_timeout` seconds to send a whole request head (slowloris);
  - a client that takes no response bytes for `send_timeout` seconds is cut (nginx's
    send_timeout): timed while the transport's write buffer is full (`pause_writing`), and
    by the splice's own wait (`cut_stalled`).
Large bodies skip it: a download's is spliced socket to socket in the kernel
(`splice_target`, then uvicorn's length check is told: `sent_outside`, on the cycle of the
response it belongs to: uvicorn's `self.cycle` moves on to a pipelined request); an upload's is
read from the client socket by the proxy itself (`take_body`, then `Connection: close`).
An answer that goes out before its request body is all in (`cut_body`) closes the connection
after it, and the proxy reads and drops the rest first (`after_close`: nginx's lingering close).
It relies on the parser callbacks (`on_url`, `on_header`, `on_message_begin`,
`on_headers_complete`, `on_message_complete`), `send_400_response`, `pause_writing` and `resume_writing`
of uvicorn's HttpToolsProtocol and its cycle's `chunked_encoding`, `expected_content_length`, `keep_alive`,
`response_started`, `response_complete` and `disconnected`, and on its making each cycle by the module name
`RequestResponseCycle` (replaced by `_Cycle`, which builds the response head in one pass); uvicorn is pinned in
pyproject, and tests/integration/faults/test_bad_input.py, test_large_bodies.py, test_early_answers.py and test_units.py
fail loudly if they change.
"""

from __future__ import annotations

import asyncio
import gc
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import structlog
from uvicorn.protocols.http import httptools_impl
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol, RequestResponseCycle
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from .bypass import CLIENT_HOOK, ClientConnection, Stall, unsent
from .call import error_body
from .runtime import Settings
from .upstream import relayable

MAX_HEAD_BYTES = 32 * 1024
ABSOLUTE_FORM = "splitter.absolute_form"


class BindError(Exception):
    pass


class ProxyHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, header_timeout: float = 30.0, send_timeout: float = 60.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._send_timeout = send_timeout
        self._send_clock: Stall | None = None  # runs while the client's write buffer is full
        self.stalled = False  # cut for taking no response bytes for send_timeout seconds
        self._head_bytes = 0
        self._head_too_large = False
        self._header_timeout = header_timeout
        self._head_timer: asyncio.TimerHandle | None = None
        self._head_deadline: float | None = None  # loop time by which the request head arriving must be whole
        self._requests = 0
        self._draining = False
        self._in_trailers = False
        self._on_lost: Callable[[], None] | None = None
        self._body_parsed = 0  # request body bytes uvicorn's parser has handed on
        self._splicing: Any = None  # the cycle whose response body is being spliced (sent_outside counts on it)
        self._body_done = False  # uvicorn's parser has the whole body of its current request
        self._after_close: Callable[[], None] | None = None
        self._lost = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        self._out = _Coalescing(transport, self.loop)
        super().connection_made(self._out)  # type: ignore[arg-type]
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        if self._send_clock is not None:
            self._send_clock.cancel()
            self._send_clock = None
        self._lost = True
        super().connection_lost(exc)
        hook, self._on_lost = self._on_lost, None
        if hook is not None:
            hook()  # the proxy cancels the upstream request at once
        after, self._after_close = self._after_close, None
        if after is not None:
            after()

    def watch(self, hook: Callable[[], None] | None) -> bool:
        """Call `hook()` when the client goes away (None: stop watching). False if it already has."""
        if hook is not None and (self.transport is None or self.transport.is_closing()):
            return False
        self._on_lost = hook
        return True

    async def splice_target(self, size: int) -> int | None:
        """The client socket, to take `size` body bytes that bypass uvicorn (bypass.splice),
        once all written before them has reached the kernel; None when it cannot (a chunked or
        shorter response, a closing connection, a client not reading fast enough). uvicorn's
        `self.cycle` is the last request parsed: once a pipelined request is parsed it is that one,
        not the one responding; then this response takes the ordinary path. A request pipelined
        during the splice does not matter: the responding cycle is kept for `sent_outside`."""
        cycle, out = self.cycle, self._out
        if cycle is None or not cycle.response_started or cycle.response_complete:
            return None  # a pipelined request's cycle, not the responding one
        if cycle.chunked_encoding is not False or cycle.expected_content_length < size or out.is_closing():
            return None
        out.flush()
        if out.get_write_buffer_size():
            await asyncio.sleep(0)  # uvloop sends what it queued at the end of this loop step
            if out.get_write_buffer_size() or out.is_closing():
                return None
        sock = out.get_extra_info("socket")
        if sock is None:
            return None
        self._splicing = cycle
        return int(sock.fileno())

    def take_body(self, delivered: int) -> int | None:
        """A duplicate of the client socket's fd, for reading the rest of the request body past
        uvicorn; only when all it has parsed of the body (`delivered` bytes) reached the app.
        uvicorn stops reading, and the connection closes after the response: its parser would
        take the next request's bytes for this body."""
        cycle, out = self.cycle, self._out
        sock = out.get_extra_info("socket")
        if cycle is None or self._body_parsed != delivered or out.is_closing() or sock is None:
            return None
        try:
            fd = os.dup(sock.fileno())
        except OSError:
            return None  # out of file descriptors: uvicorn reads it
        out.pause_reading()
        cycle.keep_alive = False
        return fd

    def body_taken(self, whole: bool = True) -> None:
        """The proxy is done reading the body itself: uvicorn reads again, to hear of a disconnect.
        Not `whole`: the client closed or reset mid-body; no answer goes out (uvicorn's would be a
        plain-text 500 to a request that never arrived), the connection closes."""
        if whole:
            if not self._out.is_closing():
                self._out.resume_reading()
            return
        if self.cycle is not None:
            self.cycle.disconnected = True
        self._out.close()

    def cut_body(self, scope: Any) -> tuple[int, int] | None:
        """The app reads no more of the request body of `scope` (the answer came first): a duplicate of
        the client socket to read the rest from and drop it, and how many body bytes uvicorn parsed.
        uvicorn stops reading, and the connection closes after the response. None when its parser has
        the whole body already (nothing is left to drop: the connection lives on) or it is closing."""
        cycle, out = self.cycle, self._out
        sock = out.get_extra_info("socket")
        if scope is not self.scope or self._body_done or cycle is None or out.is_closing() or sock is None:
            return None
        cycle.keep_alive = False
        try:
            fd = os.dup(sock.fileno())
        except OSError:
            return None  # out of file descriptors: it closes without reading the rest
        out.pause_reading()
        return fd, self._body_parsed

    def after_close(self, hook: Callable[[], None]) -> None:
        """Call `hook()` once the connection is closed (all written before has reached the kernel), at once if it is."""
        if self._lost:
            hook()
        else:
            self._after_close = hook

    def on_body(self, body: bytes) -> None:
        self._body_parsed += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        self._body_done = True
        super().on_message_complete()

    def sent_outside(self, n: int) -> None:
        """`n` body bytes went to the client past uvicorn: counted against the Content-Length check
        of the response they belong to (the cycle splice_target handed them out for)."""
        cycle, self._splicing = self._splicing, None
        if cycle is not None:
            cycle.expected_content_length -= n

    def pause_writing(self) -> None:
        """The client is not taking bytes as fast as they come: it has send_timeout seconds to take some."""
        super().pause_writing()
        if self._send_clock is None:
            self._send_clock = Stall(self.loop, self._send_timeout, self._out.taken, self._send_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        clock, self._send_clock = self._send_clock, None
        if clock is not None:
            clock.cancel()

    def _send_stalled(self) -> None:
        """Also when the connection is closing: a close waits for the buffer to drain, which never comes."""
        self._send_clock = None
        if not self._lost:
            self.cut_stalled()

    def cut_stalled(self) -> None:
        """The client took no response bytes for send_timeout seconds (nginx's send_timeout): abort
        the connection; the proxy's `watch` hook frees the upstream connection. Counted and logged."""
        if self.stalled:
            return
        self.stalled = True
        _send_timed_out(self.app, self.client, self._send_timeout)
        cycle = self.cycle
        if cycle is not None and cycle.response_started and not cycle.response_complete:
            cycle.disconnected = True  # the app's return is not "an incomplete response" (connection_lost comes later)
        self._out.abort()

    def _arm_head_timer(self) -> None:
        """A request head starts arriving: it has header_timeout seconds to be whole. A deadline per
        head and one timer per connection that, when it fires early, waits again for the time left
        (not a timer made and cancelled per request)."""
        if self._head_deadline is None and self._header_timeout > 0:
            self._head_deadline = self.loop.time() + self._header_timeout
            if self._head_timer is None:
                self._head_timer = self.loop.call_later(self._header_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        self._head_deadline = None  # the head is whole: the timer, when it fires, finds no deadline

    def _stop_head_timer(self) -> None:
        """The connection is gone, or is the WebSocket protocol's now: its timer must not keep this object."""
        self._head_deadline = None
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def handle_websocket_upgrade(self) -> None:
        self._stop_head_timer()
        super().handle_websocket_upgrade()

    def _head_timed_out(self) -> None:
        self._head_timer = None
        deadline = self._head_deadline
        if deadline is None:
            return
        left = deadline - self.loop.time()
        if left > 0:
            self._head_timer = self.loop.call_later(left, self._head_timed_out)
            return
        self._head_deadline = None
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self.transport.close()  # no complete request head in time: drop it, like nginx's client_header_timeout

    def data_received(self, data: bytes) -> None:
        if self.cycle is None or self.cycle.response_complete:
            self._arm_head_timer()  # bytes of a new request head are arriving
        super().data_received(data)

    def on_message_begin(self) -> None:
        self._head_bytes = 0
        self._body_parsed = 0
        self._body_done = False
        self._in_trailers = False
        super().on_message_begin()
        client: ClientConnection = self  # what the proxy may call on it, checked by mypy
        extensions = self.scope.setdefault("extensions", {})
        extensions[CLIENT_HOOK] = client  # type: ignore[assignment]  # ASGI types extensions as dicts

    def on_url(self, url: bytes) -> None:
        if not self.url and not url.startswith(b"/") and url != b"*":
            self.scope.setdefault("extensions", {})[ABSOLUTE_FORM] = {}
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._in_trailers:
            return  # a chunked body's trailer fields: dropped, never merged into the request head (nginx does the same)
        self._head_bytes += len(name) + len(value) + 4  # _count's sum, inline: this runs per header
        if self._head_bytes > MAX_HEAD_BYTES:
            self._count(0)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._disarm_head_timer()
        self._in_trailers = True
        self._requests += 1
        super().on_headers_complete()
        if self._draining and self.cycle is not None:
            self.cycle.keep_alive = False

    def shutdown(self) -> None:
        """Graceful stop. uvicorn closes a connection with no request in progress at once; one
        accepted a moment ago has its first request on the way, so it gets a short grace instead
        of a reset (the rolling-restart test catches this)."""
        if self.cycle is None and self._requests == 0 and not self.transport.is_closing():
            self._draining = True
            self.loop.call_later(1.0, self._close_if_idle)
            return
        super().shutdown()

    def _close_if_idle(self) -> None:
        if (self.cycle is None or self.cycle.response_complete) and not self.transport.is_closing():
            self.transport.close()

    def _count(self, n: int) -> None:
        self._head_bytes += n
        if self._head_bytes > MAX_HEAD_BYTES:
            self._head_too_large = True
            raise ValueError("request head too large")  # the parser turns this into HttpParserError

    def send_400_response(self, msg: str) -> None:
        if not self._head_too_large:
            _count_rejected(self.app, "bad_request")
            super().send_400_response(msg)
            return
        _count_rejected(self.app, "headers_too_large")
        body = error_body("request header fields too large", None, None)
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\nconnection: close\r\n\r\n" + body
        )
        self.transport.close()


class _Done:
    """An awaitable that is already complete (awaiting it returns None at once, no coroutine made)."""

    __slots__ = ()

    def __await__(self) -> Any:
        return iter(())


_DONE = _Done()
_HEAD_FIELDS = frozenset([b"content-length", b"transfer-encoding", b"connection"])


class _Cycle(RequestResponseCycle):
    """uvicorn's request/response cycle with a cheaper response head, the proxy's per-request cost
    that uvicorn's `send` dominated: it checks each header name and value with a regex search of its
    own (a dozen per proxied answer) and compares each name three times. Here one pass checks them
    all (upstream.relayable: the characters uvicorn refuses) and only the three names that matter are
    looked at; the head is byte for byte uvicorn's (tests/unit/test_units.py compares them). The head is
    written at once and the completed `_DONE` returned: no coroutine. Everything else (body messages,
    a bad header, which uvicorn reports, its access log or default headers, a paused or gone client)
    is uvicorn's own `send`. Installed as httptools_impl.RequestResponseCycle, the name uvicorn's
    on_headers_complete makes each request's cycle by (uvicorn is pinned)."""

    def send(self, message: Any) -> Any:  # an awaitable, as an async def returns
        if (
            message["type"] != "http.response.start" or self.response_started or self.disconnected
            or self.flow.write_paused or self.access_log or self.default_headers
        ):
            return super().send(message)
        headers = message.get("headers", [])
        if not relayable(headers):
            return super().send(message)  # raises uvicorn's own error
        self.response_started = True
        self.waiting_for_100_continue = False
        status = message["status"]
        content = [STATUS_LINE[status]]
        close = False
        for name, value in headers:
            name = name.lower()
            if name in _HEAD_FIELDS:
                if name == b"content-length":
                    if self.chunked_encoding is None:
                        self.expected_content_length = int(value.decode())
                        self.chunked_encoding = False
                elif name == b"transfer-encoding":
                    if value.lower() == b"chunked":
                        self.expected_content_length = 0
                        self.chunked_encoding = True
                elif b"close" in [token.lower().strip() for token in value.split(b",")]:
                    self.keep_alive = False
                    close = True
            content += (name, b": ", value, b"\r\n")
        if not self.keep_alive and not close:
            content.append(b"connection: close\r\n")
        if self.chunked_encoding is None and self.scope["method"] != "HEAD" and status not in (204, 304):
            self.chunked_encoding = True  # neither Content-Length nor Transfer-Encoding
            content.append(b"transfer-encoding: chunked\r\n")
        content.append(b"\r\n")
        self.transport.write(b"".join(content))
        return _DONE


httptools_impl.RequestResponseCycle = _Cycle  # type: ignore[misc]


class _Coalescing:
    """The client's transport, with the writes of one event-loop step sent together: uvicorn
    writes a response head and its body separately, so a small answer took two send() calls
    (two loopback TCP segments); now it takes one. Pending writes go out when the step ends
    (`call_soon`), before a close, and in order; several are handed to the transport as one
    `writelines` (no copy). Everything else is the transport's own."""

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
        return self._handed - _waiting(self._transport)  # asked only while the client's write buffer is full

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:  # asked on every request: a method here, not a __getattr__ miss
        return self._transport.is_closing()

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _ReadGate:
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


class ProxyWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's WebSocket protocol, with the shutdown an operator expects: on SIGTERM no new
    upgrade is taken, and open connections keep running until the grace period ends, then get
    1001 (going away); uvicorn would close them at once with 1012. Control frames count against
    flow control: while the client's write buffer is over the high-water mark (pongs it does not
    read), nothing more is read from it (`_ReadGate`). The send timeout covers it as it covers HTTP:
    a client that takes no bytes for `send_timeout` s while its buffer is full is cut (`stalled`;
    a close frame would wait behind what it does not read, and its backend connection with it,
    for ever: websocket.py closes that at once). `heard` is when the client last sent a ping
    or a pong of its own (not the answer to uvicorn's keepalive ping): the proxy's idle timer
    counts it as activity. Relies on `handshake_complete`, `close_sent`, `disconnected`, `conn`, `queue`,
    `handle_ping`, `handle_pong` and `pending_ping_payload` of uvicorn's sans-I/O protocol (pinned
    with uvicorn; tests/integration/test_websocket.py's SIGTERM, ping flood and ping idle cases fail if they change)."""

    def __init__(self, *args: Any, graceful_timeout: float = 30.0, send_timeout: float = 60.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._graceful_timeout = graceful_timeout
        self._send_timeout = send_timeout
        self._send_clock: Stall | None = None  # runs while the client's write buffer is full
        self.stalled = False  # cut for taking no bytes for send_timeout seconds
        self.heard = 0.0  # time.monotonic() of the client's last ping or unsolicited pong

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(_ReadGate(transport))  # type: ignore[arg-type]  # a transport to uvicorn

    def pause_writing(self) -> None:
        super().pause_writing()
        self.transport.hold(True)  # type: ignore[attr-defined]  # a _ReadGate
        if self._send_clock is None:  # while paused nothing but a keepalive ping is written: less waiting is progress
            self._send_clock = Stall(self.loop, self._send_timeout, lambda: -_waiting(self.transport), self._stalled)

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
        _send_timed_out(self.app, self.client, self._send_timeout)
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


def _waiting(transport: Any) -> int:
    """Bytes handed to a client's transport that it has not taken: in the transport's buffer and in the
    kernel's send queue (which the kernel may hold until a third of it is free)."""
    sock = transport.get_extra_info("socket")
    return int(transport.get_write_buffer_size()) + (unsent(sock.fileno()) if hasattr(sock, "fileno") else 0)


def _send_timed_out(app: Any, client: Any, timeout: float) -> None:
    """A client (HTTP or WebSocket) cut for taking no bytes for the send timeout: counted and logged once."""
    _count_rejected(app, "send_timeout")
    peer = client[0] if client else None
    log = structlog.get_logger("splitter")
    log.warning("client took no response bytes: connection cut", client=peer, send_timeout=timeout)


def _count_rejected(app: Any, reason: str) -> None:
    runtime = getattr(app, "runtime", None)
    if runtime is not None:
        runtime.metrics.rejected.labels(reason).inc()


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BindError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, log_level: str, environment: str) -> int:
    proxy_sock = bind(settings.host, settings.port)
    admin_sock = bind(settings.admin_host, settings.admin_port)
    settings = replace(settings, port=proxy_sock.getsockname()[1], admin_port=admin_sock.getsockname()[1])
    log = structlog.get_logger("splitter")
    log.info(
        "listening", proxy=f"http://{settings.host}:{settings.port}",
        admin=f"http://{settings.admin_host}:{settings.admin_port}", workers=settings.workers,
        environment=settings.environment or environment,
    )
    if settings.workers == 1:
        run_worker(settings, [proxy_sock, admin_sock], log_level)
        return 0
    return supervise(settings, [proxy_sock, admin_sock], log_level)


def run_worker(settings: Settings, sockets: list[socket.socket], log_level: str, ready: Any = None) -> None:
    import functools

    import uvicorn

    from .app import create_app
    from .logs import setup_logging

    setup_logging(log_level, settings.access_log_path)
    if ready is not None:
        _die_with_parent()
    app = create_app(settings)
    # Start-up objects never become garbage: move them out of the collector's way, and
    # collect the young generation less often. A proxy allocates a few hundred short-lived
    # objects per request; the default threshold (700) means a collection every few
    # requests, which cost ~15% of throughput and most of the p99 in the benchmark.
    # Much higher (50,000) gains nothing more and lets cyclic garbage of aborted
    # requests (with their body chunks) pile up to tens of MiB between collections.
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 10, 10)
    _keep_freed_buffers()
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            loop="uvloop",
            interface="asgi3",  # App.__call__ returns the awaitable (a plain def: uvicorn would guess ASGI 2)
            http=functools.partial(  # type: ignore[arg-type]
                ProxyHttpProtocol, header_timeout=settings.header_timeout, send_timeout=settings.send_timeout
            ),
            ws=functools.partial(  # type: ignore[arg-type]
                ProxyWebSocketProtocol, graceful_timeout=settings.graceful_timeout, send_timeout=settings.send_timeout
            ),
            # a reload does not change it: needs a restart
            ws_max_size=app.runtime.snapshot.config.websocket.max_message_bytes,
            lifespan="on",
            server_header=False,
            proxy_headers=False,  # trusted_proxies in routes.yaml decides, not uvicorn
            date_header=False,
            access_log=False,
            log_config=None,
            log_level="warning",
            timeout_graceful_shutdown=int(settings.graceful_timeout),
            timeout_keep_alive=int(settings.keepalive_timeout),
        )
    )
    if ready is not None:  # tell the supervisor once this worker accepts connections

        def announce() -> None:
            deadline = time.monotonic() + 60
            while not server.started and time.monotonic() < deadline:
                time.sleep(0.05)
            ready.set()

        threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=sockets)
    if not server.started:
        sys.exit(3)


def _libc() -> Any:
    """The C library, for the two calls Python has no wrapper for (mallopt, prctl)."""
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _keep_freed_buffers() -> None:
    """Streaming allocates a bytes object per socket read (uvloop reads up to 256 KB at a time).
    glibc serves allocations that size with a fresh mmap and unmaps them on free, so every read
    paid page faults and page zeroing: a third of the CPU of a proxied 1 GiB download in perf.
    Serving them from the heap (freed memory reused, the heap trimmed past 16 MiB free) took a
    100 MiB download from ~1.1 to ~1.7 GB/s and an upload from ~0.45 to ~0.8 GB/s here. No-op
    where mallopt does not exist (musl, macOS)."""
    m_trim_threshold, m_mmap_threshold = -1, -3
    try:
        libc = _libc()
        libc.mallopt(m_mmap_threshold, 4 * 1024 * 1024)
        libc.mallopt(m_trim_threshold, 16 * 1024 * 1024)
    except (OSError, AttributeError):
        pass


def _die_with_parent() -> None:
    """A worker must not outlive its supervisor (a SIGKILLed supervisor would leave orphans holding
    the ports and serving an old config): the kernel sends SIGTERM when the parent dies, which
    closes the listeners at once and drains. gunicorn polls getppid() for the same reason."""
    pr_set_pdeathsig = 1
    parent = os.getppid()
    try:
        libc = _libc()
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()  # not Linux: poll instead
    if os.getppid() != parent or parent == 1:
        os.kill(os.getpid(), signal.SIGTERM)  # the parent died before the request was in place


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    os.kill(os.getpid(), signal.SIGTERM)


def supervise(settings: Settings, sockets: list[socket.socket], log_level: str) -> int:
    """N workers (spawned, like uvicorn's) share both listening sockets.

    SIGTERM/SIGINT: drain and stop every worker. SIGHUP: every worker reloads
    routes.yaml. SIGUSR2: rolling restart, one worker at a time, a new one
    started before the old one drains, so no request is refused.
    """
    import multiprocessing

    own_dir = not settings.multiprocess_dir
    mpdir = settings.multiprocess_dir or tempfile.mkdtemp(prefix="splitter-metrics-")
    for name in os.listdir(mpdir):
        if name.endswith(".db"):
            os.unlink(os.path.join(mpdir, name))
    # set (not read) for prometheus_client, which reads it at import in each worker
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = mpdir
    settings = replace(settings, multiprocess_dir=mpdir)
    ctx = multiprocessing.get_context("spawn")
    log = structlog.get_logger("splitter")
    state = {"stopping": False, "restart": False}

    def start(wait: bool = False) -> Any:
        ready = ctx.Event()
        p = ctx.Process(target=run_worker, args=(settings, sockets, log_level, ready), daemon=False)
        p.ready = ready  # type: ignore[attr-defined]  # the child unpickles it after start(): keep it alive here
        p.start()
        if wait:
            ready.wait(60)
        return p

    workers = [start() for _ in range(settings.workers)]

    def signal_all(sig: int) -> None:
        for p in workers:
            if p.is_alive() and p.pid:
                os.kill(p.pid, sig)

    def on_stop(signum: int, frame: Any) -> None:
        state["stopping"] = True
        signal_all(signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, lambda signum, frame: signal_all(signal.SIGHUP))
    signal.signal(signal.SIGUSR2, lambda signum, frame: state.update(restart=True))
    try:
        while not state["stopping"]:
            if state["restart"]:
                state["restart"] = False
                log.info("rolling restart of workers")
                for i, old in enumerate(list(workers)):
                    workers[i] = start(wait=True)  # accepting before the old one drains
                    if old.pid and old.is_alive():
                        os.kill(old.pid, signal.SIGTERM)
                        old.join()
                continue
            for i, p in enumerate(workers):
                if not p.is_alive() and not state["stopping"]:
                    if p.exitcode == 3:
                        log.error("worker failed to start; stopping")
                        on_stop(signal.SIGTERM, None)
                        break
                    log.warning("worker died; restarting", pid=p.pid, exitcode=p.exitcode)
                    workers[i] = start()
            time.sleep(0.2)
        for p in workers:
            p.join()
    finally:
        if own_dir:
            shutil.rmtree(mpdir, ignore_errors=True)
    return 0
