"""routes.yaml -> frozen Config.

Every problem is reported as ``file:line: key.path: message`` so an operator can
jump straight to it; all problems of a file are collected, not just the first.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml

from .routes import RouteTable

ROLES = ("legacy", "new")  # a request's side: what windows, guard, rollout, shadow and metrics compare
# role -> the backend that serves it, by default: the only place "legacy"/"new" are backend names
DEFAULT_BACKENDS: Mapping[str, str] = MappingProxyType({"legacy": "legacy", "new": "new"})
BACKENDS = tuple(DEFAULT_BACKENDS.values())  # the backends routes.yaml defines
ANONYMOUS = ("cookie", *ROLES)
ID_KINDS = ("header", "cookie", "jwt_sub")
NAME_RE = re.compile(r"[a-z0-9_]+")
DEFAULT_MAX_BODY = 1 << 30
UID_COOKIE = "splitter_uid"
DEFAULT_P95_TOLERANCE_MS = 5.0
DEFAULT_RETIRE_AFTER_S = 259200.0  # the migration plan's "72 hours in production without issues"
# what a change history event (history.py) can be; `notify[].events` filters on these
CHANGE_ACTIONS: tuple[str, ...] = ("set", "clear", "rollback", "kill", "guard_trip", "reload")
ROLLOUT_CHANGES = ("step", "done", "rollback", "pause", "resume", "abort", "promote", "restart", "stalled", "baking")
CHANGE_ACTIONS += tuple(f"rollout_{a}" for a in ROLLOUT_CHANGES)
CHANGE_ACTIONS += ("ready_to_retire", "retire")  # the finish line: legacy unused for retire_after_s; `splitter retire`
CHANGE_ACTIONS += ("cohort",)  # runtime members of a `users` cohort added or removed (admin.change_cohort)
NOTIFY_FORMATS = ("json", "slack")
ENV_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class ConfigError(Exception):
    """A routes.yaml that cannot be used; ``errors`` holds one line per problem."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


Percent = int | float  # 0..100 in 0.01 steps, as nginx split_clients; a whole percent is an int (10, not 10.0)
PERCENT_RULE = "a number 0..100 with at most two decimals"


def as_percent(v: object) -> Percent | None:
    """`v` as a percent (0..100, at most two decimals), a whole one as an int so it prints and
    serializes as 10, never 10.0; None for anything else (0.001, -1, 101, NaN, "abc", true)."""
    if isinstance(v, bool) or not isinstance(v, int | float):
        return None
    if isinstance(v, int):
        return v if 0 <= v <= 100 else None
    if not (math.isfinite(v) and 0 <= v <= 100):
        return None
    hundredths = round(v * 100)
    if abs(v * 100 - hundredths) > 1e-9:  # 0.29 * 100 is 28.999999999999996: a float's error, not a third decimal
        return None
    return hundredths // 100 if hundredths % 100 == 0 else hundredths / 100


def parse_percent(text: str) -> Percent | None:
    """A percent typed by a person (`splitter set auth 1.5`) or stored as text (Redis); None if it is not one."""
    try:
        return as_percent(float(text))
    except ValueError:
        return None


@dataclass(frozen=True)
class Backend:
    name: str
    url: str  # origin only: scheme://host[:port]
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_connections: int = 1024  # open upstream connections; past it, requests wait up to connect_timeout, then 503
    check_request_id: bool = False  # the backend echoes X-Request-ID: an answer carrying another ID is a 502
    # an idle kept-alive connection is not reused after this long: below the backend's own keep-alive timeout
    # (uvicorn, Node, Apache: 5 s; gunicorn: 2 s), so the backend never closes one just as a request is written
    idle_timeout_s: float = 1.5


@dataclass(frozen=True)
class IdSource:
    kind: str  # header | cookie | jwt_sub
    name: str  # header or cookie name; header names are lower-case


@dataclass(frozen=True)
class GuardSpec:
    max_error_rate: float
    min_requests: int = 50
    window_s: float = 60.0
    max_p95_ratio: float | None = None
    max_error_increase: float | None = None  # new minus legacy error rate (judged with confidence)
    confidence: float | None = None  # judge.py: trip only when the data show the breach at this level


@dataclass(frozen=True)
class ShadowSpec:
    percent: Percent = 100
    methods: tuple[str, ...] = ("GET", "HEAD")
    ignore: tuple[str, ...] = ()
    headers: tuple[str, ...] = ("content-type",)


@dataclass(frozen=True)
class PromGate:
    """A PromQL template ({route}, {role} filled in) read from the rollout's Prometheus: new / legacy
    within min_ratio..max_ratio, and/or new's value within min..max."""

    name: str
    query: str
    min_ratio: float | None = None
    max_ratio: float | None = None
    min: float | None = None
    max: float | None = None


@dataclass(frozen=True)
class Gates:
    max_error_rate: float | None = None
    max_p95_ms: float | None = None
    max_p95_ratio: float | None = None
    min_requests: int = 0
    max_error_increase: float | None = None
    confidence: float | None = None  # judge.py: pass / fail only on evidence at this level, else wait
    # max_p95_ratio fails only when new is also slower than legacy by more than this: on a 1.3 ms service a
    # 0.3 ms difference is a 20 % ratio no user can feel (the migration plan's "within 10 %" of what matters)
    p95_tolerance_ms: float = DEFAULT_P95_TOLERANCE_MS
    no_new_errors: bool = False  # an error type (status >= 400, a listed status, a proxy failure kind) new adds fails
    no_new_errors_statuses: tuple[int, ...] = ()  # statuses below 400 to count as error types too (e.g. 307)
    max_mismatch_rate: float | None = None  # the share of the route's shadow comparisons that may differ
    prometheus: tuple[PromGate, ...] = ()  # queries of the rollout's Prometheus (--prometheus URL)


