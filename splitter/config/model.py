"""routes.yaml as frozen dataclasses: what every layer reads, built once at load (load.py, validate.py).

The constants here (roles, id kinds, change actions, cohort matchers) are shared by the model, the
key table (keys.py) and the validator; a percent is one type with one rule (`as_percent`).
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from urllib.parse import urlsplit

from ..routes import RouteTable

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
    url: str | None  # or, a secret, from the environment variable url_env (the CLI reads it)
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
