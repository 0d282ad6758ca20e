"""The WebSocket path: the same decision as HTTP (route, bucket, kill switch, force header,
overrides), then a relay of messages both ways.

An upgrade is refused (the backend's own refusal relayed, or a JSON 502/504 when it cannot
be reached) before the client's handshake is accepted; after it, messages are relayed one
at a time in each direction, so a slow reader slows its writer instead of growing a buffer
(the upstream client's max_queue and write_limit bound what is in flight). Close codes and
reasons pass through both ways; a message over `websocket.max_message_bytes` closes with
1009 (uvicorn's `ws_max_size` on the client side, the upstream client's `max_size` on the
other); no message either way and no ping or pong of the client's own (server.py's protocol
notes them; the client's answers to the server's keepalive pings do not count) for
`websocket.idle_timeout_s` closes with 1001. Extensions (permessage-deflate) are negotiated per hop.
A client the server cut for taking no bytes (--send-timeout, server.py) gets its backend connection
closed at once: the backend's close reply would wait behind what it sent meanwhile, unread.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from .bypass import CLIENT_HOOK
from .outcomes import Outcomes, log_websocket
from .plan import Planner
from .record import RequestRecord, error_body
from .refused import Refused
from .upstream import ProtocolFailed, UpstreamError, map_upstream_error

if TYPE_CHECKING:
    from .proxy import Receive, Scope, Send
    from .runtime import Runtime

_NOT_FORWARDED = frozenset(
    [
        b"host",
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-extensions",
        b"sec-websocket-protocol",
        b"content-length",
    ]
)
_NOT_RELAYED = frozenset([b"connection", b"upgrade", b"transfer-encoding", b"keep-alive", b"content-length"])
_RESERVED = frozenset([1004, 1005, 1006, 1015])  # codes that never travel in a close frame
DENIAL = "websocket.http.response"


def _sendable(code: int | None) -> bool:
    return code is not None and (1000 <= code <= 1014 or 3000 <= code <= 4999) and code not in _RESERVED


class Session:
    """One relayed connection: the client's ASGI side and the upstream client."""

    def __init__(
        self, call: RequestRecord, upstream: ClientConnection, receive: Receive, send: Send, idle_s: float, rt: Runtime
    ) -> None:
        self.call, self.upstream, self.receive, self.send = call, upstream, receive, send
        self.idle_s, self.rt = idle_s, rt
        self.client: Any = None  # server.py's protocol, when there is one: `heard` is the client's last ping or pong
        self.last = time.monotonic()
        self.up = self.down = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed_by: str | None = None
        self.error: str | None = None  # "send_timeout": the server cut the client
        assert call.role is not None
        self._up_counter = rt.metrics.ws_messages.labels(call.route_name, call.role, "upstream")
        self._down_counter = rt.metrics.ws_messages.labels(call.route_name, call.role, "downstream")

    async def run(self) -> None:
        tasks = [
            asyncio.ensure_future(self._client_to_upstream()),
            asyncio.ensure_future(self._upstream_to_client()),
            asyncio.ensure_future(self._idle()),
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            code, reason = (1001, "client took no bytes") if self._cut_short() else (1000, "")
            with contextlib.suppress(Exception):
                await self.upstream.close(code, reason)

    async def close(self, code: int, reason: str) -> None:
        """The proxy ends the connection (rollback, idle, shutdown): the client gets `code`."""
        if self.closed_by is not None:
            return
        self.closed_by, self.close_code, self.close_reason = "proxy", code, reason
        with contextlib.suppress(Exception):
            await self.send({"type": "websocket.close", "code": code, "reason": reason})
        with contextlib.suppress(Exception):
            await self.upstream.close(1001, "proxy closing")

    async def _client_to_upstream(self) -> None:
        while True:
            message = await self.receive()
            kind = message["type"]
            if kind == "websocket.receive":
                data = message.get("text")
                try:
                    await self.upstream.send(data if data is not None else message.get("bytes") or b"")
                except ConnectionClosed:
                    return
                self.up += 1
                self._up_counter.inc()
                self.last = time.monotonic()
            elif kind == "websocket.disconnect":
                if self._cut_short():
                    with contextlib.suppress(Exception):
                        await self.upstream.close(1001, "client took no bytes")
                    return
                code, reason = message.get("code", 1005), message.get("reason") or ""
                if self.closed_by is None:
                    self.closed_by, self.close_code, self.close_reason = "client", code, reason
                with contextlib.suppress(Exception):
                    await self.upstream.close(code if _sendable(code) else 1000, reason)
                return

    async def _upstream_to_client(self) -> None:
        code, reason = 1000, ""
        try:
            async for data in self.upstream:
                await self.send(
                    {"type": "websocket.send", "text": data}
                    if isinstance(data, str)
                    else {"type": "websocket.send", "bytes": data}
                )
                self.down += 1
                self._down_counter.inc()
                self.last = time.monotonic()
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == 1009:
                code, reason = 1009, "message too big"  # the upstream sent more than max_message_bytes
            elif exc.rcvd is not None:
                code, reason = exc.rcvd.code, exc.rcvd.reason
            else:
                code, reason = 1011, "upstream connection lost"
        else:
            if self.upstream.close_code is not None:
                code, reason = self.upstream.close_code, self.upstream.close_reason or ""
        if self.closed_by is not None:
            return  # the client or the proxy ended it
        self.closed_by, self.close_code, self.close_reason = "upstream", code, reason
        with contextlib.suppress(Exception):
            await self.send({"type": "websocket.close", "code": code if _sendable(code) else 1011, "reason": reason})

    def _cut_short(self) -> bool:
        """Whether the server cut the client for taking no bytes. Then the backend's close reply would come
        behind what it sent meanwhile, which nobody reads: its connection closes without waiting for one
        (close_timeout 0: the close frame goes, then the socket closes)."""
        if not getattr(self.client, "stalled", False):
            return False
        self.upstream.close_timeout = 0
        if self.error is None:
            self.error = "send_timeout"
            self.closed_by, self.close_code, self.close_reason = "proxy", 1001, "send timeout"
        return True

    async def _idle(self) -> None:
        while True:
            left = max(self.last, getattr(self.client, "heard", 0.0)) + self.idle_s - time.monotonic()
            if left <= 0:
                await self.close(1001, "idle timeout")
                return
            await asyncio.sleep(left)


class WebSockets:
    """The upgrade path, and the registry of open connections (for rollback and shutdown)."""

    def __init__(self, rt: Runtime, planner: Planner, outcomes: Outcomes) -> None:
        self.rt, self.planner, self.outcomes = rt, planner, outcomes
        self.open: dict[str, set[Session]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            call = self.planner.prepare(scope)
        except Refused as refusal:
            self.rt.metrics.rejected.labels(refusal.kind).inc()
            body = error_body(refusal.message, None, None)
            await _deny(scope, send, refusal.status, [(b"content-type", b"application/json")], body)
            return
        assert call.role is not None and call.backend is not None and call.handler is not None
        snap = self.rt.snapshot
        backend = snap.config.backends[call.backend]
        spec = snap.config.websocket
        metrics = self.rt.metrics
        scheme = "wss" if backend.url.startswith("https") else "ws"
        uri = scheme + backend.url[backend.url.index(":") :] + call.target.decode("latin-1")
        extra = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in call.headers if n not in _NOT_FORWARDED]
        try:
            upstream = await connect(
                uri,
                additional_headers=extra,
                subprotocols=scope.get("subprotocols") or None,
                open_timeout=backend.connect_timeout,
                max_size=spec.max_message_bytes,
                ping_interval=None,
                # extensions are per hop; deflate between proxy and backend costs CPU and ~300 KiB a connection
                compression=None,
                close_timeout=5,
                user_agent_header=None,
                proxy=None,
            )
        except InvalidStatus as exc:
            await self._refused(scope, send, call, exc)
            return
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            err = (
                map_upstream_error(exc)
                if isinstance(exc, OSError | TimeoutError)
                else ProtocolFailed(f"handshake: {exc}")
            )
            await self._failed(scope, send, call, err)
            return
        labels = (call.route_name, call.role, call.handler)
        accept_headers = [(b"x-splitter-handler", call.handler.encode()), (b"x-request-id", call.request_id.encode())]
        if call.set_cookie is not None:
            accept_headers.append((b"set-cookie", call.set_cookie))
        try:
            await send({"type": "websocket.accept", "subprotocol": upstream.subprotocol, "headers": accept_headers})
        except Exception:  # noqa: BLE001 - the client left during the handshake
            await upstream.close()
            return
        self.outcomes.upgrade(call, 101, "accepted")  # the handshake, as a request
        session = Session(call, upstream, receive, send, spec.idle_timeout_s, self.rt)
        session.client = scope.get("extensions", {}).get(CLIENT_HOOK)
        self.open.setdefault(call.route_name, set()).add(session)
        gauge = metrics.ws_open.labels(*labels)
        gauge.inc()
        try:
            await session.run()
        finally:
            gauge.dec()
            self.open[call.route_name].discard(session)
            call.status = 101
            _log_session(call, session)

    async def _refused(self, scope: Scope, send: Send, call: RequestRecord, exc: InvalidStatus) -> None:
        """The backend said no: the client gets its answer (status, headers, body)."""
        assert call.role is not None and call.handler is not None
        status = exc.response.status_code
        kind = "status_5xx" if status >= 500 else "refused"
        self.outcomes.upgrade(call, status, "refused", kind)
        headers = [
            (k.lower().encode("latin-1"), v.encode("latin-1"))
            for k, v in exc.response.headers.raw_items()
            if k.lower().encode("latin-1") not in _NOT_RELAYED
        ]
        headers.append((b"x-splitter-handler", call.handler.encode()))
        await _deny(scope, send, status, headers, bytes(exc.response.body or b""))
        log_websocket(call, status, error=kind, detail=call.detail)

    async def _failed(self, scope: Scope, send: Send, call: RequestRecord, err: UpstreamError) -> None:
        assert call.handler is not None
        self.outcomes.upgrade(call, err.status, "failed", err.kind)
        body = error_body(err.message, call.handler, call.request_id)
        await _deny(
            scope,
            send,
            err.status,
            [(b"content-type", b"application/json"), (b"x-splitter-handler", call.handler.encode())],
            body,
        )
        call.detail = err.detail
        log_websocket(call, err.status, error=err.kind, detail=err.detail)

    async def close_route(self, route: str, role: str, code: int, reason: str) -> int:
        """Close a route's open connections to one side (a rollback's `close_websockets`)."""
        sessions = [s for s in self.open.get(route, ()) if s.call.role == role]
        await asyncio.gather(*(s.close(code, reason) for s in sessions), return_exceptions=True)
        return len(sessions)


def _log_session(call: RequestRecord, session: Session) -> None:
    log_websocket(
        call, 101, duration_ms=round((time.perf_counter() - call.start) * 1000, 3), messages_up=session.up,
        messages_down=session.down, close_code=session.close_code, close_reason=session.close_reason,
        closed_by=session.closed_by, error=session.error,
    )  # fmt: skip


async def _deny(scope: Scope, send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    """Refuse before accepting: an HTTP answer where the server can send one, else a close (403)."""
    if DENIAL in scope.get("extensions", {}):
        await send(
            {
                "type": "websocket.http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "websocket.http.response.body", "body": body})
    else:
        await send({"type": "websocket.close", "code": 1008})
