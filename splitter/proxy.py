"""The hot path: the plan (plan.py: refuse, choose the backend, build the outbound head), then forward
and stream back.

Modelled on Go's httputil.ReverseProxy: the inbound request is never mutated, one function maps
upstream failures (upstream.map_upstream_error); once the response head is sent, a failure aborts the
connection instead of writing a second status. One per-request record (`RequestRecord`, like Go's ProxyRequest:
the inbound headers and the outbound target and headers) carries what the steps decide. Every exit
ends in `Outcomes.finish` (outcomes.py): the metrics, the windows and the canonical log line.

Nothing here does I/O but the upstream call: routing state is an immutable
snapshot replaced whole by reloads and override changes. Header bytes are never
re-encoded: names and values go upstream and back as the bytes that arrived.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from multidict import CIMultiDict

from . import bypass
from .body import RequestBody
from .bypass import CLIENT_HOOK, RELAYABLE, ClientConnection
from .config import Route, ShadowSpec
from .headers import dropped_downstream
from .outcomes import Outcomes
from .plan import Planner, begin, checked_target, plan_into
from .plan import normalize_path as normalize_path  # the framing suite's import
from .record import RequestRecord, error_body, ms
from .refused import Refused
from .shadow import MAX_BODY as SHADOW_MAX_BODY
from .shadow import Mirrored, Shadow
from .upstream import Aborted, Exchange, SendTimedOut, UpstreamError, map_upstream_error

if TYPE_CHECKING:
    from .runtime import Runtime

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


_ALLOW = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"



class Proxy:
    """Pure ASGI application for user traffic."""

    def __init__(self, runtime: Runtime, shadow: Shadow) -> None:
        self.rt = runtime
        self.shadow = shadow
        self.planner = Planner(runtime)
        self.outcomes = Outcomes(runtime)
        s = runtime.settings
        self.body_timeout = s.body_timeout
        self.send_timeout = s.send_timeout
        self.in_flight = 0
        # one process: the gauge reads the counter at scrape time; several: shared files, summed
        self.in_flight_gauge = runtime.metrics.track_in_flight(lambda: self.in_flight)

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The request's steps up to the upstream call run here, synchronously; what is returned
        (awaited by the server) forwards it, or answers it: one coroutine frame per request, not two."""
        if scope["type"] != "http":
            return _nothing()  # lifespan is the app's; WebSocket scopes go to websocket.py from the app
        call, hd, hosts = begin(scope)
        snap = self.rt.snapshot
        try:
            checked = checked_target(scope, call.method, call.path, hd, hosts, snap.config)
        except Refused as refusal:
            return self._refused(call, send, refusal)
        if checked is None:  # OPTIONS *: about the server itself, answered here
            return self._options(call, send)
        call.target, call.path = checked
        plan_into(self.planner, scope, call, hd, snap)
        return self._forward(scope, receive, send, call)

    async def _refused(self, call: RequestRecord, send: Send, refusal: Refused) -> None:
        call.unplanned()
        await self._answer_refusal(call, send, refusal)
        self.outcomes.finish(call)

    async def _options(self, call: RequestRecord, send: Send) -> None:
        call.unplanned()
        headers = [(b"allow", _ALLOW), (b"content-length", b"0"), (b"x-request-id", call.request_id.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        call.status = 200
        self.outcomes.finish(call)

    async def _answer_refusal(self, call: RequestRecord, send: Send, refusal: Refused) -> None:
        """The proxy's own 400, 408 or 413 (the caller then ends the request in Outcomes.finish)."""
        call.refused = True
        call.status = refusal.status
        call.error = refusal.kind
        rid = call.client_request_id or call.request_id
        await _send_error(send, refusal.status, refusal.message, call.handler, rid)

    # --- forward and stream back ------------------------------------------------------------
    def _exchange_parts(
        self, scope: Scope, receive: Receive, call: RequestRecord
    ) -> tuple[Exchange, RequestBody | None, Any, bool]:
        """What one exchange needs, made before it starts: the exchange, the request body (None: none),
        the client connection (to hear of a disconnect), and whether a shadow copy is kept."""
        hd = call.inbound
        route = call.route
        chunked = b"transfer-encoding" in hd
        has_body = chunked or hd.get(b"content-length", b"0") != b"0"
        shadowing = (
            route is not None and route.shadow is not None and b"x-splitter-backend" not in hd and call.reason != "kill"
        ) and _wants_shadow(route.shadow, call.method, hd)
        client: ClientConnection | None = scope.get("extensions", {}).get(CLIENT_HOOK)
        body = None
        if has_body:
            length = None if chunked else int(hd.get(b"content-length", b"0"))
            limit = self.rt.snapshot.config.max_body_bytes
            body = RequestBody(receive, limit, self.body_timeout, [] if shadowing else None, length, client)
        ex = Exchange(call.method, client.loop if client is not None else None)
        if client is not None and not client.watch(ex.abort):
            ex.abort()  # already gone
        return ex, body, client, shadowing

    async def _forward(self, scope: Scope, receive: Receive, send: Send, call: RequestRecord) -> None:
        """The exchange with the upstream and the answer relayed (one coroutine: this is the hot path);
        every exit leaves its outcome on the call, and the request ends in _finish."""
        ex, body, client, shadowing = self._exchange_parts(scope, receive, call)
        tee: list[bytes] | None = [] if shadowing else None
        assert call.backend is not None
        pool = self.rt.pool(self.rt.snapshot.config.backends[call.backend])
        self.in_flight += 1
        gauge = self.in_flight_gauge
        if gauge is not None:
            gauge.inc()
        try:
            try:
                chunks = body.chunks() if body is not None else None
                chunked = b"transfer-encoding" in call.inbound
                headers = call.headers if body is None else _with_body(call, ex, body)
                await pool.send_request(ex, call.method, call.target, headers, chunks, chunked)
            finally:
                if body is not None:
                    body.end(scope)  # before any answer: one that leaves the body unread closes the connection
            if body is not None:
                call.bytes_in = body.received
            call.upstream_ms = ms(time.perf_counter() - call.start)
            first = ex.read_nowait()  # the body bytes that came with the head, without a wait (the common case)
            if first is None:
                first = await ex.read()
            call.status = ex.status
            head = _downstream_headers(ex, call)
            await send({"type": "http.response.start", "status": ex.status, "headers": head, RELAYABLE: True})
            call.head_sent = True
            call.bytes_out = len(first)
            if tee is not None:
                tee.append(first)
            if ex.done and not ex.chunks:
                await send({"type": "http.response.body", "body": first, "more_body": False})
            else:
                await send({"type": "http.response.body", "body": first, "more_body": True})
                # None when whole; else the head is out: the connection aborts rather than pretend it is whole
                call.error = await self._stream(ex, send, call, tee, client)
        except Aborted:  # the client went away before the answer: the upstream request was cancelled
            call.status, call.error = 499, "client_abort"
        except Refused as refusal:  # the request body broke a limit: not the backend's fault
            await self._answer_refusal(call, send, refusal)
        except UpstreamError as exc:  # mapped: the head is not sent yet
            call.status, call.error, call.detail = exc.status, exc.kind, exc.detail
            await _send_error(send, exc.status, exc.message, call.handler, call.client_request_id or call.request_id)
        finally:
            if client is not None:
                client.watch(None)
            if body is not None:
                body.stop()
            ex.release()
            self.in_flight -= 1
            if gauge is not None:
                gauge.dec()
        if shadowing and call.error is None and not call.refused and (body is None or body.complete):
            assert call.route is not None  # never a shadow request with half a body, nor after a failure
            self._shadow(call.route, call, body, ex, tee)
        self.outcomes.finish(call)

    async def _stream(
        self, ex: Exchange, send: Send, call: RequestRecord, tee: list[bytes] | None, client: ClientConnection | None
    ) -> str | None:
        """Copy the rest of the body; returns None when whole, else why it stopped. A large body of
        known length, not kept for a shadow comparison, goes socket to socket in the kernel."""
        while True:
            try:
                if tee is None and client is not None and bypass.spliceable(ex):
                    left = ex.raw_left or 0
                    fd = await client.splice_target(left)
                    if fd is not None:
                        try:
                            await bypass.splice(ex, fd, self.send_timeout)
                        except SendTimedOut:
                            client.cut_stalled()
                            raise
                        finally:
                            moved = left - (ex.raw_left or 0)
                            call.bytes_out += moved
                            client.sent_outside(moved)
                chunk = await ex.read()
            except Aborted:
                return "send_timeout" if client is not None and client.stalled else "client_abort"
            except Exception as exc:  # noqa: BLE001 - mapped to an error kind
                return map_upstream_error(exc).kind
            if not chunk:
                break
            if tee is not None and len(tee) <= 1024:  # more chunks than that: too big to compare
                tee.append(chunk)
            call.bytes_out += len(chunk)
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        if ex.aborted:
            return "client_abort"
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        return None

    def _shadow(
        self, route: Route, call: RequestRecord, body: RequestBody | None, ex: Exchange, resp_tee: list[bytes] | None
    ) -> None:
        complete = resp_tee is not None and len(resp_tee) <= 1024 and sum(map(len, resp_tee)) <= SHADOW_MAX_BODY
        response = (ex.status, _multidict(ex.headers), b"".join(resp_tee or ())) if complete else None
        req_body = b"".join(body.tee) if body is not None and body.tee is not None else None
        if req_body is not None and len(req_body) > SHADOW_MAX_BODY:
            response = None
        assert call.role is not None
        target = call.target.decode("latin-1")
        mirrored = Mirrored(route, call.role, call.method, target, _multidict(call.headers), req_body, response)
        self.shadow.launch(mirrored)

def _with_body(call: RequestRecord, ex: Exchange, body: RequestBody) -> list[tuple[bytes, bytes]]:
    """The outbound headers of a request with a body: its end is tied to the answer (or a failure), and a
    client's `Expect: 100-continue` is passed on, so the body waits for the upstream's go-ahead."""
    ex.head.add_done_callback(body.interrupt)  # the answer ends the body at once
    if call.inbound.get(b"expect", b"").lower() == b"100-continue":
        return [*call.headers, (b"expect", b"100-continue")]
    return call.headers


def _downstream_headers(ex: Exchange, call: RequestRecord) -> list[tuple[bytes, bytes]]:
    """The answer's head for the client: the upstream's fields less hop-by-hop ones, its length as the
    exchange parsed it (none on 204/304: it would describe the representation, not this empty body; none
    for a chunked or until-EOF body, which the server frames itself), and the proxy's own fields."""
    drop = dropped_downstream(ex.connection_header)
    headers = [h for h in ex.headers if h[0] not in drop]  # names arrive lower-cased from the exchange
    length = ex.content_length
    if length is not None and ex.status != 204 and ex.status != 304:
        headers.append((b"content-length", b"%d" % length))
    headers.append((b"x-splitter-handler", (call.handler or "").encode()))
    headers.append((b"x-request-id", (call.client_request_id or call.request_id).encode()))
    if call.set_cookie is not None:
        headers.append((b"set-cookie", call.set_cookie))
    return headers


def _multidict(headers: list[tuple[bytes, bytes]]) -> CIMultiDict[str]:
    return CIMultiDict((n.decode("latin-1"), v.decode("latin-1")) for n, v in headers)


def _wants_shadow(shadow: ShadowSpec, method: str, hd: dict[bytes, bytes]) -> bool:
    if method not in shadow.methods or b"transfer-encoding" in hd:
        return False
    cl = hd.get(b"content-length")
    if cl is not None and (not cl.isdigit() or int(cl) > SHADOW_MAX_BODY):
        return False
    return shadow.percent >= 100 or random.random() * 100 < shadow.percent


async def _nothing() -> None:
    """A scope type the proxy does not serve (lifespan is the app's)."""


async def _send_error(send: Send, status: int, message: str, handler: str | None, request_id: str) -> None:
    body = error_body(message, handler, request_id)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    if handler:
        headers.append((b"x-splitter-handler", handler.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