@dataclass(frozen=True)
class Hook:
    """A URL the rollout POSTs {route, from, to} to before entering a step; anything but a 2xx within
    timeout_s holds the step, and `retries` failures after the first roll the rollout back."""

    url: str
    timeout_s: float = 60.0
    retries: int = 2


@dataclass(frozen=True)
class RolloutSpec:
    steps: tuple[Percent, ...]
    interval_s: float
    gates: Gates
    approval: frozenset[int] = frozenset()  # indexes of the steps entered only on `splitter rollout promote`
    max_wait_s: float | None = None  # a step held longer than this: event `stalled` (once), and it keeps holding
    before_step: tuple[Hook, ...] = ()  # called, in order, before the controller enters a step
    bake_s: float = 0.0  # after the last step's gates held: `baking` this long (still judged), then done
    retire_after_s: float = DEFAULT_RETIRE_AFTER_S  # done and legacy unused this long: ready to retire


@dataclass(frozen=True)
class WebSocketSpec:
    max_message_bytes: int = 1024 * 1024  # a bigger message closes the connection with 1009
    idle_timeout_s: float = 300.0  # no message either way for this long: closed


@dataclass(frozen=True)
class NotifyTarget:
    url: str | None  # or, a secret, from the environment variable url_env (cli.py reads it)
    url_env: str | None = None
    events: tuple[str, ...] = ()  # empty: every change
    format: str = "json"

    @property
    def label(self) -> str:
        """How logs name the target: the variable, or the URL's host (never a secret path)."""
        return f"${self.url_env}" if self.url_env else urlsplit(self.url or "").netloc


COHORT_MATCHERS = ("header", "cookie", "jwt_claim", "users")  # what a cohort looks at
COHORT_OPS = ("equals", "in", "prefix", "suffix")  # how header/cookie/jwt_claim values are compared
MAX_COHORT_MEMBERS = 100_000  # runtime members of one `users` cohort (routes.yaml's own count too)


@dataclass(frozen=True)
class Cohort:
    """`routes[].cohorts[]`: users sent to the route's `to` side before the percent is looked at.
    `header`/`cookie`/`jwt_claim` compare `key`'s value by `op` with `values` (`equals`/`prefix`/
    `suffix`: one value; `in`: several); `users` matches the user id against `users` (routes.yaml's
    own) and the members added at runtime (Snapshot.members). `trusted`: a header, cookie or jwt_claim
    cohort matches only a request whose peer is in `trusted_proxies` (any client can set a header, a
    cookie or an unsigned JWT; a proxy in front that strips and sets them can be trusted)."""

    name: str
    to: str  # a role: legacy | new
    matcher: str  # one of COHORT_MATCHERS
    key: str = ""  # the header, cookie or claim name ("" for users)
    op: str = ""  # one of COHORT_OPS ("" for users)
    values: tuple[str, ...] = ()
    users: frozenset[bytes] = frozenset()
    token_header: str = "authorization"  # jwt_claim: the header with the Bearer token (user_id's jwt_sub, if any)
    trusted: bool = False  # matches only requests from a trusted_proxies peer
    # precomputed for decide(), so a request pays a dict lookup and one comparison per cohort
    reason: str = field(init=False, repr=False, compare=False)  # "cohort:NAME"
    raw_key: bytes = field(init=False, repr=False, compare=False)  # the header (lower-case) or cookie name
    raw_token_header: bytes = field(init=False, repr=False, compare=False)
    raw_values: tuple[bytes, ...] = field(init=False, repr=False, compare=False)  # for prefix / suffix
    value_set: frozenset[bytes] = field(init=False, repr=False, compare=False)  # for equals / in

    def __post_init__(self) -> None:
        key = self.key.lower() if self.matcher == "header" else self.key
        raw = tuple(v.encode("utf-8", "surrogatepass") for v in self.values)
        for name, value in (
            ("reason", f"cohort:{self.name}"),
            ("raw_key", key.encode("latin-1", "replace")),
            ("raw_token_header", self.token_header.lower().encode("latin-1", "replace")),
            ("raw_values", raw),
            ("value_set", frozenset(raw)),
        ):
            object.__setattr__(self, name, value)


@dataclass(frozen=True)
class Route:
    name: str
    prefix: str
    percent: Percent  # for the environment in force
    percent_by_env: Mapping[str, Percent] | None = None
    salt: str | None = None
    guard: GuardSpec | None = None
    shadow: ShadowSpec | None = None
    rollout: RolloutSpec | None = None
    backends: Mapping[str, str] = field(default_factory=lambda: DEFAULT_BACKENDS)  # role -> backend name
    cohorts: tuple[Cohort, ...] = ()  # tried in order before the percent
    # whether a cohort is `trusted: true`: only then does the proxy look up whether the peer is trusted
    trusted_cohorts: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "trusted_cohorts", any(c.trusted for c in self.cohorts))


@dataclass(frozen=True)
class RedisHA:
    """The `redis:` options beyond url and prefix: Sentinel, credentials (env variable names), TLS."""

    sentinels: tuple[tuple[str, int], ...] = ()
    service: str | None = None
    db: int = 0
    password_env: str | None = None
    username_env: str | None = None
    tls: bool = False


