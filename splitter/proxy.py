"""The hot path: refuse, choose the backend, build the outbound head, forward, stream back.

Modelled on Go's httputil.ReverseProxy: the inbound request is never mutated,
an outbound header list is built; Connection-named headers are removed first,
then the fixed hop-by-hop list, then the proxy adds its own headers (so a client
cannot strip them); one function maps upstream failures (upstream.map_upstream_error);
once the response head is sent, a failure aborts the connection instead of
writing a second status. One per-request record (`Call`) carries what the steps
decide, and the canonical log line is written from it.

Nothing here does I/O but the upstream call: routing state is an immutable
snapshot replaced whole by reloads and override changes. Header bytes are never
re-encoded: names and values go upstream and back as the bytes that arrived.
"""

from __future__ import annotations

import asyncio
import hmac
import ipaddress
import os
import random
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import orjson
from multidict import CIMultiDict

from . import bucketing, bypass
from .bypass import CLIENT_HOOK, ClientConnection
from .call import Call, Refused
from .config import UID_COOKIE, Config, Route, ShadowSpec
from .logs import ACCESS
from .shadow import MAX_BODY as SHADOW_MAX_BODY
from .shadow import Shadow
from .upstream import Aborted, BodyCut, Exchange, SendTimedOut, UpstreamError, map_upstream_error

if TYPE_CHECKING:
    from .runtime import Runtime, Snapshot

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


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
_ALLOW = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"

_SANE_REQUEST_ID = re.compile(rb"[!-~]{1,128}").fullmatch
_ENCODED_SLASH = re.compile("%2[fF]")
_DOT = frozenset([b".", b"%2e"])
_DOTDOT = frozenset([b"..", b".%2e", b"%2e.", b"%2e%2e"])
UID_MAX_AGE = 365 * 24 * 3600


class _Body:
    """The request body as it streams upstream, with what happened to it.

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
    (`interrupt`, the same cancel as the watchdog's): the answer goes out, and `end` sees to the rest."""

    __slots__ = (
        "answered", "client", "complete", "fd", "gone", "length", "limit", "receive", "received", "task", "tee", "timed_out", "timeout", "too_large",
        "waiting_since", "watchdog",
    )  # fmt: skip

    def __init__(
        self, receive: Receive, limit: int, timeout: float, tee: list[bytes] | None, length: int | None = None,
        client: ClientConnection | None = None,
    ) -> None:
        self.receive, self.limit, self.timeout, self.tee = receive, limit, timeout, tee
        self.length, self.client = length, client
        self.fd: int | None = None  # the client socket (a duplicate) while the body is read past uvicorn
        self.gone = self.too_large = self.timed_out = self.complete = self.answered = False
        self.received = 0
        self.waiting_since: float | None = None
        self.watchdog: asyncio.TimerHandle | None = None
        self.task: asyncio.Task[Any] | None = None

    async def chunks(self) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        task = self.task = asyncio.current_task()
        assert task is not None
        self.watchdog = loop.call_later(self.timeout, self._watch, loop, task)
        try:
            while True:
                if self.answered:
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
                    self.gone = True
                    raise Aborted()
                chunk = message.get("body", b"")
                if chunk:
                    self.count(chunk)
                    yield chunk
                if not message.get("more_body", False):
                    self.complete = True
                    return
                left = (self.length or 0) - self.received
                if left >= bypass.BODY_BYPASS_MIN and self.tee is None and self.client is not None:
                    self.fd = self.client.take_body(self.received)
                    if self.fd is not None:
                        async for chunk in bypass.read_past(self, self.fd, loop, task):
                            yield chunk
                        self.complete = True
                        return
        finally:
            self.stop()

    def count(self, chunk: bytes) -> None:
        self.received += len(chunk)
        if self.received > self.limit:
            self.too_large = True
            raise Refused(413, "too_large", f"request body over the limit of {self.limit} bytes")
        if self.tee is not None:
            self.tee.append(chunk)

    def interrupted(self, task: asyncio.Task[Any]) -> None:
        """A wait for the client was cancelled: by the upstream's answer, the body stops there (it wins
        over a watchdog that fired at the same time); by the watchdog, it is a 408."""
        if (self.answered or self.timed_out) and task.uncancel() == 0:
            if self.answered:
                raise BodyCut() from None
            raise Refused(408, "body_timeout", f"no request body bytes for {self.timeout:g} s") from None

    def interrupt(self, _: object = None) -> None:
        """The upstream answered (or failed): no more of the body goes; a wait for the client ends now."""
        if self.answered or self.complete:
            return
        self.answered = True
        task = self.task
        if task is not None and self.waiting_since is not None and not self.timed_out:
            task.cancel()  # the wait ends with CancelledError, turned into BodyCut by interrupted

    def stop(self) -> None:
        if self.watchdog is not None:
            self.watchdog.cancel()
            self.watchdog = None
        fd = self.fd
        if fd is not None and (self.complete or self.gone):
            assert self.client is not None  # it handed out the fd
            self.fd = None
            os.close(fd)
            self.client.body_taken(whole=self.complete)  # uvicorn reads again (to hear of a disconnect), or closes

    def end(self, scope: Scope) -> None:
        """No more of the body goes upstream; called before any answer goes out. If some of it is still
        to come (the upstream answered or failed first, a 408, a 413), that answer carries
        `Connection: close`, and once it is out the rest is read and dropped before the socket closes,
        or the kernel would reset the connection, answer and all (nginx's lingering close)."""
        self.stop()
        client, self.client = self.client, None  # once
        if self.complete or self.gone or client is None:
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
        if self.answered:
            self.watchdog = None
            return
        since = self.waiting_since
        left = self.timeout if since is None else since + self.timeout - loop.time()
        if left > 0:
            self.watchdog = loop.call_later(left, self._watch, loop, task)
            return
        self.watchdog = None
        self.timed_out = True
        task.cancel()  # the task is waiting in receive(): that wait ends with CancelledError


