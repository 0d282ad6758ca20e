"""The running proxy's state, in a leaf module every layer imports downward.

Settings (what the CLI read), Snapshot (everything a request needs to be routed,
swapped whole) and Runtime (config, overrides, metrics, windows, upstream pools).
Runtime imports no layer above it: the guard, rollouts, shadow, proxy and admin
take a Runtime; app.create_app builds and wires them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog

from . import config as config_mod
from .config import Backend, Config, ConfigError, Route
from .metrics import Metrics
from .overrides import MemoryOverrides, RedisOverrides, State, Unavailable
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
    admin_token: str | None = None  # SPLITTER_ADMIN_TOKEN
    force_token: str | None = None  # SPLITTER_FORCE_TOKEN
    multiprocess_dir: str | None = None  # PROMETHEUS_MULTIPROC_DIR, with --workers > 1
    graceful_timeout: float = 30.0
    keepalive_timeout: float = 75.0
    header_timeout: float = 30.0
    access_log: bool = True
    body_timeout: float = 60.0  # seconds between reads of a request body; then 408
    reload_interval: float = 0.5
    redis_resync_interval: float = 1.0


@dataclass(frozen=True)
class Snapshot:
    """Everything a request needs to be routed, swapped whole on every change."""

    config: Config
    percent: Mapping[str, int]
    sources: Mapping[str, str]
    kill: bool
    id_headers: tuple[bytes, ...] = field(default=())


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
        self.redis_url = settings.redis_url or cfg.redis_url
        self.metrics = Metrics(settings.multiprocess_dir, with_redis=self.redis_url is not None)
        self.overrides: MemoryOverrides
        if self.redis_url:
            self.overrides = RedisOverrides(self.redis_url, cfg.redis_prefix, on_up=self._redis_up, resync_interval=settings.redis_resync_interval)
        else:
            self.overrides = MemoryOverrides(settings.workers)
        self.snapshot = make_snapshot(cfg, self.overrides.state)
        self.overrides.subscribe(self._on_overrides)
        self.pools: dict[Backend, Pool] = {}
        self.windows = self._windows(cfg, None)
        self._tasks: list[asyncio.Task[None]] = []
        self._file_sig = _file_signature(settings.config_path)
        self.observe = self.metrics.observe
        self.started = False
        self.reload_failures = 0  # since start, for the console (the metric has the fleet's)
        self.last_reload_error: list[str] = []
        self.guard_trips: dict[str, dict[str, Any]] = {}  # route -> the last trip this process made, for the console
        self._publish_gauges()

    # --- lifecycle ------------------------------------------------------------
    async def start(self) -> None:
        await self.overrides.start()
        self._tasks.append(asyncio.create_task(self._watch(), name="splitter-config-watch"))
        self._tasks.append(asyncio.create_task(self._flush_windows(), name="splitter-windows"))
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGHUP, self.reload)
        self.started = True
        cfg = self.snapshot.config
        log.info("started", config=cfg.path, environment=cfg.environment, routes=len(cfg.routes), redis=self.redis_url is not None, pid=os.getpid())

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)
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
        rollout judges); fleet-wide with Redis. ~1.4 us a request, off any I/O."""
        judged = {r.name: [*_spans(r), CONSOLE_SPAN_S] for r in cfg.routes}
        store = self.overrides if isinstance(self.overrides, RedisOverrides) else None
        return Windows(judged, store, cfg.redis_prefix, old)

    async def _flush_windows(self) -> None:
        """Once a second, off the request path: this process's counts go to the fleet's keys."""
        failing = False
        while True:
            await asyncio.sleep(1.0)
            try:
                await self.windows.flush(time.time())
                failing = False
            except Unavailable as exc:
                if not failing:
                    log.warning("outcome counts not shared: Redis unreachable; the guard and rollouts judge without them", error=str(exc))
                failing = True

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
        self.snapshot = make_snapshot(old.config, state)
        now = time.time()
        for name, pct in self.snapshot.percent.items():
            if old.percent.get(name) != pct:
                self.windows.reset(name, now)  # a new population: judge it afresh
        self._publish_gauges()

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
            cfg = config_mod.load(path, self.settings.environment)
        except ConfigError as exc:
            self.metrics.reloads.labels("failure").inc()
            self.reload_failures += 1
            self.last_reload_error = exc.errors[:5]
            log.error("config reload rejected; keeping the running config", errors=exc.errors)
            return False
        self.last_reload_error = []
        if (self.settings.redis_url or cfg.redis_url) != self.redis_url or cfg.redis_prefix != old.redis_prefix:
            log.warning("config change needs a restart to apply", key="redis")
        self.windows = self._windows(cfg, self.windows)
        self.snapshot = make_snapshot(cfg, self.overrides.state)
        for backend in [b for b in self.pools if b not in cfg.backends.values()]:
            self.pools.pop(backend).retire()  # idle connections close now, busy ones when their request ends
        for gone in {r.name for r in old.routes} - {r.name for r in cfg.routes}:
            with contextlib.suppress(KeyError):
                self.metrics.route_percent.remove(gone)
        self._publish_gauges()
        self.metrics.reloads.labels("success").inc()
        log.info("config reloaded", config=path, routes=len(cfg.routes), percent=dict(self.snapshot.percent))
        return True

    async def _watch(self) -> None:
        path = self.settings.config_path
        while True:
            await asyncio.sleep(self.settings.reload_interval)
            sig = _file_signature(path)
            if sig != self._file_sig:
                self.reload()


def _spans(route: Route) -> list[float]:
    """The windows a route is judged over: the guard's, and a rollout step's interval."""
    spans = []
    if route.guard is not None:
        spans.append(route.guard.window_s)
    if route.rollout is not None:
        spans.append(route.rollout.interval_s + 1)
    return spans


def _file_signature(path: str) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_size, st.st_ino)
