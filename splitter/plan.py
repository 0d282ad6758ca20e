"""The synchronous steps of a request, before any I/O: what the proxy refuses itself, who decides the
backend, and the outbound head. Each step returns values (Go's ProxyRequest.Out); `plan_into` writes
them into the request's record in one place. Shared by HTTP (proxy.py) and WebSocket (websocket.py).

Modelled on Go's httputil.ReverseProxy: the inbound request is never mutated, an outbound header list
is built; Connection-named headers are removed first, then the fixed hop-by-hop list (headers.py),
then the proxy adds its own (so a client cannot strip them). Header bytes are never re-encoded.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
import re
from functools import lru_cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from . import bucketing
from .config import ROLES, UID_COOKIE, Config, Route
from .decide import Facts, decide
from .headers import DROP_UPSTREAM, DROP_UPSTREAM_TRUSTED, KEPT, connection_tokens
from .record import RequestRecord
from .refused import Refused

if TYPE_CHECKING:
    from .runtime import Runtime, Snapshot

Scope = dict[str, Any]

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


def begin(scope: Scope) -> tuple[RequestRecord, dict[bytes, bytes], int]:
    """The request's record, its headers by name, and how many Host headers it had."""
    raw_headers: list[tuple[bytes, bytes]] = scope["headers"]
    hd = dict(raw_headers)
    hosts = 1 if b"host" in hd else 0
    if len(hd) < len(raw_headers):  # a repeated header: the slow path reads them as lists
        hd, hosts = _merged_headers(raw_headers)
    raw_rid = hd.get(b"x-request-id")
    if raw_rid is not None and _SANE_REQUEST_ID(raw_rid):
        rid = raw_rid.decode("ascii")  # the client's, kept unless the backend checks ids (Planner.outbound)
        return RequestRecord(scope, rid, hd, rid), hd, hosts
    return RequestRecord(scope, _new_request_id(), hd, None), hd, hosts


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


def checked_target(
scope: Scope, method: str, path: str, hd: dict[bytes, bytes], hosts: int, cfg: Config
) -> tuple[bytes, str] | None:
    """What the proxy refuses itself (raises Refused), else the upstream target (normalised path + query)
    and the path routes match; None for OPTIONS *."""
    raw_path: bytes = scope.get("raw_path") or path.encode()
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
    target, path = normal
    qs = scope.get("query_string")
    return (target + b"?" + qs if qs else target), path


# What steps 2 and 3 return: plain tuples, not NamedTuples (a NamedTuple's __new__ is a Python call per request)
# Choice: route, route_name, role, backend, user_bucket, reason, handler, set_cookie (remembers a new anonymous id)
Choice = tuple["Route | None", str, str, str, "int | None", str, str, "bytes | None"]
# Outbound: the outbound headers, and the client (a trusted proxy may name it), request_id, client_request_id
Outbound = tuple[list[tuple[bytes, bytes]], str, str, "str | None"]


