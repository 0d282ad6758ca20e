"""The validator: plain data -> Config, every problem collected as file:line: key.path: message.

This module holds the document's top level and its global sections (backends, user_id, redis,
trusted_proxies, websocket, notify, admin, state); a route's keys are validate_route.py's.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from ..routes import RouteTable
from .doc import _Doc, _entries, _is_int, _mapping, _number, _show, _unknown
from .keys import _TOP_KEYS, SECTIONS
from .model import (
    ANONYMOUS,
    BACKENDS,
    CHANGE_ACTIONS,
    DEFAULT_MAX_BODY,
    ENV_NAME_RE,
    ID_KINDS,
    NAME_RE,
    NOTIFY_FORMATS,
    ROLES,
    Backend,
    Config,
    IdSource,
    NotifyTarget,
    RedisHA,
    Route,
    WebSocketSpec,
)
from .validate_route import _routes


def _build(doc: _Doc, data: dict[str, Any], env_override: str | None) -> Config | None:
    _unknown(doc, data, _TOP_KEYS, "")
    environment = env_override or data.get("environment") or "development"
    if not isinstance(environment, str):
        doc.error("environment", f"must be a string, got {_show(environment)}")
        environment = "development"

    backends = _backends(doc, data)

    sources = _user_id(doc, data.get("user_id", []))
    anonymous = data.get("anonymous", "cookie")
    if anonymous not in ANONYMOUS:
        doc.error("anonymous", f"must be one of {', '.join(ANONYMOUS)}, got {_show(anonymous)}")
    unmatched = data.get("unmatched", "legacy")
    if unmatched not in ROLES:
        doc.error("unmatched", f"must be legacy or new, got {_show(unmatched)}")

    known = frozenset(data["backends"]) if isinstance(data.get("backends"), dict) else frozenset(BACKENDS)
    token_header = next((s.name for s in sources if s.kind == "jwt_sub"), "authorization")
    routes = _routes(doc, data.get("routes"), environment, known, token_header) if "routes" in data else []
    if "routes" not in data:
        doc.error("routes", "required: a list of routes (may be empty: [])")

    redis_url, redis_prefix, redis_ha = _redis(doc, data.get("redis"))

    trusted = _trusted(doc, data.get("trusted_proxies", []))
    _trust_needs_proxies(doc, routes, trusted)

    max_body = data.get("max_body_bytes", DEFAULT_MAX_BODY)
    if not _is_int(max_body) or max_body <= 0:
        doc.error("max_body_bytes", f"must be a positive integer, got {_show(max_body)}")
        max_body = DEFAULT_MAX_BODY
    websocket = _websocket(doc, data.get("websocket"))

    notify = _notify(doc, data.get("notify") or [])
    admin_reads, single_token = _admin(doc, data.get("admin"))
    state_path = _state(doc, data.get("state"))

    if doc.errors:
        return None
    return Config(
        path=doc.filename,
        environment=environment,
        backends=backends,
        routes=tuple(routes),
        user_id=tuple(sources),
        anonymous=anonymous,
        unmatched=unmatched,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        redis_ha=redis_ha,
        trusted_proxies=tuple(trusted),
        max_body_bytes=max_body,
        websocket=websocket,
        notify=notify,
        admin_reads=admin_reads,
        admin_single_token=single_token,
        state_path=state_path,
        by_name={r.name: r for r in routes},
        _table=RouteTable([(r.prefix, r) for r in routes]),
    )


def _backends(doc: _Doc, data: dict[str, Any]) -> dict[str, Backend]:
    """The `backends:` section: any names (legacy and new required: the defaults of every route),
    each a url and its timeouts and pool size."""
    backends: dict[str, Backend] = {}
    raw_backends = _mapping(doc, data.get("backends"), "backends") if "backends" in data else None
    if "backends" not in data:
        doc.error("backends", "required: legacy and new, each with a url")
    if raw_backends is not None:
        for bname in BACKENDS:
            if bname not in raw_backends:
                doc.error(f"backends.{bname}", "required, with a url")
        for bname in raw_backends:
            path = f"backends.{bname}"
            if not NAME_RE.fullmatch(bname):
                doc.error(path, f"a backend name must match [a-z0-9_]+, got {bname!r}")
                continue
            b = _mapping(doc, raw_backends[bname], path)
            if b is None:
                continue
            _unknown(doc, b, set(SECTIONS["backend"]), path)
            origin = _origin(doc, b.get("url"), f"{path}.url")
            ct = _number(doc, b, "connect_timeout", path, 5.0)
            rt = _number(doc, b, "read_timeout", path, 60.0)
            mc = _number(doc, b, "max_connections", path, 1024, integer=True)
            if mc == 0:
                doc.error(f"{path}.max_connections", "must be an integer >= 1, got 0")
                mc = 1
            check = b.get("check_request_id", False)
            if not isinstance(check, bool):
                doc.error(f"{path}.check_request_id", f"must be true or false, got {_show(check)}")
                check = False
            idle = _number(doc, b, "idle_timeout_s", path, 1.5)
            if origin:
                backends[bname] = Backend(bname, origin, float(ct), float(rt), int(mc), check, float(idle))
    return backends


def _trust_needs_proxies(doc: _Doc, routes: list[Route], trusted: list[Any]) -> None:
    """A `trusted: true` cohort with no trusted_proxies could never match: say so, not route nobody."""
    if trusted:
        return
    for i, r in enumerate(routes):
        for j, c in enumerate(r.cohorts):
            if c.trusted:
                doc.error(f"routes[{i}].cohorts[{j}].trusted", "needs trusted_proxies: the peers whose requests it may "
                          "match (e.g. trusted_proxies: [10.0.0.0/8]); none are set")


def _trusted(doc: _Doc, raw_trusted: Any) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """`trusted_proxies:` the CIDRs of peers whose X-Forwarded-* headers are kept and appended to."""
    trusted: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    if not isinstance(raw_trusted, list):
        doc.error("trusted_proxies", f"must be a list of CIDRs, got {_show(raw_trusted)}")
    else:
        for i, cidr in enumerate(raw_trusted):
            try:
                trusted.append(ipaddress.ip_network(str(cidr), strict=False))
            except ValueError:
                doc.error(f"trusted_proxies[{i}]", f"must be an IP network like 10.0.0.0/8, got {_show(cidr)}")
    return trusted


def _websocket(doc: _Doc, value: Any) -> WebSocketSpec:
    """The `websocket:` section: the largest message and the idle timeout."""
    websocket = WebSocketSpec()
    if value is not None:
        w = _mapping(doc, value, "websocket")
        if w is not None:
            _unknown(doc, w, set(SECTIONS["websocket"]), "websocket")
            size = _number(doc, w, "max_message_bytes", "websocket", websocket.max_message_bytes, integer=True)
            websocket = WebSocketSpec(
                max(1, int(size)), float(_number(doc, w, "idle_timeout_s", "websocket", websocket.idle_timeout_s))
            )
    return websocket


def _admin(doc: _Doc, value: Any) -> tuple[str, bool]:
    """The `admin:` section: whether reads of /admin/* are open or need a viewer token, and whether
    $SPLITTER_ADMIN_TOKEN still counts (single_token: false leaves the named tokens alone)."""
    admin_reads, single_token = "open", True
    if value is not None:
        a = _mapping(doc, value, "admin")
        if a is not None:
            _unknown(doc, a, set(SECTIONS["admin"]), "admin")
            admin_reads = a.get("reads", "open")
            if admin_reads not in ("open", "token"):
                doc.error("admin.reads", f"must be open or token, got {_show(admin_reads)}")
            single_token = a.get("single_token", True)
            if not isinstance(single_token, bool):
                doc.error("admin.single_token", f"must be true or false, got {_show(single_token)}")
                single_token = True
    return admin_reads, single_token


def _state(doc: _Doc, value: Any) -> str | None:
    """The `state:` section: where the embedded store keeps its file (used when there is no `redis:`)."""
    s = _mapping(doc, value, "state") if value is not None else None
    if s is None:
        return None
    _unknown(doc, s, set(SECTIONS["state"]), "state")
    path = s.get("path")
    if path is not None and not (isinstance(path, str) and path):
        doc.error("state.path", f'must be a file path (or ":memory:"), got {_show(path)}')
        return None
    return path


def _redis(doc: _Doc, value: Any) -> tuple[str | None, str, RedisHA]:
    """The `redis:` section: a URL or Sentinel (sentinels + service), a prefix, credentials' env names, TLS."""
    r = _mapping(doc, value, "redis") if value is not None else None
    if r is None:
        return None, "splitter", RedisHA()
    _unknown(doc, r, set(SECTIONS["redis"]), "redis")
    url = r.get("url")
    if url is not None:
        parts = urlsplit(str(url))
        if parts.scheme not in ("redis", "rediss", "unix") or not (parts.hostname or parts.path):
            doc.error("redis.url", f"must be a redis:// URL, got {_show(url)}")
    prefix = r.get("prefix", "splitter")
    if not isinstance(prefix, str) or not prefix:
        doc.error("redis.prefix", f"must be a non-empty string, got {_show(prefix)}")
    sentinels: list[tuple[str, int]] = []
    raw = r.get("sentinels")
    if raw is not None:
        if not isinstance(raw, list) or not raw:
            doc.error("redis.sentinels", f'must be a list of "host:port", got {_show(raw)}')
        else:
            for i, item in enumerate(raw):
                host, _, port = str(item).rpartition(":")
                if not host or not port.isdigit() or not 0 < int(port) < 65536:
                    doc.error(f"redis.sentinels[{i}]", f'must be "host:port", got {_show(item)}')
                else:
                    sentinels.append((host.strip("[]"), int(port)))
    service = r.get("service")
    if service is not None and (not isinstance(service, str) or not service):
        doc.error(
            "redis.service", f"must be the Sentinel service name (sentinel monitor NAME ...), got {_show(service)}"
        )
    if raw is not None and url is not None:
        doc.error("redis", "set either url or sentinels, not both")
    elif raw is not None and service is None:
        doc.error("redis.service", "required with sentinels: the name Sentinel monitors (e.g. mymaster)")
    elif service is not None and raw is None:
        doc.error("redis.sentinels", 'required with service: a list of "host:port"')
    db = r.get("db", 0)
    if not _is_int(db) or db < 0:
        doc.error("redis.db", f"must be an integer >= 0, got {_show(db)}")
        db = 0
    names = {}
    for key in ("password_env", "username_env"):
        names[key] = r.get(key)
        if names[key] is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", str(names[key])):
            doc.error(
                f"redis.{key}", f"must name an environment variable (like REDIS_PASSWORD), got {_show(names[key])}"
            )
    tls = r.get("tls", False)
    if not isinstance(tls, bool):
        doc.error("redis.tls", f"must be true or false, got {_show(tls)}")
    ha = RedisHA(tuple(sentinels), service, int(db), names["password_env"], names["username_env"], tls is True)
    return url, prefix, ha


def _origin(doc: _Doc, url: Any, path: str) -> str | None:
    if not isinstance(url, str):
        doc.error(path, f"must be an http:// URL, got {_show(url)}")
        return None
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        parts, port = None, None
    if (
        parts is None
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or parts.username
    ):
        doc.error(
            path,
            f"must be an origin like http://127.0.0.1:8001 (scheme, host, optional port; no path), got {_show(url)}",
        )
        return None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _notify(doc: _Doc, raw: Any) -> tuple[NotifyTarget, ...]:
    out = []
    for path, t in _entries(doc, raw, "notify", "{url: https://..., format: json}", set(SECTIONS["notify"])):
        url, url_env = t.get("url"), t.get("url_env")
        if (url is None) == (url_env is None):
            doc.error(path, "needs one of url or url_env (the name of an environment variable holding the URL)")
        elif url is not None and (not isinstance(url, str) or not re.match(r"https?://[^/?#]", url)):
            doc.error(f"{path}.url", f"must be an http(s):// URL, got {_show(url)}")
        elif url_env is not None and (not isinstance(url_env, str) or not ENV_NAME_RE.fullmatch(url_env)):
            doc.error(f"{path}.url_env", f"must be an environment variable name, got {_show(url_env)}")
        events = t.get("events", [])
        if not isinstance(events, list) or not all(e in CHANGE_ACTIONS for e in events):
            doc.error(f"{path}.events", f"must be a list of {', '.join(CHANGE_ACTIONS)}, got {_show(events)}")
            events = []
        fmt = t.get("format", "json")
        if fmt not in NOTIFY_FORMATS:
            doc.error(f"{path}.format", f"must be json or slack, got {_show(fmt)}")
        url, url_env = (url if isinstance(url, str) else None), (url_env if isinstance(url_env, str) else None)
        out.append(NotifyTarget(url, url_env, tuple(events), str(fmt)))
    return tuple(out)


def _user_id(doc: _Doc, raw: Any) -> list[IdSource]:
    if not isinstance(raw, list):
        doc.error("user_id", f"must be a list like [{{header: X-User-ID}}], got {_show(raw)}")
        return []
    out = []
    for i, item in enumerate(raw):
        path = f"user_id[{i}]"
        if not isinstance(item, dict) or len(item) != 1:
            doc.error(path, f"must be one of header: NAME, cookie: NAME, jwt_sub: HEADER, got {_show(item)}")
            continue
        ((kind, name),) = item.items()
        if kind not in ID_KINDS:
            doc.error(f"{path}.{kind}", f"unknown key (allowed: {', '.join(ID_KINDS)})")
        elif not isinstance(name, str) or not name:
            doc.error(f"{path}.{kind}", f"must be a header or cookie name, got {_show(name)}")
        else:
            out.append(IdSource(kind, name if kind == "cookie" else name.lower()))
    return out
