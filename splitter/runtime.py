"""The running proxy's state, in a leaf module every layer imports downward.

Settings (what the CLI read), Snapshot (everything a request needs to be routed,
swapped whole) and Runtime (config, overrides, metrics, windows, upstream pools).
Runtime imports no layer above it: the guard, rollouts, shadow, proxy and admin
take a Runtime; app.create_app builds and wires them.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from . import bucketing
from . import config as config_mod
from .config import Backend, Config, ConfigError, Percent, Route
from .history import History
from .metrics import Metrics
from .notify import Notifier
from .store import State, Store, Unavailable, open_store, state_path
from .store.redis import Connect, RedisStore, describe
from .tokens import Tokens, TokensError
from .upstream import Pool
from .window import Windows

log = structlog.get_logger("splitter")
CONSOLE_SPAN_S = 300.0  # the console's charts: the last five minutes


@dataclass(frozen=True)
class Settings:
    """Process settings: the CLI builds them from flags and the environment."""

    config_path: str = "routes.yaml"
    host: str = "0.0.0.0"
    port: int = 8080
    admin_host: str = "127.0.0.1"
    admin_port: int = 8081
    workers: int = 1
    environment: str | None = None  # SPLITTER_ENV
    redis_url: str | None = None  # SPLITTER_REDIS_URL, wins over routes.yaml
    state_path: str | None = None  # --state: the embedded store's file, wins over routes.yaml's state.path
    prometheus_url: str | None = None  # --prometheus / SPLITTER_PROMETHEUS_URL: the rollouts' prometheus gates
    admin_token: str | None = None  # SPLITTER_ADMIN_TOKEN
    admin_allowed_hosts: tuple[str, ...] = ()  # --admin-allowed-hosts: names answered besides IPs and localhost
    tokens_file: str | None = None  # SPLITTER_ADMIN_TOKENS_FILE
    secrets: Mapping[str, str] = field(default_factory=dict)  # the variables routes.yaml names in url_env
    force_token: str | None = None  # SPLITTER_FORCE_TOKEN
    multiprocess_dir: str | None = None  # PROMETHEUS_MULTIPROC_DIR, with --workers > 1
    graceful_timeout: float = 30.0
    keepalive_timeout: float = 75.0
    header_timeout: float = 30.0
    access_log: bool = True
    access_log_path: str | None = None  # --access-log: the per-request lines to this file, not stdout
    backend_urls: tuple[tuple[str, str], ...] = ()  # --backend-url NAME=URL: over routes.yaml's, on every load
    body_timeout: float = 60.0  # seconds between reads of a request body; then 408
    send_timeout: float = 60.0  # seconds a client may take no response bytes; then its connection is cut
    reload_interval: float = 0.5
    redis_resync_interval: float = 1.0
    redis_username: str | None = None  # from the variable redis.username_env names
    redis_password: str | None = None  # from the variable redis.password_env names


def redis_connect(settings: Settings, cfg: Config) -> Connect:
    """Sentinel from routes.yaml unless SPLITTER_REDIS_URL names one Redis; credentials as the CLI read them."""
    ha = cfg.redis_ha
    sentinels = () if settings.redis_url else ha.sentinels
    return Connect(sentinels, ha.service, ha.db, settings.redis_username, settings.redis_password, ha.tls)


@dataclass(frozen=True)
class Snapshot:
    """Everything a request needs to be routed, swapped whole on every change."""

    config: Config
    percent: Mapping[str, Percent]
    sources: Mapping[str, str]
    kill: bool
    id_headers: tuple[bytes, ...] = field(default=())
    # runtime members of `users` cohorts: (route, cohort) -> user ids (routes.yaml's own are on the Cohort)
    members: Mapping[tuple[str, str], frozenset[bytes]] = field(default_factory=dict)
    # each route's percent as (whole, hundredths) for bucketing.is_new: converted here, once, not per request
    cuts: Mapping[str, tuple[int, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "cuts", {name: bucketing.cut(p) for name, p in self.percent.items()})


def make_snapshot(cfg: Config, state: State) -> Snapshot:
    percent, sources = {}, {}
    for r in cfg.routes:
        if r.name in state.percents:
            percent[r.name] = max(0, min(100, state.percents[r.name]))
            sources[r.name] = state.sources.get(r.name, "override")
        else:
            percent[r.name] = r.percent
            sources[r.name] = "file"
    names = {s.name.encode() for s in cfg.user_id if s.kind != "cookie"}
    names.add(b"cookie")
    return Snapshot(cfg, percent, sources, state.kill, tuple(sorted(names)))


class Runtime:
    """The running proxy's state: config, overrides, metrics, upstream sessions."""

    def __init__(self, settings: Settings, cfg: Config) -> None:
        self.settings = settings
        how = redis_connect(settings, cfg)
        self.redis_url = settings.redis_url or cfg.redis_url or describe(None, how)
        self.metrics = Metrics(settings.multiprocess_dir, with_redis=self.redis_url is not None)
        self.overrides: Store  # the state store (store/): memory, the embedded SQLite file, or Redis
        if self.redis_url:
            self.overrides = RedisStore(
                self.redis_url,
                cfg.redis_prefix,
                on_up=self._redis_up,
                resync_interval=settings.redis_resync_interval,
                ha=how,
            )
        else:
            path = state_path(settings.config_path, settings.state_path or cfg.state_path)
            self.overrides = open_store(path, settings.workers)
        self.snapshot = self._with_members(make_snapshot(cfg, self.overrides.state))
        self.overrides.subscribe(self._on_overrides)
        self.overrides.subscribe_members(self._on_members)
        self.pools: dict[Backend, Pool] = {}
        self.windows = self._windows(cfg, None)
        self._tasks: list[asyncio.Task[None]] = []
        self._file_sig = _file_signature(settings.config_path)
        self.observe = self.metrics.observe
        self.started = False
        self.reload_failures = 0  # since start, for the console (the metric has the fleet's)
        self.last_reload_error: list[str] = []
        self.tokens = Tokens(single_token(settings, cfg), settings.tokens_file)
        if settings.admin_token and not cfg.admin_single_token:
            log.warning("SPLITTER_ADMIN_TOKEN is set but admin.single_token is false: only named tokens count")
        self._tokens_sig = _file_signature(settings.tokens_file) if settings.tokens_file else None
        now = lambda: self.snapshot.config  # noqa: E731 - the config in force when an event is sent
        self.notifier = Notifier(self.metrics, lambda: now().notify, settings.secrets, lambda: now().environment)
        self.history = History(self.overrides, self.metrics, self.notifier.submit)
        self._recording: set[asyncio.Task[Any]] = set()
        self.guard_trips: dict[str, dict[str, Any]] = {}  # route -> the last trip this process made, for the console
        self.legacy_last: dict[str, float] = {}  # route -> the last second legacy served it, fleet-wide (the store)
        self.legacy_loaded = False  # legacy_last read from the store at least once since start
        self._legacy_pending: dict[str, int] = {}  # seen here, not yet written to the store
        self._publish_gauges()

    # --- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        await self.overrides.start()
        self._tasks.append(asyncio.create_task(self._watch(), name="splitter-config-watch"))
        self._tasks.append(asyncio.create_task(self._flush_windows(), name="splitter-windows"))
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self._on_sighup)
        self.started = True
        cfg = self.snapshot.config
        log.info(
            "started",
            config=cfg.path,
            environment=cfg.environment,
            routes=len(cfg.routes),
            redis=self.redis_url is not None,
            store=self.overrides.name,
            pid=os.getpid(),
        )

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
        for task in list(self._recording):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.notifier.stop()
        await self.overrides.stop()
        for pool in self.pools.values():
            pool.retire()
        self.pools.clear()

    def pool(self, backend: Backend) -> Pool:
        """One connection pool per backend definition."""
        p = self.pools.get(backend)
        if p is None:
            p = self.pools[backend] = Pool(backend)
        return p

    def _windows(self, cfg: Config, old: Windows | None) -> Windows:
        """Outcome windows for every route (the console's last minutes, and what a guard or a
        rollout judges); over every worker and replica with a shared store (the SQLite file or Redis).
        ~1.4 us a request, off any I/O."""
        judged = {r.name: [*_spans(r), CONSOLE_SPAN_S] for r in cfg.routes}
        store = self.overrides if self.overrides.shared else None
        typed = {r.name: frozenset(r.rollout.gates.no_new_errors_statuses) for r in cfg.routes if r.rollout}
        return Windows(judged, store, cfg.redis_prefix, old, typed)

    async def _flush_windows(self) -> None:
        """Once a second, off the request path: this process's counts go to the fleet's keys."""
        failing = False
        while True:
            await asyncio.sleep(1.0)
            try:
                self.collect_cohorts(time.time())
                try:
                    await self.windows.flush(time.time())
                finally:
                    self._take_legacy_seen()
                await self._share_legacy_last()
                failing = False
            except Unavailable as exc:
                if not failing:
                    log.warning(
                        "outcome counts not shared: the store is unreachable; the guard and rollouts judge this "
                        "process's own counts only",
                        error=str(exc),
                    )
                failing = True

    def collect_cohorts(self, now: float) -> None:
        """Requests cohorts decided since the last call go into the windows, apart from new and legacy
        (the console shows them; no judge reads them). Once a second, and before the console reads.
        A `to: legacy` cohort's requests are legacy serving the route all the same (ready to retire)."""
        tally = self.metrics.take_cohort_tally()
        if tally:
            self.windows.add_cohorts(tally, now)
            by_name = self.snapshot.config.by_name
            for route, cohort in tally:
                r = by_name.get(route)
                if r is not None and any(c.name == cohort and c.to == "legacy" for c in r.cohorts):
                    self._legacy_pending[route] = int(now)

    def _take_legacy_seen(self) -> None:
        for route, sec in self.windows.take_legacy_seen().items():
            self._legacy_pending[route] = max(sec, self._legacy_pending.get(route, sec))

    async def _share_legacy_last(self) -> None:
        """Once a second, never per request: the routes legacy served go to the store (the latest second
        kept, fleet-wide and across restarts), and the fleet's values come back for the gauge, the rollout
        driver's ready-to-retire check and the admin views. Kept for the next try if the store fails."""
        if self._legacy_pending:
            await self.overrides.note_legacy(self._legacy_pending)
            self._legacy_pending = {}
        self.legacy_last = await self.overrides.legacy_last()
        self.legacy_loaded = True
        for route, at in self.legacy_last.items():
            self.metrics.legacy_last.labels(route).set(at)

    async def judged_span(self, route: Route) -> tuple[float, float | None]:
        """(seconds, since) of the window that judges a route: the guard's, else the current rollout step's."""
        if route.guard is not None:
            return route.guard.window_s, None
        assert route.rollout is not None
        state = await self.overrides.get_rollout(route.name)
        since = float(state["since"]) if state and state.get("since") is not None else None
        return route.rollout.interval_s + 1, since

    @property
    def ready(self) -> tuple[bool, str]:
        if not self.started:
            return False, "starting"
        if self.redis_url and not self.overrides.ever_connected:
            return False, "Redis not reached yet"
        return True, "ok"

    # --- changes --------------------------------------------------------------
    def _on_overrides(self, state: State) -> None:
        old = self.snapshot
        self.snapshot = self._with_members(make_snapshot(old.config, state))
        now = time.time()
        for name, pct in self.snapshot.percent.items():
            if old.percent.get(name) != pct:
                self.windows.reset(name, now)  # a new population: judge it afresh
        self._publish_gauges()

    def _on_members(self, members: Mapping[tuple[str, str], frozenset[bytes]]) -> None:
        """Runtime members of `users` cohorts changed: the same snapshot with the store's mapping
        (its unchanged frozensets are the same objects, never rebuilt)."""
        self.snapshot = dataclasses.replace(self.snapshot, members=members)

    def _with_members(self, snap: Snapshot) -> Snapshot:
        return dataclasses.replace(snap, members=self.overrides.members)

    def _redis_up(self, up: bool) -> None:
        if self.metrics.redis_up is not None:
            self.metrics.redis_up.set(1 if up else 0)

    def _publish_gauges(self) -> None:
        snap = self.snapshot
        for name, pct in snap.percent.items():
            self.metrics.route_percent.labels(name).set(pct)
        self.metrics.kill_switch.set(1 if snap.kill else 0)

    def reload(self) -> bool:
        """Validate routes.yaml and swap it in whole; on any error keep the old config."""
        path = self.settings.config_path
        self._file_sig = _file_signature(path)
        old = self.snapshot.config
        try:
            cfg = config_mod.load(path, self.settings.environment, self.settings.backend_urls)
            unset = [n for n in cfg.secret_names() if n not in self.settings.secrets]
            if unset:
                raise ConfigError([f"{path}: notify: url_env {n} was not set when the proxy started" for n in unset])
        except ConfigError as exc:
            self.metrics.reloads.labels("failure").inc()
            self.reload_failures += 1
            self.last_reload_error = exc.errors[:5]
            log.error("config reload rejected; keeping the running config", errors=exc.errors)
            return False
        self.last_reload_error = []
        new_redis = self.settings.redis_url or cfg.redis_url or describe(None, redis_connect(self.settings, cfg))
        if new_redis != self.redis_url or cfg.redis_prefix != old.redis_prefix or cfg.redis_ha != old.redis_ha:
            log.warning("config change needs a restart to apply", key="redis")
        if cfg.state_path != old.state_path:
            log.warning("config change needs a restart to apply", key="state")
        if cfg.admin_single_token != old.admin_single_token:
            self.tokens.admin_token = (single_token(self.settings, cfg) or "").encode() or None
            log.info("admin.single_token changed", single_token=cfg.admin_single_token)
        self.windows = self._windows(cfg, self.windows)
        self.snapshot = self._with_members(make_snapshot(cfg, self.overrides.state))
        for backend in [b for b in self.pools if b not in cfg.backends.values()]:
            self.pools.pop(backend).retire()  # idle connections close now, busy ones when their request ends
        for gone in {r.name for r in old.routes} - {r.name for r in cfg.routes}:
            with contextlib.suppress(KeyError):
                self.metrics.route_percent.remove(gone)
        self._publish_gauges()
        self.metrics.reloads.labels("success").inc()
        log.info("config reloaded", config=path, routes=len(cfg.routes), percent=dict(self.snapshot.percent))
        self._record_file_changes(old, cfg)
        return True

    def _record_file_changes(self, old: Config, cfg: Config) -> None:
        """A reload that changes a route's percent is a change by `file`: one history event per
        route, written by the one replica that claims it (every replica reads the same file)."""
        before = {r.name: r.percent for r in old.routes}
        changed = [(r.name, before[r.name], r.percent) for r in cfg.routes
                   if before.get(r.name, r.percent) != r.percent]
        if not changed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        text = _file_sha256(self.settings.config_path)
        digest = hashlib.sha256(repr((changed, text)).encode()).hexdigest()[:32]

        async def record() -> None:
            try:
                if not await self.overrides.claim(f"reload:{digest}"):
                    return
            except Unavailable:
                pass  # better a duplicate than a change nobody hears of
            why = f"{os.path.basename(self.settings.config_path)} changed"
            for name, was, now in changed:
                await self.history.record("file", "file", "reload", name, was, now, why)

        task = loop.create_task(record(), name="splitter-history-reload")
        self._recording.add(task)
        task.add_done_callback(self._recording.discard)

    def _on_sighup(self) -> None:
        self.reload()
        self.reload_tokens()

    def reload_tokens(self) -> bool:
        """Re-read the tokens file; on any problem keep the tokens in force."""
        if not self.settings.tokens_file:
            return True
        self._tokens_sig = _file_signature(self.settings.tokens_file)
        names = sorted(i.name for i in self.tokens.by_hash.values())
        try:
            how = self.tokens.reload()
        except TokensError as exc:
            self.metrics.reloads.labels("failure").inc()
            self.reload_failures += 1
            self.last_reload_error = [str(exc)]
            log.error("tokens reload rejected; keeping the tokens in force", error=str(exc))
            return False
        if how != "loaded":  # fail closed: a deleted or emptied file takes its tokens away
            self.metrics.reloads.labels("revoked").inc()
            log.warning(f"tokens file {how}: its tokens are revoked", file=self.settings.tokens_file, revoked=names)
            return True
        self.metrics.reloads.labels("success").inc()
        log.info("tokens reloaded", file=self.settings.tokens_file, tokens=len(self.tokens.by_hash))
        return True

    async def _watch(self) -> None:
        path = self.settings.config_path
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            sig = _file_signature(path)
            if sig != self._file_sig:
                self.reload()
            if self.settings.tokens_file and _file_signature(self.settings.tokens_file) != self._tokens_sig:
                self.reload_tokens()


def _spans(route: Route) -> list[float]:
    """The windows a route is judged over: the guard's, and a rollout step's interval."""
    spans = []
    if route.guard is not None:
        spans.append(route.guard.window_s)
    if route.rollout is not None:
        spans.append(route.rollout.interval_s + 1)
    return spans


def _file_sha256(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except OSError:
        return ""


def single_token(settings: Settings, cfg: Config) -> str | None:
    """$SPLITTER_ADMIN_TOKEN, unless routes.yaml turns it off (admin.single_token: false) so that only
    the named tokens of SPLITTER_ADMIN_TOKENS_FILE prove anyone."""
    return settings.admin_token if cfg.admin_single_token else None


def _file_signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
