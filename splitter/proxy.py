"""The hot path: pick a backend, build the outbound request, stream both ways.

Modelled on Go's httputil.ReverseProxy: the inbound request is never mutated,
an outbound header list is built; Connection-named headers are removed first,
then the fixed hop-by-hop list, then the proxy adds its own headers (so a client
cannot strip them); one function maps upstream failures to 502/504; once the
response head is sent, a failure aborts the connection instead of writing a
second status.

Nothing here does I/O but the upstream call: routing state is an immutable
snapshot replaced whole by reloads and override changes.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import json
import os
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import aiohttp
import structlog
from multidict import CIMultiDict
from yarl import URL

from . import bucketing
from .config import UID_COOKIE, Shadow
from .shadow import MAX_BODY as SHADOW_MAX_BODY

if TYPE_CHECKING:
    from .app import Runtime

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

log = structlog.get_logger("splitter.access")

# Hop-by-hop headers (RFC 9110 7.6.1) are meaningful for one connection only.
HOP_HEADERS = frozenset(
    [
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
        b"proxy-authenticate",
        b"proxy-authorization",
    ]
)
# Replaced with the proxy's own values, never copied from the client.
_REPLACED = frozenset([b"x-request-id", b"x-splitter-handler", b"x-splitter-backend", b"x-splitter-token", b"via", b"expect"])
_FORWARDED = frozenset([b"x-forwarded-for", b"x-forwarded-proto", b"x-forwarded-host"])
_DROP_UPSTREAM = HOP_HEADERS | _REPLACED | _FORWARDED
_DROP_UPSTREAM_TRUSTED = HOP_HEADERS | _REPLACED
_DROP_DOWNSTREAM = HOP_HEADERS | frozenset([b"x-splitter-handler", b"x-request-id"])

_SANE_REQUEST_ID = re.compile(rb"[!-~]{1,128}").fullmatch
UID_MAX_AGE = 365 * 24 * 3600


class UpstreamError(Exception):
    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


def map_upstream_error(exc: BaseException) -> UpstreamError:
    """The one place that decides 502 vs 504 and the error kind."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamError(504, "timeout", "upstream timed out")
    if isinstance(exc, aiohttp.ClientResponseError | aiohttp.ClientPayloadError) or type(exc).__name__ in ("HttpProcessingError", "BadHttpMessage", "BadStatusLine", "LineTooLong", "InvalidHeader"):
        return UpstreamError(502, "protocol", "upstream sent a malformed response")
    if isinstance(exc, aiohttp.ClientConnectionError | OSError):
        return UpstreamError(502, "connect", "upstream connection failed")
    return UpstreamError(502, "protocol", f"upstream failed: {type(exc).__name__}")


class _BodyState:
    __slots__ = ("client_gone", "complete", "received", "too_large")

    def __init__(self) -> None:
        self.client_gone = False
        self.too_large = False
        self.complete = False
        self.received = 0


class _ClientGone(Exception):
    pass


class _TooLarge(Exception):
    pass


async def _body(receive: Receive, state: _BodyState, limit: int, tee: list[bytes] | None = None) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            state.client_gone = True
            raise _ClientGone()
        chunk = message.get("body", b"")
        if chunk:
            state.received += len(chunk)
            if state.received > limit:
                state.too_large = True
                raise _TooLarge()
            if tee is not None:
                tee.append(chunk)
            yield chunk
        if not message.get("more_body", False):
            state.complete = True
            return


@lru_cache(maxsize=4096)
def _url(target: str) -> URL:
    """Parsed once per distinct target; encoded=True keeps the raw path exactly as the client sent it."""
    return URL(target, encoded=True)


