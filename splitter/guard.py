"""Automatic rollback: when new's error rate (or p95 against legacy) breaches, override to 0.

Each replica judges its own sliding window; the action is an override write,
so with Redis one replica's trip moves the whole fleet. The override stays at
0 (source "guard") until a person changes it; any change of a route's percent
clears its window, so old errors never trip a fresh attempt.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import structlog

from .overrides import Conflict, Unavailable

if TYPE_CHECKING:
    from .app import Runtime

log = structlog.get_logger("splitter.guard")
TICK_S = 0.25


class Guard:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._stuck: set[str] = set()  # routes whose rollback write failed: logged once, retried every tick

    async def run(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            await self.check(time.time())

    async def check(self, now: float) -> None:
        rt = self.rt
        snap = rt.snapshot
        if snap.kill:
            return
        for route in snap.config.routes:
            g = route.guard
            outcomes = rt.outcomes.get(route.name)
            if g is None or outcomes is None or snap.percent[route.name] == 0:
                continue
            new = outcomes.new.totals(now, span_s=g.window_s)
            if new.requests < g.min_requests:
                continue
            reason = None
            legacy_p95 = None
            if new.error_rate > g.max_error_rate:
                reason = "error_rate"
            elif g.max_p95_ratio is not None:
                legacy = outcomes.legacy.totals(now, span_s=g.window_s)
                legacy_p95 = legacy.p95_ms
                if legacy.requests >= g.min_requests and new.p95_ms and legacy_p95 and new.p95_ms / legacy_p95 > g.max_p95_ratio:
                    reason = "p95_ratio"
            if reason is None:
                continue
            old = snap.percent[route.name]
            try:
                await rt.overrides.set_percent(route.name, 0, source="guard")
            except (Unavailable, Conflict) as exc:
                if route.name not in self._stuck:
                    self._stuck.add(route.name)
                    log.error("guard tripped but could not roll back; retrying", route=route.name, reason=reason, error=str(exc))
                continue
            self._stuck.discard(route.name)
            outcomes.clear()
            rt.metrics.guard_trips.labels(route.name, reason).inc()
            log.warning(
                "guard tripped: route rolled back to legacy",
                route=route.name,
                reason=reason,
                old=old,
                new=0,
                requests=new.requests,
                errors=new.errors,
                error_rate=round(new.error_rate, 4),
                max_error_rate=g.max_error_rate,
                new_p95_ms=new.p95_ms,
                legacy_p95_ms=legacy_p95,
                window_s=g.window_s,
            )