def normalize_path(raw: bytes) -> tuple[bytes, str] | None:
    """(path to forward, path to match) with dot segments removed (RFC 3986 5.2.4, %2e forms too);
    None when the path climbs above "/". %2F stays encoded and is never a separator."""
    if b"/." in raw or b"%" in raw:
        segments = raw.split(b"/")[1:]
        out: list[bytes] = []
        for i, seg in enumerate(segments):
            low = seg.lower()
            if low in _DOT:
                if i == len(segments) - 1:
                    out.append(b"")
            elif low in _DOTDOT:
                if not out:
                    return None
                out.pop()
                if i == len(segments) - 1:
                    out.append(b"")
            else:
                out.append(seg)
        raw = b"/" + b"/".join(out)
    text = raw.decode("latin-1")
    if "%" in text:
        text = "%2F".join(unquote(part, errors="replace") for part in _ENCODED_SLASH.split(text))
    return raw, text


@lru_cache(maxsize=4096)
def _peer_trusted(peer: str, networks: tuple[Any, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(peer)
    except ValueError:
        return False
    return any(ip in net for net in networks)


def _begin(scope: Scope) -> tuple[Call, dict[bytes, bytes], int]:
    """The request's record, its headers by name, and how many Host headers it had."""
    raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
    hd = dict(raw_headers)
    hosts = 1 if b"host" in hd else 0
    if len(hd) < len(raw_headers):  # a repeated header: the slow path reads them as lists
        hd, hosts = _merged_headers(raw_headers)
    raw_rid = hd.get(b"x-request-id")
    return Call(scope, raw_rid.decode("ascii") if raw_rid is not None and _SANE_REQUEST_ID(raw_rid) else os.urandom(16).hex()), hd, hosts


def _merged_headers(raw: list[tuple[bytes, bytes]]) -> tuple[dict[bytes, bytes], int]:
    """Lower-case name -> value, and the number of Host headers. Repeated Cookie and
    Connection headers are read as one list (RFC 9110 5.3); for others the last one wins."""
    hd: dict[bytes, bytes] = {}
    hosts = 0
    for n, v in raw:
        if n == b"host":
            hosts += 1
        if n in hd and n == b"cookie":
            hd[n] += b"; " + v
        elif n in hd and n == b"connection":
            hd[n] += b", " + v
        else:
            hd[n] = v
    return hd, hosts


class Proxy:
    """Pure ASGI application for user traffic."""

    def __init__(self, runtime: Runtime, shadow: Shadow) -> None:
        self.rt = runtime
        self.shadow = shadow
        self.websockets: Any = None  # websocket.WebSockets, wired by app.create_app
        s = runtime.settings
        self.force_token = s.force_token.encode() if s.force_token else None
        self.access_log = s.access_log
        self.body_timeout = s.body_timeout
        self.send_timeout = s.send_timeout
        self.in_flight = 0
        # one process: the gauge reads the counter at scrape time; several: shared files, summed
        self.in_flight_gauge = runtime.metrics.track_in_flight(lambda: self.in_flight)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                await self.websockets(scope, receive, send)
            return
        call, hd, hosts = _begin(scope)
        snap = self.rt.snapshot
        cfg = snap.config
        try:
            target = self._refuse(scope, call, hd, hosts, cfg)
        except Refused as refusal:
            await self._answer_refusal(call, send, refusal)
            return
        if target is None:  # OPTIONS *: about the server itself, answered here
            await send({"type": "http.response.start", "status": 200, "headers": [(b"allow", _ALLOW), (b"content-length", b"0"), (b"x-request-id", call.request_id.encode())]})
            await send({"type": "http.response.body", "body": b""})
            call.status = 200
            self._log(call)
            return
        set_cookie = self._choose(scope, call, hd, snap)
        headers = self._outbound_headers(scope, call, hd, cfg)
        await self._counted(scope, receive, send, call, hd, headers, target, set_cookie)

    def prepare(self, scope: Scope) -> tuple[Call, list[tuple[bytes, bytes]], bytes, bytes | None]:
        """The same decision for an upgrade: (call, outbound headers, target, Set-Cookie); raises Refused."""
        call, hd, hosts = _begin(scope)
        snap = self.rt.snapshot
        target = self._refuse(scope, call, hd, hosts, snap.config)
        if target is None:
            raise Refused(400, "bad_request", "the request target must be a path")
        set_cookie = self._choose(scope, call, hd, snap)
        return call, self._outbound_headers(scope, call, hd, snap.config), target, set_cookie

    async def _counted(
        self, scope: Scope, receive: Receive, send: Send, call: Call, hd: dict[bytes, bytes], headers: list[tuple[bytes, bytes]], target: bytes, set_cookie: bytes | None
    ) -> None:
        self.in_flight += 1
        gauge = self.in_flight_gauge
        if gauge is not None:
            gauge.inc()
        try:
            await self._forward(scope, receive, send, call, hd, headers, target, set_cookie)
        finally:
            self.in_flight -= 1
            if gauge is not None:
                gauge.dec()

    # --- step 1: what the proxy refuses itself ------------------------------------------
    def _refuse(self, scope: Scope, call: Call, hd: dict[bytes, bytes], hosts: int, cfg: Config) -> bytes | None:
        """The upstream target (normalised path + query), None for OPTIONS *, or Refused."""
        method = call.method
        raw_path: bytes = scope.get("raw_path") or call.path.encode()
        if method == "CONNECT":
            raise Refused(400, "bad_request", "CONNECT is not supported")
        if "extensions" in scope and "splitter.absolute_form" in scope["extensions"]:
            raise Refused(400, "bad_request", "absolute-form request targets are not accepted; this is not a forward proxy")
        if raw_path == b"*" and method == "OPTIONS":
            return None
        if not raw_path.startswith(b"/"):
            raise Refused(400, "bad_request", "the request target must be a path")
        if hosts > 1:
            raise Refused(400, "bad_request", "more than one Host header")
        if hosts == 0 and scope.get("http_version") == "1.1":
            raise Refused(400, "bad_request", "HTTP/1.1 request without a Host header")
        if b"transfer-encoding" in hd and b"content-length" in hd:
            raise Refused(400, "bad_request", "Content-Length together with Transfer-Encoding")
        cl = hd.get(b"content-length")
        if cl is not None:
            if not cl.isdigit():
                raise Refused(400, "bad_request", "invalid Content-Length")
            if int(cl) > cfg.max_body_bytes:
                raise Refused(413, "too_large", f"request body over the limit of {cfg.max_body_bytes} bytes")
        normal = normalize_path(raw_path)
        if normal is None:
            raise Refused(400, "bad_request", "the path climbs above the root")
        target, call.path = normal
        qs = scope.get("query_string")
        return target + b"?" + qs if qs else target

    async def _answer_refusal(self, call: Call, send: Send, refusal: Refused) -> None:
        self.rt.metrics.rejected.labels(refusal.reason).inc()
        call.status = refusal.status
        call.error = refusal.reason
        await _send_error(send, refusal.status, refusal.message, call.handler, call.request_id)
        self._log(call)

    # --- step 2: who decides the backend ---------------------------------------------------
    def _choose(self, scope: Scope, call: Call, hd: dict[bytes, bytes], snap: Snapshot) -> bytes | None:
        """Sets route, backend, handler and bucket on the call; returns a Set-Cookie to add, if any."""
        cfg = snap.config
        route = call.route = cfg.match(call.path)
        route_name = call.route_name = route.name if route is not None else "unmatched"
        set_cookie = None
        forced = hd.get(b"x-splitter-backend")
        if forced is not None and forced in (b"legacy", b"new") and self._force_allowed(cfg.environment, hd.get(b"x-splitter-token")):
            backend = forced.decode()
        elif snap.kill:
            backend = "legacy"
        else:
            uid = bucketing.user_id(cfg.user_id, hd, cfg.anonymous == "cookie")
            if uid is None and cfg.anonymous == "cookie":
                uid = os.urandom(16).hex().encode()
                set_cookie = _uid_cookie(uid, _is_https(scope, hd, cfg.trusted_proxies))
            if route is None:
                backend = cfg.unmatched
                if uid is not None:
                    call.user_bucket = bucketing.bucket(uid)
            elif uid is None:
                backend = cfg.anonymous  # legacy | new
            else:
                call.user_bucket = bucketing.bucket(uid, route.salt)
                backend = bucketing.backend_for(call.user_bucket, snap.percent[route_name])
        call.backend = backend
        call.handler = ("new_" if backend == "new" else "old_") + route_name
        return set_cookie

    # --- step 3: the outbound head ----------------------------------------------------------
    def _outbound_headers(self, scope: Scope, call: Call, hd: dict[bytes, bytes], cfg: Config) -> list[tuple[bytes, bytes]]:
        peer = call.client
        trusted = bool(cfg.trusted_proxies) and _peer_trusted(peer, cfg.trusted_proxies)
        drop = _DROP_UPSTREAM_TRUSTED if trusted else _DROP_UPSTREAM
        conn = hd.get(b"connection")
        if conn is not None:
            drop = drop | {t.strip().lower() for t in conn.split(b",")}
        # a list, not a dict: repeated headers stay repeated; the names added below were dropped above
        out = [(n, v) for n, v in scope["headers"] if n not in drop]
        if b"host" not in hd:  # HTTP/1.0 without Host: the upstream speaks HTTP/1.1
            out.append((b"host", self.rt.pool(cfg.backends[call.backend or "legacy"]).authority))
        peer_b = peer.encode()
        xff = hd.get(b"x-forwarded-for") if trusted else None
        if xff:
            call.client = _client_from_xff(xff, cfg.trusted_proxies) or peer
        out.append((b"x-forwarded-for", xff + b", " + peer_b if xff else peer_b))
        if not trusted or b"x-forwarded-proto" not in hd:
            out.append((b"x-forwarded-proto", b"https" if scope.get("scheme") == "https" else b"http"))
        if not trusted or b"x-forwarded-host" not in hd:
            host = hd.get(b"host")
            if host is not None:
                out.append((b"x-forwarded-host", host))
        via = hd.get(b"via")
        out.append((b"via", via + b", 1.1 splitter" if via else b"1.1 splitter"))
        out.append((b"x-request-id", call.request_id.encode()))
        out.append((b"x-splitter-handler", (call.handler or "").encode()))
        return out

    # --- step 4: forward and stream back ------------------------------------------------------
    async def _forward(
        self, scope: Scope, receive: Receive, send: Send, call: Call, hd: dict[bytes, bytes], headers: list[tuple[bytes, bytes]], target: bytes, set_cookie: bytes | None
    ) -> None:
        rt = self.rt
        cfg = rt.snapshot.config
        route = call.route
        assert call.backend is not None and call.handler is not None
        chunked = b"transfer-encoding" in hd
        has_body = chunked or hd.get(b"content-length", b"0") != b"0"
        shadowing = route is not None and route.shadow is not None and b"x-splitter-backend" not in hd and not rt.snapshot.kill and _wants_shadow(route.shadow, call.method, hd)
        client: ClientConnection | None = scope.get("extensions", {}).get(CLIENT_HOOK)
        length = None if chunked else int(hd.get(b"content-length", b"0"))
        body = _Body(receive, cfg.max_body_bytes, self.body_timeout, [] if shadowing and has_body else None, length, client) if has_body else None
        ex = Exchange(call.method)
        if client is not None and not client.watch(ex.abort):
            ex.abort()  # already gone
        pool = rt.pool(cfg.backends[call.backend])
        up_headers = headers
        if body is not None:
            ex.head.add_done_callback(body.interrupt)  # the answer (or a failure) ends the body at once
            if hd.get(b"expect", b"").lower() == b"100-continue":
                up_headers = [*headers, (b"expect", b"100-continue")]  # the body waits for the upstream's go-ahead
        try:
            try:
                try:
                    await pool.exchange(ex, call.method, target, up_headers, body.chunks() if body is not None else None, chunked)
                finally:
                    if body is not None:
                        body.end(scope)  # before any answer: one that leaves the body unread closes the connection
            except Aborted:
                self._client_aborted(call)
                return
            except Refused as refusal:  # the request body broke a limit: not the backend's fault
                await self._answer_refusal(call, send, refusal)
                return
            except UpstreamError as exc:
                await self._upstream_failed(call, send, exc)
                return
            if body is not None:
                call.bytes_in = body.received
            call.upstream_ms = round((time.perf_counter() - call.start) * 1000, 3)
            try:
                first = await ex.read()
            except Aborted:
                self._client_aborted(call)
                return
            except UpstreamError as exc:  # mapped: the head is not sent yet
                await self._upstream_failed(call, send, exc)
                return
            status = call.status = ex.status
            await send({"type": "http.response.start", "status": status, "headers": _downstream_headers(ex, call, set_cookie)})
            call.bytes_out = len(first)
            resp_tee: list[bytes] | None = [first] if shadowing else None
            if ex.done and not ex.chunks:
                await send({"type": "http.response.body", "body": first, "more_body": False})
            else:
                await send({"type": "http.response.body", "body": first, "more_body": True})
                outcome = await self._stream(ex, send, call, resp_tee, client)
                if outcome is not None:
                    # The head is out: abort the connection rather than pretend the body is whole.
                    if outcome == "client_abort":
                        rt.metrics.client_aborts.labels(call.route_name, call.handler).inc()
                    elif outcome != "send_timeout":  # the client's stall: counted as rejected by the server
                        rt.metrics.error(call.route_name, call.backend, call.handler, outcome)
                        self.record_outcome(call, True)
                    call.error = outcome
                    self._log(call)
                    return
        finally:
            if client is not None:
                client.watch(None)
            if body is not None:
                body.stop()
            ex.release()
        if status >= 500:
            rt.metrics.error(call.route_name, call.backend, call.handler, "status_5xx")
        elapsed = time.perf_counter() - call.start
        rt.observe(call.route_name, call.backend, call.handler, status, elapsed)
        self.record_outcome(call, status >= 500)
        if shadowing and (body is None or body.complete):  # never a shadow request with half a body
            assert route is not None
            self._shadow(route, call, target, headers, body, ex, resp_tee)
        if self.access_log:
            self._log(call)

    async def _stream(
        self, ex: Exchange, send: Send, call: Call, tee: list[bytes] | None, client: ClientConnection | None
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

    def _client_aborted(self, call: Call) -> None:
        """The client went away before the answer: the upstream request was cancelled."""
        self.rt.metrics.client_aborts.labels(call.route_name, call.handler).inc()
        call.status = 499
        call.error = "client_abort"
        self._log(call)

    async def _upstream_failed(self, call: Call, send: Send, exc: UpstreamError) -> None:
        """The upstream failed before the response head went out: a JSON 502/503/504, counted and judged."""
        assert call.backend is not None and call.handler is not None
        call.status = exc.status
        call.error = exc.kind
        call.detail = exc.detail
        self.rt.metrics.error(call.route_name, call.backend, call.handler, exc.kind)
        self.rt.observe(call.route_name, call.backend, call.handler, exc.status, time.perf_counter() - call.start)
        if exc.kind != "overflow":  # the proxy's own limit, not the backend's failure
            self.record_outcome(call, True)
        await _send_error(send, exc.status, exc.message, call.handler, call.request_id)
        self._log(call)

    def record_outcome(self, call: Call, error: bool) -> None:
        """Feed the guard and rollout windows, for the routes that have them."""
        outcomes = self.rt.windows.get(call.route_name)
        if outcomes is not None and call.backend is not None:
            outcomes.record(call.backend, time.time(), error, time.perf_counter() - call.start)

    def _shadow(self, route: Route, call: Call, target: bytes, headers: list[tuple[bytes, bytes]], body: _Body | None, ex: Exchange, resp_tee: list[bytes] | None) -> None:
        complete = resp_tee is not None and len(resp_tee) <= 1024 and sum(map(len, resp_tee)) <= SHADOW_MAX_BODY
        response = (ex.status, _multidict(ex.headers), b"".join(resp_tee or ())) if complete else None
        req_body = b"".join(body.tee) if body is not None and body.tee is not None else None
        if req_body is not None and len(req_body) > SHADOW_MAX_BODY:
            response = None
        assert call.backend is not None
        self.shadow.launch(route, call.backend, call.method, target.decode("latin-1"), _multidict(headers), req_body, response)

    def _force_allowed(self, environment: str, token: bytes | None) -> bool:
        if environment == "development":
            return True
        return self.force_token is not None and token is not None and hmac.compare_digest(token, self.force_token)

    def _log(self, call: Call) -> None:
        fields = {
            "event": "request",
            "request_id": call.request_id,
            "method": call.method,
            "path": call.path,
            "route": call.route_name,
            "handler": call.handler,
            "status": call.status,
            "duration_ms": round((time.perf_counter() - call.start) * 1000, 3),
            "user_bucket": call.user_bucket,
            "client": call.client,
            "bytes_in": call.bytes_in,
            "bytes_out": call.bytes_out,
            "backend": call.backend,
            "upstream_ms": call.upstream_ms,
        }
        if call.error:
            fields["error"] = call.error
        if call.detail:
            fields["detail"] = call.detail
        ACCESS.write(fields)


def _client_from_xff(xff: bytes, trusted: tuple[Any, ...]) -> str | None:
    """The address a trusted proxy says the client has: the rightmost X-Forwarded-For entry
    that is not itself a trusted proxy (entries further left are the client's own claims)."""
    for part in reversed(xff.decode("latin-1").split(",")):
        addr = part.strip()
        if addr and not _peer_trusted(addr, trusted):
            return addr
    return None


@lru_cache(maxsize=256)
def _dropped_downstream(connection: bytes | None, bodiless: bool) -> frozenset[bytes]:
    """The response header names not relayed: hop-by-hop ones, those the Connection header
    names, and a 204/304's Content-Length (it describes the representation, not this empty body)."""
    drop = _DROP_DOWNSTREAM
    if connection is not None:
        drop = drop | {t.strip().lower() for t in connection.split(b",")}
    return drop | {b"content-length"} if bodiless else drop


def _downstream_headers(ex: Exchange, call: Call, set_cookie: bytes | None) -> list[tuple[bytes, bytes]]:
    drop = _dropped_downstream(ex.connection_header, ex.status == 304 or ex.status == 204)
    headers = [h for h in ex.headers if h[0] not in drop]  # names arrive lower-cased from the exchange
    headers.append((b"x-splitter-handler", (call.handler or "").encode()))
    headers.append((b"x-request-id", call.request_id.encode()))
    if set_cookie is not None:
        headers.append((b"set-cookie", set_cookie))
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


def _is_https(scope: Scope, hd: dict[bytes, bytes], trusted: tuple[Any, ...]) -> bool:
    if scope.get("scheme") == "https":
        return True
    client = scope.get("client")
    return bool(trusted) and client is not None and _peer_trusted(client[0], trusted) and hd.get(b"x-forwarded-proto") == b"https"


def _uid_cookie(uid: bytes, secure: bool) -> bytes:
    cookie = b"%s=%s; Path=/; Max-Age=%d; HttpOnly; SameSite=Lax" % (UID_COOKIE.encode(), uid, UID_MAX_AGE)
    return cookie + b"; Secure" if secure else cookie


async def _send_error(send: Send, status: int, message: str, handler: str | None, request_id: str) -> None:
    body = orjson.dumps({"error": message, "handler": handler, "request_id": request_id})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
    ]
    if handler:
        headers.append((b"x-splitter-handler", handler.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