@lru_cache(maxsize=4096)
def _peer_trusted(peer: str, networks: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(ip in net for net in networks)


class Proxy:
    """Pure ASGI application for user traffic."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        s = runtime.settings
        self.force_token = s.force_token.encode() if s.force_token else None
        self.access_log = s.access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1003})
            return
        start = time.perf_counter()
        rt = self.rt
        snap = rt.snapshot
        cfg = snap.config
        hd: dict[bytes, bytes] = dict(scope["headers"])
        method: str = scope["method"]
        path: str = scope["path"]

        raw_rid = hd.get(b"x-request-id")
        request_id = raw_rid.decode("ascii") if raw_rid is not None and _SANE_REQUEST_ID(raw_rid) else os.urandom(16).hex()

        # --- requests the proxy refuses itself --------------------------------
        reject = None
        if method == "CONNECT":
            reject = (400, "bad_request", "CONNECT is not supported")
        elif "extensions" in scope and "splitter.absolute_form" in scope["extensions"]:
            reject = (400, "bad_request", "absolute-form request targets are not accepted; this is not a forward proxy")
        elif b"transfer-encoding" in hd and b"content-length" in hd:
            reject = (400, "bad_request", "Content-Length together with Transfer-Encoding")
        else:
            cl = hd.get(b"content-length")
            if cl is not None:
                if not cl.isdigit():
                    reject = (400, "bad_request", "invalid Content-Length")
                elif int(cl) > cfg.max_body_bytes:
                    reject = (413, "too_large", f"request body over the limit of {cfg.max_body_bytes} bytes")
        if reject is not None:
            rt.metrics.rejected.labels(reject[1]).inc()
            await _send_error(send, reject[0], reject[2], None, request_id)
            self._log(request_id, method, path, "-", None, reject[0], start, None)
            return

        # --- who decides the backend -----------------------------------------
        route = cfg.match(path)
        route_name = route.name if route is not None else "unmatched"
        user_bucket: int | None = None
        set_cookie: bytes | None = None
        forced = hd.get(b"x-splitter-backend")
        if forced is not None and forced in (b"legacy", b"new") and self._force_allowed(cfg.environment, hd.get(b"x-splitter-token")):
            backend_name = forced.decode()
        elif snap.kill:
            backend_name = "legacy"
        else:
            headers_str = _lookup_headers(hd, snap.id_headers)
            uid = bucketing.user_id(cfg.user_id, headers_str, cfg.anonymous == "cookie")
            if uid is None and cfg.anonymous == "cookie":
                uid = os.urandom(16).hex()
                set_cookie = _uid_cookie(uid, _is_https(scope, hd, cfg.trusted_proxies))
            if route is None:
                backend_name = cfg.unmatched
                if uid is not None:
                    user_bucket = bucketing.bucket(uid)
            elif uid is None:
                backend_name = cfg.anonymous  # legacy | new
            else:
                user_bucket = bucketing.bucket(uid, route.salt)
                backend_name = "new" if user_bucket < snap.percent[route_name] else "legacy"
        handler = ("new_" if backend_name == "new" else "old_") + route_name
        backend = cfg.backends[backend_name]

        # --- the outbound request --------------------------------------------
        client = scope.get("client")
        peer = client[0] if client else ""
        trusted = bool(cfg.trusted_proxies) and _peer_trusted(peer, cfg.trusted_proxies)
        drop = _DROP_UPSTREAM_TRUSTED if trusted else _DROP_UPSTREAM
        conn = hd.get(b"connection")
        if conn is not None:
            drop = drop | {t.strip().lower() for t in conn.split(b",")}
        # a list, not a dict: repeated headers stay repeated; the names added below were dropped above
        out = [(n.decode("latin-1"), v.decode("latin-1")) for n, v in scope["headers"] if n not in drop]
        xff = hd.get(b"x-forwarded-for") if trusted else None
        out.append(("X-Forwarded-For", f"{xff.decode('latin-1')}, {peer}" if xff else peer))
        if not trusted or b"x-forwarded-proto" not in hd:
            out.append(("X-Forwarded-Proto", scope.get("scheme", "http")))
        if not trusted or b"x-forwarded-host" not in hd:
            host = hd.get(b"host")
            if host is not None:
                out.append(("X-Forwarded-Host", host.decode("latin-1")))
        via = hd.get(b"via")
        out.append(("Via", f"{via.decode('latin-1')}, 1.1 splitter" if via else "1.1 splitter"))
        out.append(("X-Request-ID", request_id))
        out.append(("X-Splitter-Handler", handler))

        target = backend.url + scope.get("raw_path", path.encode()).decode("latin-1")
        qs = scope.get("query_string")
        if qs:
            target += "?" + qs.decode("latin-1")

        body_state = _BodyState()
        has_body = b"transfer-encoding" in hd or hd.get(b"content-length", b"0") != b"0"
        shadowing = route is not None and route.shadow is not None and forced is None and not snap.kill and _wants_shadow(route.shadow, method, hd)
        req_tee: list[bytes] | None = [] if shadowing and has_body else None
        data = _body(receive, body_state, cfg.max_body_bytes, req_tee) if has_body else None
        if not has_body:
            body_state.complete = True

        session = rt.session(backend)
        try:
            resp = await session.request(method, _url(target), headers=out, data=data, allow_redirects=False)
        except Exception as exc:  # noqa: BLE001 - every failure is mapped below
            if body_state.client_gone:
                rt.metrics.client_aborts.labels(route_name, handler).inc()
                self._log(request_id, method, path, route_name, handler, 499, start, user_bucket)
                return
            if body_state.too_large:
                rt.metrics.rejected.labels("too_large").inc()
                await _send_error(send, 413, f"request body over the limit of {cfg.max_body_bytes} bytes", handler, request_id)
                self._log(request_id, method, path, route_name, handler, 413, start, user_bucket)
                return
            await self._upstream_failed(exc, send, start, request_id, method, path, route_name, backend_name, handler, user_bucket)
            return

        status = resp.status
        try:
            upstream_conn = resp.headers.get("Connection")
            drop_down = _DROP_DOWNSTREAM
            if upstream_conn:
                drop_down = drop_down | {t.strip().lower().encode("latin-1") for t in upstream_conn.split(",")}
            headers = [(n.lower(), v) for n, v in resp.raw_headers if n.lower() not in drop_down]
            headers.append((b"x-splitter-handler", handler.encode()))
            headers.append((b"x-request-id", request_id.encode()))
            if set_cookie is not None:
                headers.append((b"set-cookie", set_cookie))
            content = resp.content
            try:
                first = await content.readany() if method != "HEAD" else b""
            except Exception as exc:  # noqa: BLE001 - mapped, the head is not sent yet
                await self._upstream_failed(exc, send, start, request_id, method, path, route_name, backend_name, handler, user_bucket)
                return
            await send({"type": "http.response.start", "status": status, "headers": headers})
            resp_tee: list[bytes] | None = [first] if shadowing else None
            if not first or content.at_eof():
                await send({"type": "http.response.body", "body": first, "more_body": False})
            else:
                await send({"type": "http.response.body", "body": first, "more_body": True})
                outcome = await self._stream(resp, receive, send, body_state, resp_tee)
                if outcome is not None:
                    if outcome == "client_abort":
                        rt.metrics.client_aborts.labels(route_name, handler).inc()
                    else:
                        rt.metrics.error(route_name, backend_name, handler, outcome)
                        self._judge(route_name, backend_name, True, time.perf_counter() - start)
                    # The head is out: abort the connection rather than pretend the body is whole.
                    self._log(request_id, method, path, route_name, handler, status, start, user_bucket, error=outcome)
                    return
        finally:
            resp.release()
        if status >= 500:
            rt.metrics.error(route_name, backend_name, handler, "status_5xx")
        elapsed = time.perf_counter() - start
        rt.observe(route_name, backend_name, handler, status, elapsed)
        self._judge(route_name, backend_name, status >= 500, elapsed)
        if shadowing:
            assert route is not None
            complete = resp_tee is not None and len(resp_tee) <= 1024 and sum(map(len, resp_tee)) <= SHADOW_MAX_BODY
            response = (status, CIMultiDict(resp.headers), b"".join(resp_tee or ())) if complete else None
            req_body = b"".join(req_tee) if req_tee is not None else None
            if req_body is not None and len(req_body) > SHADOW_MAX_BODY:
                response = None
            rt.shadow.launch(route, backend_name, method, target[len(backend.url) :], CIMultiDict(out), req_body, response)
        if self.access_log:
            self._log(request_id, method, path, route_name, handler, status, start, user_bucket)

    async def _upstream_failed(self, exc: BaseException, send: Send, start: float, request_id: str, method: str, path: str, route_name: str, backend_name: str, handler: str, user_bucket: int | None) -> None:
        """The upstream failed before the response head went out: a JSON 502/504, counted and judged."""
        err = map_upstream_error(exc)
        elapsed = time.perf_counter() - start
        self.rt.metrics.error(route_name, backend_name, handler, err.kind)
        self.rt.observe(route_name, backend_name, handler, err.status, elapsed)
        self._judge(route_name, backend_name, True, elapsed)
        await _send_error(send, err.status, err.message, handler, request_id)
        self._log(request_id, method, path, route_name, handler, err.status, start, user_bucket, error=err.kind)

    def _judge(self, route_name: str, backend_name: str, error: bool, seconds: float) -> None:
        """Feed the guard and rollout windows, for the routes that have them."""
        outcomes = self.rt.outcomes.get(route_name)
        if outcomes is not None:
            outcomes.record(backend_name, time.time(), error, seconds)

    async def _stream(self, resp: aiohttp.ClientResponse, receive: Receive, send: Send, body_state: _BodyState, tee: list[bytes] | None = None) -> str | None:
        """Copy the rest of the body; returns None when whole, else why it stopped."""
        gone = asyncio.Event()
        watcher = None
        if body_state.complete:
            # The request body is consumed, so receive() now only reports a disconnect.
            async def watch() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                gone.set()
                resp.close()

            watcher = asyncio.ensure_future(watch())
        try:
            readany = resp.content.readany
            while True:
                try:
                    chunk = await readany()
                except Exception as exc:  # noqa: BLE001
                    return "client_abort" if gone.is_set() else map_upstream_error(exc).kind
                if not chunk:
                    break
                if gone.is_set():
                    return "client_abort"
                if tee is not None and len(tee) <= 1024:  # more chunks than that: too big to compare
                    tee.append(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            if gone.is_set():
                return "client_abort"
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            return None
        finally:
            if watcher is not None:
                watcher.cancel()

    def _force_allowed(self, environment: str, token: bytes | None) -> bool:
        if environment == "development":
            return True
        return self.force_token is not None and token is not None and hmac.compare_digest(token, self.force_token)

    def _log(self, request_id: str, method: str, path: str, route: str, handler: str | None, status: int, start: float, user_bucket: int | None, **extra: Any) -> None:
        log.info(
            "request",
            request_id=request_id,
            method=method,
            path=path,
            route=route,
            handler=handler,
            status=status,
            duration_ms=round((time.perf_counter() - start) * 1000, 3),
            user_bucket=user_bucket,
            **extra,
        )


def _wants_shadow(shadow: Shadow, method: str, hd: dict[bytes, bytes]) -> bool:
    if method not in shadow.methods or b"transfer-encoding" in hd:
        return False
    cl = hd.get(b"content-length")
    if cl is not None and (not cl.isdigit() or int(cl) > SHADOW_MAX_BODY):
        return False
    return shadow.percent >= 100 or random.random() * 100 < shadow.percent


def _lookup_headers(hd: dict[bytes, bytes], names: tuple[bytes, ...]) -> dict[str, str]:
    out = {}
    for n in names:
        v = hd.get(n)
        if v is not None:
            out[n.decode()] = v.decode("latin-1")
    return out


def _is_https(scope: Scope, hd: dict[bytes, bytes], trusted: tuple[Any, ...]) -> bool:
    if scope.get("scheme") == "https":
        return True
    client = scope.get("client")
    return bool(trusted) and client is not None and _peer_trusted(client[0], trusted) and hd.get(b"x-forwarded-proto") == b"https"


def _uid_cookie(uid: str, secure: bool) -> bytes:
    cookie = f"{UID_COOKIE}={uid}; Path=/; Max-Age={UID_MAX_AGE}; HttpOnly; SameSite=Lax"
    return (cookie + "; Secure" if secure else cookie).encode()


async def _send_error(send: Send, status: int, message: str, handler: str | None, request_id: str) -> None:
    body = json.dumps({"error": message, "handler": handler, "request_id": request_id}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    if handler:
        headers.append((b"x-splitter-handler", handler.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