@dataclass(frozen=True)
class Config:
    path: str
    environment: str
    backends: Mapping[str, Backend]
    routes: tuple[Route, ...]
    user_id: tuple[IdSource, ...] = ()
    anonymous: str = "cookie"
    unmatched: str = "legacy"
    redis_url: str | None = None
    redis_prefix: str = "splitter"
    redis_ha: RedisHA = field(default_factory=RedisHA)
    trusted_proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_body_bytes: int = DEFAULT_MAX_BODY
    websocket: WebSocketSpec = field(default_factory=WebSocketSpec)
    notify: tuple[NotifyTarget, ...] = ()
    admin_reads: str = "open"  # or "token": reads on /admin/* need a viewer token too
    admin_single_token: bool = True  # False: $SPLITTER_ADMIN_TOKEN proves nothing (named tokens only)
    state_path: str | None = None  # `state.path` as written (None: the default file next to routes.yaml)
    by_name: Mapping[str, Route] = field(default_factory=dict)
    role_backends: Mapping[str, str] = field(default_factory=lambda: DEFAULT_BACKENDS)  # when no route matches
    # the prefixes by segment (routes.py), built once at load
    _table: RouteTable[Route] = field(default_factory=lambda: RouteTable(()), compare=False, repr=False)

    def secret_names(self) -> list[str]:
        """The environment variables notify targets take their URLs from."""
        return [t.url_env for t in self.notify if t.url_env]

    def match(self, path: str) -> Route | None:
        """Longest prefix on a segment boundary: /api/auth matches /api/auth/x, not /api/authx."""
        return self._table.match(path)


# --- loading ---------------------------------------------------------------


