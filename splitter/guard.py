"""Automatic rollback: when new's error rate (or p95 against legacy) breaches, override to 0.

With Redis the window is the fleet's (every replica and worker adds its counts,
window.py); without it, this process's. The action is an override write, so
with Redis one replica's trip moves the whole fleet (a short lease makes it one
replica's, so a trip is one history event, who `guard`). The override stays at
0 (source "guard") until a person changes it; any change of a route's percent
clears its window, so old errors never trip a fresh attempt.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TYPE_CHECKING

import structlog

from . import judge
from .config import GuardSpec
from .store import Conflict, Unavailable
from .window import Totals

if TYPE_CHECKING:
    from .runtime import Runtime

log = structlog.get_logger("splitter.guard")
_REASONS = {"max_error_rate": "error_rate", "max_p95_ratio": "p95_ratio", "max_error_increase": "error_increase"}
TICK_S = 0.5


class Guard:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.owner = f"guard:{uuid.uuid4().hex[:8]}"
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
            if g is None or rt.windows.get(route.name) is None or snap.percent[route.name] == 0:
                continue
            try:
                new_counts, legacy_counts = await rt.windows.pair(route.name, now, g.window_s)
            except Unavailable:
                continue  # the fleet's counts cannot be read; nor could a rollback be written
            if new_counts.n < g.min_requests:
                continue
            new, legacy = new_counts.totals(), legacy_counts.totals()
            evidence: dict[str, object] = {}
            if g.confidence is not None:
                checks = judge.judge(g, new_counts, legacy_counts, 1 - g.confidence)
                failed = [c for c in checks if c.verdict == judge.FAIL]
                reason = _REASONS[failed[0].gate] if failed else None
                evidence = {"confidence": g.confidence, "checks": [c.view() for c in checks]}
            else:
                reason = trip_reason(g, new, legacy)
            if reason is None:
                continue
            legacy_p95 = legacy.p95_ms
            old = snap.percent[route.name]
            if not await rt.overrides.lease(f"guard:{route.name}", self.owner, 2.0):
                continue  # another replica is tripping this route right now
            try:
                await rt.overrides.set_percent(route.name, 0, source="guard")
            except (Unavailable, Conflict) as exc:
                if route.name not in self._stuck:
                    self._stuck.add(route.name)
                    log.error(
                        "guard tripped but could not roll back; retrying",
                        route=route.name,
                        reason=reason,
                        error=str(exc),
                    )
                continue
            self._stuck.discard(route.name)
            rt.windows.reset(route.name, now)
            rt.metrics.guard_trips.labels(route.name, reason).inc()
            sides = {"new": new.view(), "legacy": legacy.view()}
            rt.guard_trips[route.name] = {"at": now, "reason": reason, "window_s": g.window_s, **sides, **evidence}
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
                scope=rt.windows.scope,
                **evidence,
            )
            why = f"{reason.replace('_', ' ')}: new {new.errors}/{new.requests} errors ({new.error_rate:.1%}, "
            why += f"max {g.max_error_rate:.1%}) over {g.window_s:g} s"
            if reason == "p95_ratio":
                why = f"p95 ratio: new {new.p95_ms} ms vs legacy {legacy_p95} ms (max x{g.max_p95_ratio})"
                why += f" over {g.window_s:g} s"
            await rt.history.record("guard", "guard", "guard_trip", route.name, old, 0, why)


def trip_reason(g: GuardSpec, new: Totals, legacy: Totals | None) -> str | None:
    """Why a threshold-only guard trips on these windows, or None. `new` has at least min_requests.
    (With `confidence`, judge.py decides instead: only a breach the data show at that level trips.)"""
    if new.error_rate > g.max_error_rate:
        return "error_rate"
    if (
        g.max_p95_ratio is not None
        and legacy is not None
        and legacy.requests >= g.min_requests
        and new.p95_ms
        and legacy.p95_ms
    ):
        if new.p95_ms / legacy.p95_ms > g.max_p95_ratio:
            return "p95_ratio"
    return None
