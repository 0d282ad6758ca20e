"""The hot path: refuse, choose the backend, build the outbound head, forward, stream back.

Modelled on Go's httputil.ReverseProxy: the inbound request is never mutated,
an outbound header list is built; Connection-named headers are removed first,
then the fixed hop-by-hop list, then the proxy adds its own headers (so a client
cannot strip them); one function maps upstream failures (upstream.map_upstream_error);
once the response head is sent, a failure aborts the connection instead of
writing a second status. One per-request record (`Call`, like Go's ProxyRequest:
the inbound headers and the outbound target and headers) carries what the steps
decide; decide.py chooses the side. Every exit ends in `_finish`, which records
the metrics, the guard's and rollout's windows and the canonical log line.

Nothing here does I/O but the upstream call: routing state is an immutable
snapshot replaced whole by reloads and override changes. Header bytes are never
re-encoded: names and values go upstream and back as the bytes that arrived.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from multidict import CIMultiDict

from . import bucketing, bypass
from .body import RequestBody
from .bypass import CLIENT_HOOK, ClientConnection
from .call import Call, Refused, error_body
from .config import ROLES, UID_COOKIE, Config, Route, ShadowSpec
from .decide import Facts, decide
from .headers import DROP_UPSTREAM, DROP_UPSTREAM_TRUSTED, KEPT, connection_tokens, dropped_downstream
from .logs import ACCESS
from .shadow import MAX_BODY as SHADOW_MAX_BODY
from .shadow import Shadow
from .upstream import Aborted, Exchange, SendTimedOut, UpstreamError, map_upstream_error

if TYPE_CHECKING:
    from .runtime import Runtime, Snapshot

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


_ALLOW = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
_FORCEABLE = {role.encode(): role for role in ROLES}  # X-Splitter-Backend values

_SANE_REQUEST_ID = re.compile(rb"[!-~]{1,128}").fullmatch
_ENCODED_SLASH = re.compile("%2[fF]")
_DOT = frozenset([b".", b"%2e"])
_DOTDOT = frozenset([b"..", b".%2e", b"%2e.", b"%2e%2e"])
UID_MAX_AGE = 365 * 24 * 3600


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
    if raw_rid is not None and _SANE_REQUEST_ID(raw_rid):
        call = Call(scope, raw_rid.decode("ascii"))
        call.client_request_id = call.request_id  # kept unless the backend checks ids (_outbound_headers)
    else:
        call = Call(scope, _new_request_id())
    call.inbound = hd
    return call, hd, hosts


class _RequestIds:
    """32 hex digits from the operating system's cryptographic generator: an id an attacker reads in
    their own answers must not tell them the next ones (a Mersenne Twister's state falls out of 156
    of its outputs), since check_request_id matches answers on it. One os.urandom call fills 128 ids
    (a getrandom() system call per request cost ~1 % of a request); a forked worker starts afresh."""

    __slots__ = ("hex", "at")

    def __init__(self) -> None:
        self.hex, self.at = "", 0

    def __call__(self) -> str:
        at = self.at
        if at >= len(self.hex):
            self.hex, at = os.urandom(16 * 128).hex(), 0
        self.at = at + 32
        return self.hex[at : at + 32]

    def reset(self) -> None:
        self.hex, self.at = "", 0


_new_request_id = _RequestIds()
os.register_at_fork(after_in_child=_new_request_id.reset)


def _merged_headers(raw: list[tuple[bytes, bytes]]) -> tuple[dict[bytes, bytes], int]:
    """Lower-case name -> value, and the number of Host headers. Repeated Cookie, Connection and
    Transfer-Encoding headers are read as one list (RFC 9110 5.3); for others the last one wins."""
    hd: dict[bytes, bytes] = {}
    hosts = 0
    for n, v in raw:
        if n == b"host":
            hosts += 1
        if n in hd and n == b"cookie":
            hd[n] += b"; " + v
        elif n in hd and (n == b"connection" or n == b"transfer-encoding"):
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

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """The request's steps up to the upstream call run here, synchronously; what is returned
        (awaited by the server) forwards it, or answers it: one coroutine frame per request, not two."""
        if scope["type"] != "http":
            if scope["type"] == "websocket":
                return self.websockets(scope, receive, send)  # type: ignore[no-any-return]
            return _nothing()
        call, hd, hosts = _begin(scope)
        snap = self.rt.snapshot
        cfg = snap.config
        try:
            target = self._refuse(scope, call, hd, hosts, cfg)
        except Refused as refusal:
            return self._refused(call, send, refusal)
        if target is None:  # OPTIONS *: about the server itself, answered here
            return self._options(call, send)
        call.target = target
        self._choose(scope, call, snap)
        call.headers = self._outbound_headers(scope, call, hd, cfg)
        return self._forward(scope, receive, send, call)

    async def _refused(self, call: Call, send: Send, refusal: Refused) -> None:
        await self._answer_refusal(call, send, refusal)
        self._finish(call)

    async def _options(self, call: Call, send: Send) -> None:
        headers = [(b"allow", _ALLOW), (b"content-length", b"0"), (b"x-request-id", call.request_id.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        call.status = 200
        self._finish(call)

    def prepare(self, scope: Scope) -> Call:
        """The same decision for an upgrade: the call with its outbound request (target, headers,
        Set-Cookie); raises Refused."""
        call, hd, hosts = _begin(scope)
        snap = self.rt.snapshot
        target = self._refuse(scope, call, hd, hosts, snap.config)
        if target is None:
            raise Refused(400, "bad_request", "the request target must be a path")
        call.target = target
        self._choose(scope, call, snap)
        call.headers = self._outbound_headers(scope, call, hd, snap.config)
        return call

    # --- step 1: what the proxy refuses itself ------------------------------------------
    def _refuse(self, scope: Scope, call: Call, hd: dict[bytes, bytes], hosts: int, cfg: Config) -> bytes | None:
        """The upstream target (normalised path + query), None for OPTIONS *, or Refused."""
        method = call.method
        raw_path: bytes = scope.get("raw_path") or call.path.encode()
        if method == "CONNECT":
            raise Refused(400, "bad_request", "CONNECT is not supported")
        if "extensions" in scope and "splitter.absolute_form" in scope["extensions"]:
            raise Refused(
                400, "bad_request", "absolute-form request targets are not accepted; this is not a forward proxy"
            )
        if raw_path == b"*" and method == "OPTIONS":
            return None
        if not raw_path.startswith(b"/"):
            raise Refused(400, "bad_request", "the request target must be a path")
        if hosts > 1:
            raise Refused(400, "bad_request", "more than one Host header")
        if hosts == 0 and scope.get("http_version") == "1.1":
            raise Refused(400, "bad_request", "HTTP/1.1 request without a Host header")
        te = hd.get(b"transfer-encoding")
        if te is not None:
            if b"content-length" in hd:
                raise Refused(400, "bad_request", "Content-Length together with Transfer-Encoding")
            if te.strip().lower() != b"chunked":  # a coding the proxy would drop, or a list hiding a framing
                raise Refused(400, "bad_request", "Transfer-Encoding other than chunked is not supported")
        cl = hd.get(b"content-length")
        if cl is not None:
            if not cl.isdigit():
                raise Refused(400, "bad_request", "invalid Content-Length")
            if int(cl) > cfg.max_body_bytes:
                raise Refused(413, "too_large", f"request body over the limit of {cfg.max_body_bytes} bytes")
        if b"upgrade" in hd and (te is not None or (cl is not None and int(cl) > 0)) and _asks_upgrade(hd):
            raise Refused(400, "bad_request", "an Upgrade request with a body")
        normal = normalize_path(raw_path)
        if normal is None:
            raise Refused(400, "bad_request", "the path climbs above the root")
        target, call.path = normal
        qs = scope.get("query_string")
        return target + b"?" + qs if qs else target

    async def _answer_refusal(self, call: Call, send: Send, refusal: Refused) -> None:
        """The proxy's own 400, 408 or 413 (the caller then ends the request in _finish)."""
        call.refused = True
        call.status = refusal.status
        call.error = refusal.reason
        rid = call.client_request_id or call.request_id
        await _send_error(send, refusal.status, refusal.message, call.handler, rid)

    # --- step 2: who decides the backend ---------------------------------------------------
    def _choose(self, scope: Scope, call: Call, snap: Snapshot) -> None:
        """decide() for this request: sets route, role, backend, reason, bucket and handler on the
        call, and the Set-Cookie that remembers a new anonymous id."""
        cfg = snap.config
        hd = call.inbound
        route = call.route = cfg.match(call.path)
        route_name = call.route_name = route.name if route is not None else "unmatched"
        forced = self._forced(hd, cfg) if b"x-splitter-backend" in hd else None
        # the peer is looked up (a cached lookup) only for a route with a `trusted: true` cohort
        trusted = route is not None and route.trusted_cohorts and _peer_trusted(call.client, cfg.trusted_proxies)
        facts = Facts(forced, bucketing.user_id(cfg.user_id, hd, cfg.anonymous == "cookie"), hd, trusted)
        decision = decide(snap, route, facts)
        if decision is None:  # anonymous under `anonymous: cookie`: a new id, kept in a cookie
            uid = os.urandom(16).hex().encode()
            call.set_cookie = _uid_cookie(uid, _is_https(scope, hd, cfg.trusted_proxies))
            decision = decide(snap, route, facts._replace(user_id=uid))
            assert decision is not None
        call.role, call.backend, call.user_bucket, call.reason = decision
        call.handler = ("new_" if decision.role == "new" else "old_") + route_name

    def _forced(self, hd: dict[bytes, bytes], cfg: Config) -> str | None:
        """The role an X-Splitter-Backend header names, when this request may force it."""
        role = _FORCEABLE.get(hd.get(b"x-splitter-backend", b""))
        if role is None or not self._force_allowed(cfg.environment, hd.get(b"x-splitter-token")):
            return None
        return role

    # --- step 3: the outbound head ----------------------------------------------------------
    def _outbound_headers(
        self, scope: Scope, call: Call, hd: dict[bytes, bytes], cfg: Config
    ) -> list[tuple[bytes, bytes]]:
        peer = call.client
        trusted = bool(cfg.trusted_proxies) and _peer_trusted(peer, cfg.trusted_proxies)
        drop = DROP_UPSTREAM_TRUSTED if trusted else DROP_UPSTREAM
        conn = hd.get(b"connection")
        if conn is not None:
            drop = drop | (connection_tokens(conn) - KEPT)
        # a list, not a dict: repeated headers stay repeated; the names added below were dropped above
        out = [(n, v) for n, v in scope["headers"] if n not in drop]
        if b"host" not in hd:  # HTTP/1.0 without Host: the upstream speaks HTTP/1.1
            assert call.backend is not None
            out.append((b"host", self.rt.pool(cfg.backends[call.backend]).authority))
        cl = hd.get(b"content-length")
        if cl is not None:  # checked digits (_refuse); a chunked body gets its framing from upstream.Pool
            out.append((b"content-length", b"%d" % int(cl)))
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
        assert call.backend is not None
        if call.client_request_id is not None and cfg.backends[call.backend].check_request_id:
            # the answer is matched on an id the proxy minted, never on one the client chose (or could guess)
            out.append((b"x-client-request-id", call.client_request_id.encode()))
            call.request_id = _new_request_id()
        else:
            call.client_request_id = None
        out.append((b"x-request-id", call.request_id.encode()))
        out.append((b"x-splitter-handler", (call.handler or "").encode()))
        return out

    # --- step 4: forward and stream back ------------------------------------------------------
    def _parts(self, scope: Scope, receive: Receive, call: Call) -> tuple[Exchange, RequestBody | None, Any, bool]:
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

    async def _forward(self, scope: Scope, receive: Receive, send: Send, call: Call) -> None:
        """The exchange with the upstream and the answer relayed (one coroutine: this is the hot path);
        every exit leaves its outcome on the call, and the request ends in _finish."""
        ex, body, client, shadowing = self._parts(scope, receive, call)
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
                await pool.send_request(ex, call.method, call.target, _with_expect(call, ex, body), chunks, chunked)
            finally:
                if body is not None:
                    body.end(scope)  # before any answer: one that leaves the body unread closes the connection
            if body is not None:
                call.bytes_in = body.received
            call.upstream_ms = round((time.perf_counter() - call.start) * 1000, 3)
            first = ex.read_nowait()  # the body bytes that came with the head, without a wait (the common case)
            if first is None:
                first = await ex.read()
            call.status = ex.status
            await send({"type": "http.response.start", "status": ex.status, "headers": _downstream_headers(ex, call)})
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
        self._finish(call)

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

    def _finish(self, call: Call) -> None:
        """Every request ends here, whatever its exit: its metrics, the guard's and rollout's windows,
        and the access-log line. OPTIONS * (no role) only logs; a refusal counts as rejected."""
        error = call.error
        elapsed = time.perf_counter() - call.start
        if call.refused:
            self.rt.metrics.rejected.labels(error).inc()
        elif error == "client_abort":
            self.rt.metrics.client_aborts.labels(call.route_name, call.handler).inc()
        elif call.role is not None and error != "send_timeout":  # a stalled client: counted as rejected by the server
            assert call.handler is not None
            failed = error is not None or call.status >= 500
            if failed:
                self.rt.metrics.error(call.route_name, call.role, call.handler, error or "status_5xx")
            timed = error is None or not call.head_sent  # a body cut short is no latency sample
            if timed:
                self.rt.observe(call.route_name, call.role, call.handler, call.status, elapsed)
            # the proxy's own limit is not the backend's failure: no window sample (a cohort's still counts)
            self.record_outcome(call, failed, error != "overflow", elapsed, error, timed)
        if self.access_log:
            self._log(call, elapsed)

    def record_outcome(
        self,
        call: Call,
        error: bool,
        judged: bool = True,
        elapsed: float | None = None,
        kind: str | None = None,
        timed: bool = True,
    ) -> None:
        """Feed the guard, rollout and console windows, for the routes that have them. A cohort's
        requests are not a random sample of either side: they are counted apart, never judged.
        An error type (no_new_errors) is the proxy's failure kind, else a status >= 400 or one the
        route's gates list: counted only on those paths. `timed`: the request's duration was observed
        (splitter_request_duration_seconds), so a cohort's is too (report.py takes it out)."""
        reason = call.reason
        if reason is not None and reason.startswith("cohort:") and call.role is not None:
            seconds = (time.perf_counter() - call.start if elapsed is None else elapsed) if timed else None
            self.rt.metrics.cohort_request(call.route_name, reason[7:], call.role, error, seconds)
            return
        if not judged:
            return
        outcomes = self.rt.windows.get(call.route_name)
        if outcomes is not None and call.role is not None:
            seconds = time.perf_counter() - call.start if elapsed is None else elapsed
            status = call.status
            if kind is None and (status >= 400 or status in outcomes.typed):
                kind = str(status)
            outcomes.record(call.role, time.time(), error, seconds, kind, call.path)

    def _shadow(
        self, route: Route, call: Call, body: RequestBody | None, ex: Exchange, resp_tee: list[bytes] | None
    ) -> None:
        complete = resp_tee is not None and len(resp_tee) <= 1024 and sum(map(len, resp_tee)) <= SHADOW_MAX_BODY
        response = (ex.status, _multidict(ex.headers), b"".join(resp_tee or ())) if complete else None
        req_body = b"".join(body.tee) if body is not None and body.tee is not None else None
        if req_body is not None and len(req_body) > SHADOW_MAX_BODY:
            response = None
        assert call.role is not None
        target = call.target.decode("latin-1")
        self.shadow.launch(route, call.role, call.method, target, _multidict(call.headers), req_body, response)

    def _force_allowed(self, environment: str, token: bytes | None) -> bool:
        if environment == "development":
            return True
        return self.force_token is not None and token is not None and hmac.compare_digest(token, self.force_token)

    def _log(self, call: Call, elapsed: float) -> None:
        fields = {
            "event": "request",
            "request_id": call.request_id,
            "method": call.method,
            "path": call.path,
            "route": call.route_name,
            "handler": call.handler,
            "status": call.status,
            "duration_ms": round(elapsed * 1000, 3),
            "user_bucket": call.user_bucket,
            "client": call.client,
            "bytes_in": call.bytes_in,
            "bytes_out": call.bytes_out,
            "role": call.role,
            "backend": call.backend,
            "upstream_ms": call.upstream_ms,
            "reason": call.reason,
        }
        if call.client_request_id is not None and call.client_request_id != call.request_id:
            fields["client_request_id"] = call.client_request_id
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