class Planner:
    """The steps that need the runtime (the snapshot, the pools, the force token)."""

    def __init__(self, runtime: Runtime) -> None:
        self.rt = runtime
        s = runtime.settings
        self.force_token = s.force_token.encode() if s.force_token else None

    def prepare(self, scope: Scope) -> RequestRecord:
        """The same decision for an upgrade: the call with its outbound request (target, headers,
        Set-Cookie); raises Refused."""
        call, hd, hosts = begin(scope)
        snap = self.rt.snapshot
        checked = checked_target(scope, call.method, call.path, hd, hosts, snap.config)
        if checked is None:
            raise Refused(400, "bad_request", "the request target must be a path")
        call.target, call.path = checked
        plan_into(self, scope, call, hd, snap)
        return call

    def choose(self, scope: Scope, call: RequestRecord, snap: Snapshot) -> Choice:
        """decide() for this request: its route, role, backend, bucket, reason and handler, and the
        Set-Cookie that remembers a new anonymous id."""
        cfg = snap.config
        hd = call.inbound
        route = cfg.match(call.path)
        route_name = route.name if route is not None else "unmatched"
        set_cookie = None
        forced = self._forced(hd, cfg) if b"x-splitter-backend" in hd else None
        # the peer is looked up (a cached lookup) only for a route with a `trusted: true` cohort
        trusted = route is not None and route.trusted_cohorts and _peer_trusted(call.client, cfg.trusted_proxies)
        facts = Facts(forced, bucketing.user_id(cfg.user_id, hd, cfg.anonymous == "cookie"), hd, trusted)
        decision = decide(snap, route, facts)
        if decision is None:  # anonymous under `anonymous: cookie`: a new id, kept in a cookie
            uid = os.urandom(16).hex().encode()
            set_cookie = _uid_cookie(uid, _is_https(scope, hd, cfg.trusted_proxies))
            decision = decide(snap, route, facts._replace(user_id=uid))
            assert decision is not None
        role, backend, bucket, reason = decision
        handler = ("new_" if role == "new" else "old_") + route_name
        return route, route_name, role, backend, bucket, reason, handler, set_cookie

    def _forced(self, hd: dict[bytes, bytes], cfg: Config) -> str | None:
        """The role an X-Splitter-Backend header names, when this request may force it."""
        role = _FORCEABLE.get(hd.get(b"x-splitter-backend", b""))
        if role is None or not self._force_allowed(cfg.environment, hd.get(b"x-splitter-token")):
            return None
        return role

    def outbound(self, scope: Scope, call: RequestRecord, hd: dict[bytes, bytes], cfg: Config) -> Outbound:
        """The outbound headers, and the client (a trusted proxy may name it), request id and client's
        request id the log and the answer carry."""
        peer = client = call.client
        request_id, client_request_id = call.request_id, call.client_request_id
        trusted = bool(cfg.trusted_proxies) and _peer_trusted(peer, cfg.trusted_proxies)
        drop = DROP_UPSTREAM_TRUSTED if trusted else DROP_UPSTREAM
        conn = hd.get(b"connection")
        if conn is not None:
            drop = drop | (connection_tokens(conn) - KEPT)
        # a list, not a dict: repeated headers stay repeated; the names added below were dropped above
        out = [h for h in scope["headers"] if h[0] not in drop]  # the inbound tuples themselves: none built
        if b"host" not in hd:  # HTTP/1.0 without Host: the upstream speaks HTTP/1.1
            assert call.backend is not None
            out.append((b"host", self.rt.pool(cfg.backends[call.backend]).authority))
        cl = hd.get(b"content-length")
        if cl is not None:  # checked digits (checked_target); a chunked body gets its framing from upstream.Pool
            out.append((b"content-length", b"%d" % int(cl)))
        peer_b = peer.encode()
        xff = hd.get(b"x-forwarded-for") if trusted else None
        if xff:
            client = _client_from_xff(xff, cfg.trusted_proxies) or peer
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
        if client_request_id is not None and cfg.backends[call.backend].check_request_id:
            # the answer is matched on an id the proxy minted, never on one the client chose (or could guess)
            out.append((b"x-client-request-id", client_request_id.encode()))
            request_id = _new_request_id()
        else:
            client_request_id = None
        out.append((b"x-request-id", request_id.encode()))
        out.append((b"x-splitter-handler", (call.handler or "").encode()))
        return out, client, request_id, client_request_id

    def _force_allowed(self, environment: str, token: bytes | None) -> bool:
        if environment == "development":
            return True
        return self.force_token is not None and token is not None and hmac.compare_digest(token, self.force_token)


def plan_into(planner: Planner, scope: Scope, call: RequestRecord, hd: dict[bytes, bytes], snap: Snapshot) -> None:
    """Steps 2 and 3 into the record: the one place they write it (a function, not a method: one lookup less
    per request on the hot path)."""
    (
        call.route, call.route_name, call.role, call.backend, call.user_bucket, call.reason, call.handler,
        call.set_cookie,
    ) = planner.choose(scope, call, snap)  # fmt: skip
    call.headers, call.client, call.request_id, call.client_request_id = planner.outbound(scope, call, hd, snap.config)


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
