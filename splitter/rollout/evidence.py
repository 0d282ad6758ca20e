"""A rollout step's evidence (the base of the driver): see `Evidence`."""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, Any

from .. import judge
from ..config import Gates, RolloutSpec, Route
from ..window import FINAL_AFTER_S, ROLES, SHADOW, Counts
from .gates import gate_views
from .record import as_counts, step_total
from .remote import prom_check, read_prometheus

if TYPE_CHECKING:
    from ..runtime import Runtime


class Evidence:
    """What a rollout's current step is judged on: both sides' outcomes since it began (the record's running
    total plus the window since), the evidence beside them (error paths, shadow comparisons, the prometheus
    gates as last read), the judged failure at each checkpoint, and a step's window record as it ended."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self._looks: dict[str, tuple[float, int]] = {}  # route -> (step start, last checkpoint judged)
        self._prom: dict[str, tuple[float, tuple[judge.Check, ...]]] = {}  # route -> (read at, prometheus gates)
        self._prom_reads: dict[str, asyncio.Task[tuple[judge.Check, ...]]] = {}

    def routes(self) -> list[Route]:
        return [r for r in self.rt.snapshot.config.routes if r.rollout is not None]

    async def evidence(self, route: Route, state: dict[str, Any], now: float) -> tuple[Counts, Counts]:
        """New's and legacy's outcomes the current step is judged on: everything since it began (its
        running total, plus the window since the total's end). At 100 % legacy's are those of the
        step before (remembered on entering 100 %): legacy has no traffic of its own then."""
        ro = route.rollout
        assert ro is not None
        new = await self._since_step(route, state, "new", now)
        legacy = await self._since_step(route, state, "legacy", now)
        before = state.get("legacy_before")
        if before is not None and ro.steps[int(state["step"])] == 100:
            return new, as_counts(before)
        return new, legacy

    async def _since_step(self, route: Route, state: dict[str, Any], side: str, now: float) -> Counts:
        """One side's outcomes since the step began: its running total, plus the window since the total's end."""
        ro = route.rollout
        assert ro is not None
        total = step_total(state)
        counts = as_counts(total.get(side, {}))
        counts.add(await self.rt.windows.between(route.name, side, ro.interval_s + 1, float(total["until"]), None, now))
        return counts

    async def _fold(self, route: Route, state: dict[str, Any], now: float) -> None:
        """A step longer than its window keeps all its evidence: once half the window has gone by since
        the running total's end, the whole slots every process has flushed are added to the total in the
        rollout's record (with its end), before the window forgets them. Off the request path: at most
        twice per window, a read of those slots and one write of the record."""
        ro = route.rollout
        assert ro is not None
        span = ro.interval_s + 1
        total = step_total(state)
        until = float(total["until"])
        width = self.rt.windows.width(route.name, span)
        end = math.floor((now - FINAL_AFTER_S) / width) * width
        if now - until < span / 2 or end <= until:
            return
        for side in (*ROLES, SHADOW) if ro.gates.max_mismatch_rate is not None else ROLES:
            counts = as_counts(total.get(side, {}))
            counts.add(await self.rt.windows.between(route.name, side, span, until, end, now))
            total[side] = counts.fields()
        state["step_total"] = {**total, "until": end}
        await self.rt.overrides.put_rollout(route.name, state)

    async def extra(self, route: Route, state: dict[str, Any], now: float) -> judge.Extra:
        """The evidence beside both sides' outcomes: a path per error type new had, seen by this process
        (the fleet's counts carry no paths), and the shadow comparisons since the step began."""
        o = self.rt.windows.get(route.name)
        examples = {kind: path for (role, kind), path in o.examples.items() if role == "new"} if o is not None else {}
        assert route.rollout is not None
        wanted = route.rollout.gates.max_mismatch_rate is not None and int(state["step"]) >= 0
        shadow = await self._since_step(route, state, SHADOW, now) if wanted else None
        return judge.Extra(examples, shadow, self._prometheus(route, float(state["since"]), now))

    def _prometheus(self, route: Route, since: float, now: float) -> tuple[judge.Check, ...]:
        """The route's prometheus gates as last read (at most 10 s old, else waiting), and a new read started
        when the last is over a second old: the queries run beside the tick, never in it. A step's first
        interval_s waits: a query's window (keep it <= interval_s) then covers only this step's traffic."""
        assert route.rollout is not None
        gates = route.rollout.gates.prometheus
        if not gates:
            return ()
        if now - since < route.rollout.interval_s:
            return tuple(prom_check(g, None, None, "read once the step is interval_s old") for g in gates)
        at, checks = self._prom.get(route.name, (0.0, ()))
        task = self._prom_reads.get(route.name)
        if task is not None and task.done():
            at, checks = self._prom[route.name] = (now, task.result())
            del self._prom_reads[route.name]
        elif task is None and now - at >= 1.0:
            url = self.rt.settings.prometheus_url
            self._prom_reads[route.name] = asyncio.create_task(read_prometheus(url, route.name, gates))
        if now - at > 10.0:
            return tuple(prom_check(g, None, None, "no answer from Prometheus yet") for g in gates)
        return checks

    def _judged_failure(
        self,
        name: str,
        gates: Gates,
        new: Counts,
        legacy: Counts,
        since: float,
        values: dict[str, Any],
        extra: judge.Extra,
    ) -> str | None:
        """With `confidence`, a failure is judged at checkpoints (new's requests reaching
        min_requests x 1, 2, 4, 8 ...), look k spending alpha * 6 / (pi^2 k^2) of the error
        budget, so judging a whole step keeps the false-rollback rate within 1 - confidence."""
        assert gates.confidence is not None
        look = judge.look(new.n, gates.min_requests)
        if look == 0 or self._looks.get(name, (since, 0)) >= (since, look):
            return None
        self._looks[name] = (since, look)
        checks = judge.judge(gates, new, legacy, judge.spend(1 - gates.confidence, look), extra)
        values["checks"] = [c.view() for c in checks]
        values["look"] = look
        return judge.reason(checks) if judge.verdict(checks) == judge.FAIL else None

    def _window_record(
        self,
        ro: RolloutSpec,
        step: int,
        since: float,
        until: float,
        new_c: Counts,
        legacy_c: Counts,
        extra: judge.Extra | None = None,
    ) -> dict[str, Any]:
        """One step's window as it ended: what it showed, for the operator who comes later."""
        gates, verdict = gate_views(ro.gates, new_c, legacy_c, extra)
        sides = {"new": new_c.totals().view(), "legacy": legacy_c.totals().view()}
        return {"percent": ro.steps[step], "since": since, "until": until, **sides, "gates": gates, "verdict": verdict}