def _asks_upgrade(hd: dict[bytes, bytes]) -> bool:
    """Connection names `upgrade` (and an Upgrade header is there): llhttp then reads no body after the
    head (uvicorn hands on an empty one and drops the rest), so such a request with a body, forwarded,
    would carry another body than the client sent (the differential suite's connection-upgrade-*)."""
    return b"upgrade" in connection_tokens(hd.get(b"connection", b""))


def _with_expect(call: Call, ex: Exchange, body: RequestBody | None) -> list[tuple[bytes, bytes]]:
    """The outbound headers; with a body, its end is tied to the answer (or a failure), and a client's
    `Expect: 100-continue` is passed on, so the body waits for the upstream's go-ahead."""
    if body is None:
        return call.headers
    ex.head.add_done_callback(body.interrupt)  # the answer ends the body at once
    if call.inbound.get(b"expect", b"").lower() == b"100-continue":
        return [*call.headers, (b"expect", b"100-continue")]
    return call.headers


def _downstream_headers(ex: Exchange, call: Call) -> list[tuple[bytes, bytes]]:
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


def _is_https(scope: Scope, hd: dict[bytes, bytes], trusted: tuple[Any, ...]) -> bool:
    if scope.get("scheme") == "https":
        return True
    client = scope.get("client")
    return (
        bool(trusted)
        and client is not None
        and _peer_trusted(client[0], trusted)
        and hd.get(b"x-forwarded-proto") == b"https"
    )


def _uid_cookie(uid: bytes, secure: bool) -> bytes:
    cookie = b"%s=%s; Path=/; Max-Age=%d; HttpOnly; SameSite=Lax" % (UID_COOKIE.encode(), uid, UID_MAX_AGE)
    return cookie + b"; Secure" if secure else cookie


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