class _Doc:
    """Plain data from YAML plus the line of every key path."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: dict[str, int] = {}
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        line = self.lines.get(path)
        if line is None:  # report at the closest parent that has a line
            parent = path
            while line is None and parent:
                parent = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", parent)
                if parent == path:
                    break
                line = self.lines.get(parent)
        self.errors.append(f"{self.filename}:{line or 1}: {path or '(top)'}: {message}")

    def plain(self, loader: yaml.SafeLoader, node: yaml.Node, path: str) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for knode, vnode in node.value:
                key = str(loader.construct_object(knode))
                sub = f"{path}.{key}" if path else key
                if key in out:
                    self.lines[sub] = knode.start_mark.line + 1
                    self.error(sub, "duplicate key")
                    continue
                self.lines[sub] = knode.start_mark.line + 1
                out[key] = self.plain(loader, vnode, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.plain(loader, item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        return loader.construct_object(node)


def load(path: str | Path, environment: str | None = None, backend_urls: BackendURLs = ()) -> Config:
    """Read and validate a routes.yaml; raise ConfigError naming file:line: key. `backend_urls` (serve
    --backend-url NAME=URL) replace the named backends' URLs on every load, reloads included, so one
    routes.yaml serves on other ports (make run's BASE_PORT) and stays the file people edit."""
    p = Path(path)
    name = str(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{name}:0: (file): not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{name}:0: (file): cannot read: {exc}"]) from None
    return parse(text, name, environment, backend_urls)


BackendURLs = tuple[tuple[str, str], ...]


def parse(
    text: str, filename: str = "routes.yaml", environment: str | None = None, backend_urls: BackendURLs = ()
) -> Config:
    doc = _Doc(filename)
    loader = None
    try:
        loader = yaml.SafeLoader(text)  # the reader already rejects control characters
        node = loader.get_single_node()
        data = doc.plain(loader, node, "") if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else text[: getattr(exc, "position", 0)].count("\n") + 1
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or str(exc).splitlines()[0]
        raise ConfigError([f"{filename}:{line}: (yaml): invalid YAML: {problem}"]) from None
    except RecursionError:
        raise ConfigError([f"{filename}:1: (yaml): invalid YAML: nested too deeply"]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if doc.errors:
        raise ConfigError(doc.errors)
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{filename}:1: (top): must be a mapping with backends and routes, got an empty or non-mapping document"]
        )
    config = _build(doc, _with_urls(data, backend_urls, filename), environment)
    if doc.errors:
        raise ConfigError(doc.errors)
    assert config is not None
    return config


def _with_urls(data: dict[str, Any], backend_urls: BackendURLs, filename: str) -> dict[str, Any]:
    """routes.yaml's document with the given backends' URLs replaced (validated like the file's own)."""
    backends = data.get("backends")
    for name, url in backend_urls:
        if not isinstance(backends, dict) or not isinstance(backends.get(name), dict):
            raise ConfigError([f"{filename}:0: --backend-url {name}={url}: the file has no backend {name!r}"])
        backends = {**backends, name: {**backends[name], "url": url}}
    return {**data, "backends": backends} if backend_urls else data


# The shape of routes.yaml, one table for both the validator (which keys each section allows)
# and `json_schema()` (what editors check as ops type). A string value names another section.
_POSITIVE: dict[str, Any] = {"type": "number", "exclusiveMinimum": 0}
_RATE: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1}
_COUNT: dict[str, Any] = {"type": "integer", "minimum": 0}
_PERCENT: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 100, "multipleOf": 0.01}
_STRINGS: dict[str, Any] = {"type": "array", "items": {"type": "string"}}
_CONFIDENCE: dict[str, Any] = {"type": "number", "minimum": 0.5, "maximum": 0.999}
_STEP: dict[str, Any] = {"type": "number", "exclusiveMinimum": 0, "maximum": 100, "multipleOf": 0.01}
SECTIONS: dict[str, dict[str, Any]] = {
    "top": {
        "environment": {"type": "string"},
        "backends": "backends",
        "user_id": {
            "type": "array",
            "items": {
                "type": "object",
                "minProperties": 1,
                "maxProperties": 1,
                "additionalProperties": False,
                "properties": {k: {"type": "string", "minLength": 1} for k in ID_KINDS},
            },
        },
        "anonymous": {"enum": list(ANONYMOUS)},
        "routes": {"type": "array", "items": {"$ref": "#/$defs/route"}},
        "unmatched": {"enum": list(ROLES)},
        "redis": {"oneOf": [{"type": "null"}, {"$ref": "#/$defs/redis"}]},
        "trusted_proxies": _STRINGS,
        "max_body_bytes": {"type": "integer", "minimum": 1},
        "websocket": "websocket",
        "notify": {"type": "array", "items": {"$ref": "#/$defs/notify"}},
        "admin": "admin",
        "state": "state",
    },
    "notify": {
        "url": {"type": "string", "pattern": "^https?://"},
        "url_env": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "events": {"type": "array", "items": {"enum": list(CHANGE_ACTIONS)}},
        "format": {"enum": list(NOTIFY_FORMATS)},
    },
    "admin": {"reads": {"enum": ["open", "token"]}, "single_token": {"type": "boolean"}},
    "state": {"path": {"type": "string", "minLength": 1}},
    "websocket": {"max_message_bytes": {"type": "integer", "minimum": 1}, "idle_timeout_s": _POSITIVE},
    "backends": {name: "backend" for name in BACKENDS},
    "backend": {
        "url": {"type": "string", "pattern": "^https?://"},
        "connect_timeout": _POSITIVE,
        "read_timeout": _POSITIVE,
        "max_connections": {"type": "integer", "minimum": 1},
        "check_request_id": {"type": "boolean"},
        "idle_timeout_s": _POSITIVE,
    },
    "redis": {
        "url": {"type": "string", "pattern": "^(redis|rediss|unix)://"},
        "prefix": {"type": "string", "minLength": 1},
        "sentinels": {"type": "array", "minItems": 1, "items": {"type": "string", "pattern": "^[^:]+:[0-9]+$"}},
        "service": {"type": "string", "minLength": 1},
        "db": {"type": "integer", "minimum": 0},
        "password_env": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "username_env": {"type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$"},
        "tls": {"type": "boolean"},
    },
    "route": {
        "name": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "prefix": {"type": "string", "pattern": "^/"},
        "percent": {"oneOf": [_PERCENT, {"type": "object", "minProperties": 1, "additionalProperties": _PERCENT}]},
        "salt": {"type": "string"},
        "guard": "guard",
        "shadow": "shadow",
        "rollout": "rollout",
        "new": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "legacy": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "cohorts": {"type": "array", "items": {"$ref": "#/$defs/cohort"}},
    },
    "cohort": {
        "name": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "to": {"enum": list(ROLES)},
        "header": {"type": "string", "minLength": 1},
        "cookie": {"type": "string", "minLength": 1},
        "jwt_claim": {"type": "string", "minLength": 1},
        "users": {"type": "array", "maxItems": MAX_COHORT_MEMBERS, "items": {"type": ["string", "integer"]}},
        "equals": {"type": ["string", "integer"]},
        "in": {"type": "array", "minItems": 1, "items": {"type": ["string", "integer"]}},
        "prefix": {"type": "string", "minLength": 1},
        "suffix": {"type": "string", "minLength": 1},
        "trusted": {"type": "boolean"},
    },
    "guard": {
        "max_error_rate": _RATE,
        "min_requests": _COUNT,
        "window_s": _POSITIVE,
        "max_p95_ratio": _POSITIVE,
        "max_error_increase": _RATE,
        "confidence": _CONFIDENCE,
    },
    "shadow": {"percent": _PERCENT, "methods": _STRINGS, "ignore": _STRINGS, "headers": _STRINGS},
    "rollout": {
        "steps": {"type": "array", "minItems": 1, "items": {"oneOf": [_STEP, {"$ref": "#/$defs/step"}]}},
        "interval_s": _POSITIVE,
        "max_wait_s": _POSITIVE,
        "bake_s": {"type": "number", "minimum": 0},
        "retire_after_s": _POSITIVE,
        "before_step": {"type": "array", "items": {"$ref": "#/$defs/hook"}},
        "gates": "gates",
    },
    "hook": {"url": {"type": "string", "pattern": "^https?://"}, "timeout_s": _POSITIVE, "retries": _COUNT},
    "step": {"percent": _STEP, "approval": {"type": "boolean"}},
    "gates": {
        "max_error_rate": _RATE,
        "max_p95_ms": _POSITIVE,
        "max_p95_ratio": _POSITIVE,
        "min_requests": _COUNT,
        "max_error_increase": _RATE,
        "confidence": _CONFIDENCE,
        "p95_tolerance_ms": {"type": "number", "minimum": 0},
        "no_new_errors": {"type": "boolean"},
        "no_new_errors_statuses": {"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599}},
        "max_mismatch_rate": _RATE,
        "prometheus": {"type": "array", "items": {"$ref": "#/$defs/prometheus_gate"}},
    },
    "prometheus_gate": {
        "name": {"type": "string", "pattern": "^[a-z0-9_]+$"},
        "query": {"type": "string", "minLength": 1},
        "min_ratio": {"type": "number"},
        "max_ratio": {"type": "number"},
        "min": {"type": "number"},
        "max": {"type": "number"},
    },
}
_REQUIRED = {
    "top": ["backends", "routes"],
    "backends": list(BACKENDS),
    "backend": ["url"],
    "route": ["name", "prefix", "percent"],
    "cohort": ["name", "to"],
    "rollout": ["steps"],
    "step": ["percent"],
    "hook": ["url"],
    "prometheus_gate": ["name", "query"],
}
_TOP_KEYS = set(SECTIONS["top"])
_ROUTE_KEYS = set(SECTIONS["route"])


def json_schema() -> dict[str, Any]:
    """routes.yaml as a JSON Schema (draft 2020-12), from the same table the validator uses.
    The validator checks more (duplicates, percent maps naming the same environments, URLs)."""

    def obj(section: str) -> dict[str, Any]:
        props = {k: {"$ref": f"#/$defs/{v}"} if isinstance(v, str) else v for k, v in SECTIONS[section].items()}
        out: dict[str, Any] = {"type": "object", "additionalProperties": False, "properties": props}
        if section in _REQUIRED:
            out["required"] = _REQUIRED[section]
        if section == "backends":  # an open map of names; legacy and new are the defaults, so required
            out["additionalProperties"] = {"$ref": "#/$defs/backend"}
            out["propertyNames"] = {"pattern": "^[a-z0-9_]+$"}
        return out

    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": "splitter routes.yaml", **obj("top")}
    schema["$defs"] = {name: obj(name) for name in SECTIONS if name != "top"}
    return schema


def _unknown(doc: _Doc, data: dict[str, Any], allowed: set[str], path: str) -> None:
    for key in data:
        if key not in allowed:
            sub = f"{path}.{key}" if path else key
            doc.error(sub, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _mapping(doc: _Doc, value: Any, path: str) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        doc.error(path, f"must be a mapping, got {_show(value)}")
        return None
    return value


def _show(v: Any) -> str:
    if v is None:
        return "nothing"
    return repr(v) if isinstance(v, str) else str(v)


def _number(
    doc: _Doc,
    d: dict[str, Any],
    key: str,
    path: str,
    default: float | None,
    *,
    positive: bool = True,
    integer: bool = False,
    upper: float | None = None,
) -> Any:
    if key not in d:
        return default
    v = d[key]
    ok = _is_int(v) if integer else _is_num(v)
    kind = "an integer" if integer else "a number"
    if not ok or (positive and v <= 0 and not integer) or (integer and v < 0) or (upper is not None and v > upper):
        rng = (
            f" 0..{upper:g}"
            if upper is not None
            else (" > 0" if positive and not integer else " >= 0" if integer else "")
        )
        doc.error(f"{path}.{key}", f"must be {kind}{rng}, got {_show(v)}")
        return default
    return v


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
    if not isinstance(raw, list):
        doc.error("notify", f"must be a list like [{{url: https://..., format: json}}], got {_show(raw)}")
        return ()
    out = []
    for i, item in enumerate(raw):
        path = f"notify[{i}]"
        t = _mapping(doc, item, path)
        if t is None:
            continue
        _unknown(doc, t, set(SECTIONS["notify"]), path)
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


def _routes(
    doc: _Doc,
    raw: Any,
    environment: str,
    known: frozenset[str] = frozenset(BACKENDS),
    token_header: str = "authorization",
) -> list[Route]:
    if not isinstance(raw, list):
        doc.error("routes", f"must be a list, got {_show(raw)}")
        return []
    routes: list[Route] = []
    names: dict[str, str] = {}
    prefixes: dict[str, str] = {}
    env_sets: list[tuple[str, frozenset[str]]] = []
    for i, r in enumerate(raw):
        path = f"routes[{i}]"
        if not isinstance(r, dict):
            doc.error(path, f"must be a mapping with name, prefix, percent, got {_show(r)}")
            continue
        _unknown(doc, r, _ROUTE_KEYS, path)
        name = _unique_name(doc, r.get("name"), path, names, "name")
        prefix = r.get("prefix")
        if not isinstance(prefix, str) or not prefix.startswith("/"):
            doc.error(f"{path}.prefix", f"must be a path starting with /, got {_show(prefix)}")
            prefix = None
        else:
            if len(prefix) > 1:
                prefix = prefix.rstrip("/") or "/"
            if prefix in prefixes:
                doc.error(f"{path}.prefix", f"duplicate prefix {prefix!r} (also {prefixes[prefix]})")
            prefixes[prefix] = path
        percent, by_env = _percent(doc, r.get("percent"), f"{path}.percent", environment, "percent" in r)
        if by_env is not None:
            env_sets.append((f"{path}.percent", frozenset(by_env)))
        salt = r.get("salt")
        if salt is not None and not isinstance(salt, str):
            doc.error(f"{path}.salt", f"must be a string, got {_show(salt)}")
        guard = _guard(doc, r["guard"], f"{path}.guard") if "guard" in r else None
        shadow = _shadow(doc, r["shadow"], f"{path}.shadow") if "shadow" in r else None
        rollout = _rollout(doc, r["rollout"], f"{path}.rollout") if "rollout" in r else None
        if rollout is not None and rollout.gates.max_mismatch_rate is not None and "shadow" not in r:
            doc.error(f"{path}.rollout.gates.max_mismatch_rate", "judges the route's shadow comparisons: add `shadow:`")
        sides = _sides(doc, r, path, known)
        cohorts = _cohorts(doc, r["cohorts"], f"{path}.cohorts", token_header) if "cohorts" in r else ()
        if name and prefix and percent is not None:
            routes.append(Route(name, prefix, percent, by_env, salt, guard, shadow, rollout, sides, cohorts))
    if env_sets:
        first_path, first = env_sets[0]
        for p, envs in env_sets[1:]:
            if envs != first:
                doc.error(
                    p,
                    f"percent maps must all name the same environments: {', '.join(sorted(envs))} here, "
                    f"{', '.join(sorted(first))} at {first_path}",
                )
    return routes


def _unique_name(doc: _Doc, name: Any, path: str, seen: dict[str, str], what: str, where: str = "") -> str | None:
    """A `name:` matching [a-z0-9_]+ and not used before among `seen` (name -> the path that used it)."""
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        doc.error(f"{path}.name", f"must match [a-z0-9_]+, got {_show(name)}")
        return None
    if name in seen:
        doc.error(f"{path}.name", f"duplicate {what} {name!r}{where} (also {seen[name]})")
        return name
    seen[name] = path
    return name


def _sides(doc: _Doc, r: dict[str, Any], path: str, known: frozenset[str]) -> Mapping[str, str]:
    """`routes[].new` / `routes[].legacy`: the backends that serve this route's roles (default: new, legacy)."""
    if "new" not in r and "legacy" not in r:
        return DEFAULT_BACKENDS
    sides = dict(DEFAULT_BACKENDS)
    for role in (role for role in ROLES if role in r):
        name = r[role]
        if not isinstance(name, str) or name not in known:
            defined = ", ".join(sorted(known))
            doc.error(f"{path}.{role}", f"must name a backend defined under backends: ({defined}), got {_show(name)}")
        else:
            sides[role] = name
    return MappingProxyType(sides)


def _cohorts(doc: _Doc, raw: Any, path: str, token_header: str) -> tuple[Cohort, ...]:
    """`routes[].cohorts`: who goes to which side before the percent, tried in order."""
    if not isinstance(raw, list):
        doc.error(
            path, f"must be a list like [{{name: staff, header: X-Staff, equals: '1', to: new}}], got {_show(raw)}"
        )
        return ()
    out: list[Cohort] = []
    seen: dict[str, str] = {}
    for j, item in enumerate(raw):
        cpath = f"{path}[{j}]"
        c = _mapping(doc, item, cpath)
        if c is None:
            continue
        _unknown(doc, c, set(SECTIONS["cohort"]), cpath)
        name = _unique_name(doc, c.get("name"), cpath, seen, "cohort name", " in this route")
        to = c.get("to")
        if to not in ROLES:
            what = "required" if "to" not in c else f"got {_show(to)}"
            doc.error(f"{cpath}.to", f"must be new or legacy (the route's side this cohort goes to), {what}")
        cohort = _cohort_match(doc, c, cpath)
        trusted = _cohort_trusted(doc, c, cpath, cohort[0] if cohort is not None else None)
        if name and to in ROLES and cohort is not None:
            matcher, key, op, values, users = cohort
            out.append(Cohort(name, to, matcher, key, op, values, users, token_header, trusted))
    return tuple(out)


def _cohort_trusted(doc: _Doc, c: dict[str, Any], path: str, matcher: str | None) -> bool:
    """`trusted: true`: what the request says is believed only from a trusted_proxies peer. A users
    cohort matches the user id, which is not the cohort's to trust (it is the user_id sources')."""
    if "trusted" not in c:
        return False
    v = c["trusted"]
    if not isinstance(v, bool):
        doc.error(f"{path}.trusted", f"must be true or false, got {_show(v)}")
        return False
    if v and matcher == "users":
        doc.error(f"{path}.trusted", "is for header, cookie and jwt_claim cohorts; a users cohort matches the user id")
        return False
    return v


def _cohort_match(
    doc: _Doc, c: dict[str, Any], path: str
) -> tuple[str, str, str, tuple[str, ...], frozenset[bytes]] | None:
    """(matcher, key, op, values, users) of one cohort: exactly one matcher; header/cookie/jwt_claim
    with exactly one of equals, in, prefix, suffix; users with a list of ids."""
    matchers = [m for m in COHORT_MATCHERS if m in c]
    ops = [o for o in COHORT_OPS if o in c]
    if not matchers:
        doc.error(path, f"needs a matcher: one of {', '.join(COHORT_MATCHERS)}")
        return None
    if len(matchers) > 1:
        doc.error(f"{path}.{matchers[1]}", f"one matcher per cohort, got {' and '.join(matchers)}")
        return None
    matcher = matchers[0]
    if matcher == "users":
        if ops:
            doc.error(
                f"{path}.{ops[0]}",
                "a users cohort matches the user id; equals/in/prefix/suffix are for header, cookie and jwt_claim",
            )
            return None
        users = _cohort_users(doc, c["users"], f"{path}.users")
        return None if users is None else ("users", "", "", (), users)
    key = c[matcher]
    if not isinstance(key, str) or not key:
        doc.error(f"{path}.{matcher}", f"must be a {matcher.replace('jwt_', '')} name, got {_show(key)}")
        return None
    if len(ops) != 1:
        doc.error(
            f"{path}.{ops[1]}" if ops else path,
            f"{matcher} needs exactly one of {', '.join(COHORT_OPS)}" + (f", got {' and '.join(ops)}" if ops else ""),
        )
        return None
    op = ops[0]
    v = c[op]
    ok = (lambda x: isinstance(x, str) and x) if op != "equals" else (lambda x: isinstance(x, str) or _is_int(x))
    if op == "in" and (not isinstance(v, list) or not v or not all(isinstance(x, str) or _is_int(x) for x in v)):
        doc.error(f"{path}.in", f"must be a non-empty list of strings, got {_show(v)}")
        return None
    if op != "in" and not ok(v):
        doc.error(f"{path}.{op}", f"must be a{' non-empty' if op != 'equals' else ''} string, got {_show(v)}")
        return None
    values = tuple(str(x) for x in v) if op == "in" else (str(v),)
    return matcher, key, op, values, frozenset()


def _cohort_users(doc: _Doc, v: Any, path: str) -> frozenset[bytes] | None:
    if not isinstance(v, list) or not all((isinstance(x, str) and x) or _is_int(x) for x in v):
        doc.error(path, f"must be a list of user ids, got {_show(v)}")
        return None
    if len(v) > MAX_COHORT_MEMBERS:
        doc.error(path, f"at most {MAX_COHORT_MEMBERS} users per cohort, got {len(v)}")
        return None
    return frozenset(str(x).encode("utf-8", "surrogatepass") for x in v)


def _percent(
    doc: _Doc, v: Any, path: str, environment: str, present: bool
) -> tuple[Percent | None, dict[str, Percent] | None]:
    """A number 0..100 with at most two decimals, or a map of environment to one."""
    if not present:
        doc.error(path, f"required: {PERCENT_RULE}, or a map of environment to one")
        return None, None
    if not isinstance(v, dict):
        pct = as_percent(v)
        if pct is None:
            doc.error(path, f"must be {PERCENT_RULE}, got {_show(v)}")
        return pct, None
    ok, by_env = True, {}
    for env, raw in v.items():
        pct = as_percent(raw)
        if pct is None:
            doc.error(f"{path}.{env}", f"must be {PERCENT_RULE}, got {_show(raw)}")
            ok = False
        by_env[env] = pct if pct is not None else raw
    if environment not in v:
        doc.error(path, f"no value for environment {environment!r} (has: {', '.join(map(str, v)) or 'none'})")
        ok = False
    return (by_env[environment], by_env) if ok else (None, by_env)


def _guard(doc: _Doc, raw: Any, path: str) -> GuardSpec | None:
    g = _mapping(doc, raw, path)
    if g is None:
        return None
    _unknown(doc, g, set(SECTIONS["guard"]), path)
    if "max_error_rate" not in g:
        doc.error(f"{path}.max_error_rate", "required: a number 0..1")
    rate = _number(doc, g, "max_error_rate", path, 0.05, positive=False, upper=1)
    return GuardSpec(
        float(rate),
        int(_number(doc, g, "min_requests", path, 50, integer=True)),
        float(_number(doc, g, "window_s", path, 60.0)),
        _number(doc, g, "max_p95_ratio", path, None),
        _number(doc, g, "max_error_increase", path, None, positive=False, upper=1),
        _confidence(doc, g, path),
    )


def _no_new_errors(doc: _Doc, d: dict[str, Any], path: str) -> tuple[bool, tuple[int, ...]]:
    on = d.get("no_new_errors", False)
    if not isinstance(on, bool):
        doc.error(f"{path}.no_new_errors", f"must be true or false, got {_show(on)}")
        on = False
    statuses = d.get("no_new_errors_statuses", [])
    if not isinstance(statuses, list) or not all(_is_int(s) and 100 <= s <= 599 for s in statuses):
        doc.error(f"{path}.no_new_errors_statuses", f"must be a list of HTTP statuses 100..599, got {_show(statuses)}")
        statuses = []
    return on, tuple(statuses)


def _tolerance(doc: _Doc, d: dict[str, Any], path: str) -> float:
    v = d.get("p95_tolerance_ms", DEFAULT_P95_TOLERANCE_MS)
    if not _is_num(v) or v < 0:
        doc.error(f"{path}.p95_tolerance_ms", f"must be a number of milliseconds >= 0, got {_show(v)}")
        return DEFAULT_P95_TOLERANCE_MS
    return float(v)


def _confidence(doc: _Doc, d: dict[str, Any], path: str) -> float | None:
    v = d.get("confidence")
    if v is None:
        return None
    if not _is_num(v) or not 0.5 <= v <= 0.999:
        doc.error(f"{path}.confidence", f"must be a number 0.5..0.999 (e.g. 0.99), got {_show(v)}")
        return None
    return float(v)


def _shadow(doc: _Doc, raw: Any, path: str) -> ShadowSpec | None:
    s = _mapping(doc, raw, path)
    if s is None:
        return None
    _unknown(doc, s, set(SECTIONS["shadow"]), path)
    pct = as_percent(s.get("percent", 100))
    if pct is None:
        doc.error(f"{path}.percent", f"must be {PERCENT_RULE}, got {_show(s['percent'])}")
        pct = 100
    methods = s.get("methods", ["GET", "HEAD"])
    ignore = s.get("ignore", [])
    headers = s.get("headers", ["content-type"])
    for key, val in (("methods", methods), ("ignore", ignore), ("headers", headers)):
        if not isinstance(val, list) or not all(isinstance(x, str) for x in val):
            doc.error(f"{path}.{key}", f"must be a list of strings, got {_show(val)}")
            return None
    for i, p in enumerate(ignore):
        if not p.startswith("$"):
            doc.error(f"{path}.ignore[{i}]", f"must be a JSON path like $.generated_at, got {p!r}")
    return ShadowSpec(pct, tuple(m.upper() for m in methods), tuple(ignore), tuple(h.lower() for h in headers))


def _rollout(doc: _Doc, raw: Any, path: str) -> RolloutSpec | None:
    r = _mapping(doc, raw, path)
    if r is None:
        return None
    _unknown(doc, r, set(SECTIONS["rollout"]), path)
    steps, approval = _steps(doc, r.get("steps"), f"{path}.steps")
    interval = _number(doc, r, "interval_s", path, 86400.0)
    gates_raw = r.get("gates", {})
    g = _mapping(doc, gates_raw, f"{path}.gates") or {}
    gp = f"{path}.gates"
    _unknown(doc, g, set(SECTIONS["gates"]), gp)
    gates = Gates(
        _number(doc, g, "max_error_rate", gp, None, positive=False, upper=1),
        _number(doc, g, "max_p95_ms", gp, None),
        _number(doc, g, "max_p95_ratio", gp, None),
        int(_number(doc, g, "min_requests", gp, 0, integer=True)),
        _number(doc, g, "max_error_increase", gp, None, positive=False, upper=1),
        _confidence(doc, g, gp),
        _tolerance(doc, g, gp),
        *_no_new_errors(doc, g, gp),
        _number(doc, g, "max_mismatch_rate", gp, None, positive=False, upper=1),
        _prom_gates(doc, g.get("prometheus", []), f"{gp}.prometheus"),
    )
    max_wait = _number(doc, r, "max_wait_s", path, None)
    hooks = _hooks(doc, r.get("before_step", []), f"{path}.before_step")
    bake = float(_number(doc, r, "bake_s", path, 0.0, positive=False))
    if bake < 0:
        doc.error(f"{path}.bake_s", f"must be a number >= 0 (seconds; 0: no bake), got {bake:g}")
        bake = 0.0
    retire_after = float(_number(doc, r, "retire_after_s", path, DEFAULT_RETIRE_AFTER_S))
    return RolloutSpec(tuple(steps), float(interval), gates, approval, max_wait, hooks, bake, retire_after)


def _prom_gates(doc: _Doc, raw: Any, path: str) -> tuple[PromGate, ...]:
    if not isinstance(raw, list):
        doc.error(path, f"must be a list like [{{name: logins, query: '...', min_ratio: 0.98}}], got {_show(raw)}")
        return ()
    out = []
    for i, item in enumerate(raw):
        at = f"{path}[{i}]"
        g = _mapping(doc, item, at)
        if g is None:
            continue
        _unknown(doc, g, set(SECTIONS["prometheus_gate"]), at)
        name, query = g.get("name"), g.get("query")
        if not isinstance(name, str) or not NAME_RE.fullmatch(name):
            doc.error(f"{at}.name", f"must match [a-z0-9_]+, got {_show(name)}")
            continue
        if not isinstance(query, str) or not query.strip():
            doc.error(f"{at}.query", f"must be a PromQL query ({{route}}, {{role}} filled in), got {_show(query)}")
            continue
        bounds = [_number(doc, g, k, at, None, positive=False) for k in ("min_ratio", "max_ratio", "min", "max")]
        if all(b is None for b in bounds):
            doc.error(at, "needs one of min_ratio, max_ratio (new / legacy), min, max (new's value)")
            continue
        out.append(PromGate(name, query, *bounds))
    return tuple(out)


def _hooks(doc: _Doc, raw: Any, path: str) -> tuple[Hook, ...]:
    if not isinstance(raw, list):
        doc.error(path, f"must be a list like [{{url: http://smoke/run, timeout_s: 60, retries: 2}}], got {_show(raw)}")
        return ()
    out = []
    for i, item in enumerate(raw):
        h = _mapping(doc, item, f"{path}[{i}]")
        if h is None:
            continue
        _unknown(doc, h, set(SECTIONS["hook"]), f"{path}[{i}]")
        url = h.get("url")
        if not isinstance(url, str) or not re.match(r"https?://[^/?#]", url):
            doc.error(f"{path}[{i}].url", f"must be an http(s):// URL, got {_show(url)}")
            continue
        timeout = _number(doc, h, "timeout_s", f"{path}[{i}]", 60.0)
        retries = int(_number(doc, h, "retries", f"{path}[{i}]", 2, integer=True))
        out.append(Hook(url, float(timeout), retries))
    return tuple(out)


def _steps(doc: _Doc, raw: Any, path: str) -> tuple[list[Percent], frozenset[int]]:
    """Rising percents above 0 up to 100 (0.5, 1, 5, ...: 0.01 steps); a step written
    {percent: N, approval: true} waits for a promote."""
    steps, approval = [], set()
    for i, item in enumerate(raw if isinstance(raw, list) else []):
        if isinstance(item, dict):
            _unknown(doc, item, set(SECTIONS["step"]), f"{path}[{i}]")
            if not isinstance(item.get("approval", False), bool):
                doc.error(f"{path}[{i}].approval", f"must be true or false, got {_show(item['approval'])}")
            if item.get("approval") is True:
                approval.add(i)
            item = item.get("percent")
        steps.append(item)
    pcts = [p for p in map(as_percent, steps) if p is not None and p > 0]
    rising = len(pcts) == len(steps) and pcts == sorted(set(pcts))
    if not isinstance(raw, list) or not steps or not rising:
        shape = "each above 0 with at most two decimals, or {percent: N, approval: true}"
        doc.error(path, f"must be a rising list of percents up to 100 ({shape}), got {_show(raw)}")
        return [100], frozenset()
    return pcts, frozenset(approval)
