"""Gated progressive rollout: walk a route's override through its steps while the gates hold.

State per route (in Redis with a fleet, else in memory):
    {"status": running|awaiting_approval|baking|paused|aborted|rolled_back|done, "step": index,
     "since": epoch s, "reason": str, "previous": the evidence of the last window that ended
     (percent, since, until, new, legacy, gates), "legacy_before": legacy's counts (window.Counts
     fields) of the step before a 100 % step, "step_total": the step's running total (below),
     "past_steps": the ended steps' window records with their counts (keep_step),
     "ready": the quiet moment a done rollout's readiness to retire was announced for, "retired": when}
With Redis one replica drives a route at a time (a lease renewed every tick;
when the holder dies another takes over after the lease runs out). The driver
judges the gates on the fleet's traffic since the current step began (window.py;
without Redis, this process's): all of it, however long the step waits for
evidence, not the last interval_s. The windows keep one interval; before they
forget a slot the driver folds it into the step's running total in the record
(`step_total`: both roles' counts up to `until`), so the evidence is that total
plus the window since, and every replica shows the same span it judges.
At 100 % legacy gets no traffic, so the gates that
compare with legacy (max_p95_ratio, max_error_increase) read legacy's window of the
step before, remembered when the rollout entered 100 %. A step written
`{percent: N, approval: true}` is entered only on `promote` (status awaiting_approval
until then; failing gates still roll back). The kill switch holds every rollout. After the last
step, `bake_s` more of it judged the same way (`baking`), then done; done and legacy unused for
`retire_after_s` (runtime.py keeps legacy's last request per route): ready to retire, said once.
Each transition counts once in splitter_rollout_events_total{route,event}.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import uuid
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import httpx
import structlog

from . import judge, progress
from .config import Gates, Hook, Percent, PromGate, RolloutSpec, Route
from .store import Conflict, Unavailable
from .window import FINAL_AFTER_S, ROLES, SHADOW, Counts, Totals

if TYPE_CHECKING:
    from .runtime import Runtime

log = structlog.get_logger("splitter.rollout")
LEASE_S = 3.0
EVENTS = (
    "advanced", "done", "rolled_back", "aborted", "paused", "resumed", "promoted", "awaiting_approval", "stalled",
    "baking", "ready_to_retire", "retired",
)


class Status(StrEnum):
    """Where a rollout stands; kept in its record as the plain string."""

    RUNNING = "running"
    AWAITING_APPROVAL = "awaiting_approval"
    PAUSED = "paused"
    ABORTED = "aborted"
    ROLLED_BACK = "rolled_back"
    DONE = "done"
    BAKING = "baking"


ACTIVE = (Status.RUNNING, Status.AWAITING_APPROVAL, Status.BAKING)  # the statuses the driver judges
_R, _A, _P, _X, _B, _D, _K = Status
# The only place a status changes (h11's _state.py): (status, action) -> the next status. Operator
# actions: pause, resume, abort, promote (the next step), finish (promote --full, or promote at the last
# step), restart. The driver's: advance (start or next step), await (hold before an approval step),
# rollback (a gate or the guard), bake (the last step's gates held and bake_s > 0: baking at the last step, still
# judged), done. A stopped rollout (aborted, rolled back) never goes back to
# the step it left: resume and restart start it over at the first step; pause does not apply to it.
# Pausing a paused rollout is allowed (a hand-set percent pauses it; a script's pause then still holds).
TRANSITIONS: dict[tuple[Status, str], Status] = {
    **{(_R, a): s for a, s in [("pause", _P), ("abort", _X), ("promote", _R), ("finish", _D), ("restart", _R),
                               ("advance", _R), ("await", _A), ("rollback", _B), ("done", _D), ("bake", _K)]},
    **{(_K, a): s for a, s in [("pause", _P), ("abort", _X), ("finish", _D), ("restart", _R), ("rollback", _B),
                               ("done", _D)]},
    **{(_A, a): s for a, s in [("pause", _P), ("abort", _X), ("promote", _R), ("finish", _D), ("restart", _R),
                               ("rollback", _B)]},
    **{(_P, a): s for a, s in [("pause", _P), ("resume", _R), ("abort", _X), ("promote", _R), ("finish", _D),
                               ("restart", _R)]},
    **{(_X, a): _R for a in ("resume", "restart")},
    **{(_B, a): _R for a in ("resume", "restart")},
    (_D, "restart"): _R,
}
ACTIONS = ("pause", "resume", "abort", "promote", "finish", "restart", "advance", "await", "rollback", "done", "bake")
OPERATOR_ACTIONS = ("pause", "resume", "abort", "promote", "finish", "restart")


def allowed(status: str) -> list[str]:
    """The operator actions TRANSITIONS lets this status take (the console offers only these; `pending`, not
    started yet, takes what a running one does: an action on it starts its record as running)."""
    now = Status.RUNNING if status == "pending" else Status(status)
    return [a for a in OPERATOR_ACTIONS if (now, a) in TRANSITIONS]
_HINTS = {
    _R: "it is running",
    _A: "it is awaiting approval: splitter rollout promote {name} goes on",
    _P: "it is paused: splitter rollout resume {name} goes on",
    _X: "splitter rollout restart {name} starts it over at the first step",
    _B: "splitter rollout restart {name} starts it over at the first step",
    _D: "it is finished; splitter rollout restart {name} starts it over at the first step",
    _K: "it is baking at its last step: splitter rollout promote {name} ends the bake now",
}


class Refused(Exception):
    """An operator action that does not apply to the rollout's status (409)."""


def transition(name: str, status: str, action: str) -> Status:
    """The status `action` moves a rollout in `status` to, or Refused naming the status."""
    now = Status(status)
    nxt = TRANSITIONS.get((now, action))
    if nxt is None:
        raise Refused(f"rollout of {name!r} is {now.value}: {action} does not apply ({_HINTS[now].format(name=name)})")
    return nxt


def move(name: str, state: dict[str, Any], action: str, **fields: Any) -> None:
    """Apply `action` to the rollout record: its next status from TRANSITIONS, and `fields`."""
    state.update(status=transition(name, state["status"], action).value, **fields)


def gate_checks(g: Gates, new: Totals, legacy: Totals) -> list[dict[str, Any]]:
    """Each gate's current value against its threshold; `ok` None while there is no value yet."""
    checks: list[dict[str, Any]] = [
        {
            "gate": "min_requests",
            "value": new.requests,
            "threshold": g.min_requests,
            "ok": new.requests >= g.min_requests,
        }
    ]
    if g.max_error_rate is not None:
        checks.append(
            {
                "gate": "max_error_rate",
                "value": round(new.error_rate, 5),
                "threshold": g.max_error_rate,
                "ok": new.error_rate <= g.max_error_rate if new.requests else None,
            }
        )
    if g.max_p95_ms is not None:
        checks.append(
            {
                "gate": "max_p95_ms",
                "value": new.p95_ms,
                "threshold": g.max_p95_ms,
                "ok": new.p95_ms <= g.max_p95_ms if new.p95_ms is not None else None,
            }
        )
    if g.max_p95_ratio is not None:
        judged = bool(new.p95_ms and legacy.p95_ms and legacy.requests >= max(1, g.min_requests))
        ratio = round(new.p95_ms / legacy.p95_ms, 4) if judged and new.p95_ms and legacy.p95_ms else None
        slower = round(new.p95_ms - legacy.p95_ms, 3) if ratio is not None and new.p95_ms and legacy.p95_ms else None
        checks.append(
            {
                "gate": "max_p95_ratio",
                "value": ratio,
                "threshold": g.max_p95_ratio,
                "slower_ms": slower,
                "tolerance_ms": g.p95_tolerance_ms,
                # fails only when new is also slower by more than the tolerance: a difference users feel
                "ok": ratio <= g.max_p95_ratio or (slower or 0) <= g.p95_tolerance_ms if ratio is not None else None,
            }
        )
    return checks


_SAYS = {"max_error_rate": "error rate", "max_p95_ms": "p95 ms", "max_p95_ratio": "p95 ratio"}


THRESHOLD_ALPHA = 0.01  # the count gates' test level when the gates set no confidence


def count_checks(g: Gates, new: Counts, legacy: Counts, extra: judge.Extra | None = None) -> list[judge.Check]:
    """The gates that count occurrences (no_new_errors, max_mismatch_rate) need a test even without
    `confidence`: at 0.99."""
    checks = []
    if g.no_new_errors:
        checks.append(judge.no_new_errors_check(new, legacy, THRESHOLD_ALPHA, extra.examples if extra else None))
    if g.max_mismatch_rate is not None:
        checks.append(judge.mismatch_check(extra.shadow if extra else None, g.max_mismatch_rate, THRESHOLD_ALPHA))
    return checks + list(extra.prometheus if extra else ())


def count_failure(g: Gates, new: Counts, legacy: Counts, extra: judge.Extra | None = None) -> str | None:
    """The count gates' failure, judged only with enough new traffic (threshold gates)."""
    if new.n < max(1, g.min_requests):
        return None
    failed = [c for c in count_checks(g, new, legacy, extra) if c.verdict == judge.FAIL]
    return judge.reason(failed) if failed else None


def gate_failure(g: Gates, new: Totals, legacy: Totals) -> str | None:
    """The first gate that fails, judged only with enough new traffic."""
    if new.requests < max(1, g.min_requests):
        return None
    for c in gate_checks(g, new, legacy)[1:]:
        if c["ok"] is False:
            said = f"{_SAYS[c['gate']]} {c['value']:g} > {c['threshold']:g}"
            if c["gate"] == "max_p95_ratio":
                said += f", {c['slower_ms']:g} ms slower than legacy (tolerance {c['tolerance_ms']:g} ms)"
            return said
    return None


class Rollouts:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.driving: set[str] = set()
        self._waiting_logged: set[tuple[str, int, str]] = set()
        self._looks: dict[str, tuple[float, int]] = {}  # route -> (step start, last checkpoint judged)
        self._skipping: set[str] = set()
        self._counted: set[str] = set()
        self._waits: dict[str, tuple[float, float, list[dict[str, Any]]]] = {}  # route -> (step since, at, waits)
        # route -> ((step since, step to enter), the before_step hooks being asked): off the tick, so a slow
        # hook holds only its own route and never the lease
        self._asking: dict[str, tuple[tuple[float, int], asyncio.Task[tuple[int, str] | None]]] = {}
        self._prom: dict[str, tuple[float, tuple[judge.Check, ...]]] = {}  # route -> (read at, prometheus gates)
        self._prom_reads: dict[str, asyncio.Task[tuple[judge.Check, ...]]] = {}

    def routes(self) -> list[Route]:
        return [r for r in self.rt.snapshot.config.routes if r.rollout is not None]

    async def run(self) -> None:
        while True:
            intervals = [r.rollout.interval_s for r in self.routes() if r.rollout]
            await asyncio.sleep(max(0.1, min([1.0, *(i / 5 for i in intervals)])))
            for route in self.routes():
                self._zero_events(route.name)
                try:
                    await self.tick(route, time.time())
                    self._skipping.discard(route.name)
                except (Unavailable, Conflict) as exc:
                    if route.name not in self._skipping:  # once per outage, not once per tick
                        self._skipping.add(route.name)
                        log.warning("rollout paused: its state cannot be written", route=route.name, error=str(exc))

    def _zero_events(self, name: str) -> None:
        """Every event's series exists from the start at 0, so increase() sees the first one (alerts)."""
        if name not in self._counted:
            self._counted.add(name)
            for event in EVENTS:
                self.rt.metrics.rollout_events.labels(name, event)

    def _event(self, name: str, event: str) -> None:
        self.rt.metrics.rollout_events.labels(name, event).inc()

    async def tick(self, route: Route, now: float) -> None:
        rt = self.rt
        ro = route.rollout
        assert ro is not None
        if not await rt.overrides.lease(f"rollout:{route.name}", self.owner, LEASE_S):
            self.driving.discard(route.name)
            return
        if route.name not in self.driving:
            self.driving.add(route.name)
            log.info("driving rollout", route=route.name, owner=self.owner)
        state = await rt.overrides.get_rollout(route.name)
        if state is None:  # written before anything else: a start held by its hooks keeps its moment
            state = {"status": "running", "step": -1, "since": now, "reason": ""}
            await rt.overrides.put_rollout(route.name, state)
        snap = rt.snapshot
        if state["status"] not in ACTIVE:
            self._gauge(route.name)
            if state["status"] == Status.DONE and rt.legacy_loaded:
                await self._ready_check(route, state, now)
            return
        step = int(state["step"])
        if step >= 0 and snap.sources.get(route.name) != "rollout":
            await self._stop(route.name, state, snap.sources.get(route.name), now)
            return
        if snap.kill:
            return  # everything goes to legacy: nothing to judge, nothing to advance
        if step < 0:
            await self._start(route, state, now)
            return
        since = float(state["since"])
        await self._fold(route, state, now)
        new_c, legacy_c = await self.evidence(route, state, now)
        new, legacy = new_c.totals(), legacy_c.totals()
        gate_values: dict[str, Any] = {
            "requests": new.requests,
            "error_rate": round(new.error_rate, 5),
            "p95_ms": new.p95_ms,
            "legacy_p95_ms": legacy.p95_ms,
        }
        judged = ro.gates.confidence is not None
        extra = await self.extra(route, state, now)
        failure = (
            self._judged_failure(route.name, ro.gates, new_c, legacy_c, since, gate_values, extra)
            if judged
            else gate_failure(ro.gates, new, legacy) or count_failure(ro.gates, new_c, legacy_c, extra)
        )
        if failure:
            old = snap.percent[route.name]
            await self._roll_back(route, state, old, now, failure, (new_c, legacy_c), gate_values)
            return
        await self._stall(route, state, now, new_c, legacy_c)
        baking = state["status"] == Status.BAKING
        if now - since < (ro.bake_s if baking else ro.interval_s) or state["status"] == "awaiting_approval":
            return
        if new.requests < ro.gates.min_requests:
            self._once(route.name, step, "rollout waiting for traffic", have=new.requests, need=ro.gates.min_requests)
            return
        # judged: every gate shown to hold; by threshold: the count gates (which always test) shown to hold
        if judged or count_checks(ro.gates, new_c, legacy_c, extra):
            alpha = 1 - ro.gates.confidence if ro.gates.confidence is not None else THRESHOLD_ALPHA
            checks = judge.judge(ro.gates, new_c, legacy_c, alpha, extra) if judged else count_checks(
                ro.gates, new_c, legacy_c, extra
            )
            gate_values["checks"] = [c.view() for c in checks]
            if judge.verdict(checks) != judge.PASS:
                # neither shown to hold nor shown to fail: a rollout waits for more evidence
                self._once(
                    route.name,
                    step,
                    "rollout holding: the gates are not yet shown to hold",
                    checks=gate_values["checks"],
                )
                return
        if step + 1 >= len(ro.steps):
            last = self._bake if ro.bake_s > 0 and not baking else self._done
            await last(route, state, now, (new_c, legacy_c), gate_values)
            return
        await self._enter(route, state, step + 1, now, "advance", **gate_values)

    async def _stall(self, route: Route, state: dict[str, Any], now: float, new: Counts, legacy: Counts) -> None:
        """A step held past max_wait_s: `stalled` once (event, history, notification); it keeps holding,
        for a person to look (more traffic, a gate set too tight, or promote / abort)."""
        ro = route.rollout
        assert ro is not None
        since = float(state["since"])
        if ro.max_wait_s is None or state["status"] != Status.RUNNING or now - since < ro.max_wait_s:
            return
        if state.get("stalled") == since:
            return
        state["stalled"] = since
        await self.rt.overrides.put_rollout(route.name, state)
        at = ro.steps[int(state["step"])]
        before = state.get("legacy_before") is not None and at == 100
        extra = await self.extra(route, state, now)
        waits = [w["says"] for w in waiting_for(ro.gates, new, legacy, now - since, not before, extra)]
        why = f"held at {at}% for {now - since:.0f} s (max_wait_s {ro.max_wait_s:g})"
        why += ": " + "; ".join(waits) if waits else ": the gates are not yet shown to hold"
        self._event(route.name, "stalled")
        log.warning("rollout stalled", route=route.name, percent=at, reason=why)
        pct = self.rt.snapshot.percent[route.name]
        await self.rt.history.record("rollout", "rollout", "rollout_stalled", route.name, pct, pct, why)

    async def _keep_current(self, route: Route, state: dict[str, Any], now: float) -> None:
        """The step that ends now by someone's hand (guard, a set percent, promote --full, abort): its
        evidence kept in `past_steps` like a step the driver ends."""
        ro = route.rollout
        assert ro is not None
        step = int(state["step"])
        if step < 0 or state.get("since") is None:
            return
        new_c, legacy_c = await self.evidence(route, state, now)
        evidence = self._window_record(ro, step, float(state["since"]), now, new_c, legacy_c)
        keep_step(state, evidence, new_c, legacy_c)

    async def _stop(self, name: str, state: dict[str, Any], source: str | None, now: float) -> None:
        """Someone else set the percent during a step: a guard trip rolls the rollout back, a hand pauses it."""
        why = "guard tripped" if source == "guard" else f"percent changed by hand (source {source})"
        await self._keep_current(self.rt.snapshot.config.by_name[name], state, now)
        move(name, state, "rollback" if source == "guard" else "pause", reason=why, since=now)
        await self.rt.overrides.put_rollout(name, state)
        self._event(name, state["status"])
        log.warning("rollout stopped", route=name, reason=why)

    async def _roll_back(
        self,
        route: Route,
        state: dict[str, Any],
        old: Percent,
        now: float,
        failure: str,
        sides: tuple[Counts, Counts],
        gate_values: dict[str, Any],
    ) -> None:
        """A gate failed: back to 0 %, and the step's window kept as the evidence."""
        ro = route.rollout
        assert ro is not None
        step, since = int(state["step"]), float(state["since"])
        await self.rt.overrides.set_percent(route.name, 0, source="rollout")
        evidence = self._window_record(ro, step, since, now, *sides, await self.extra(route, state, now))
        if "checks" in gate_values:  # as judged: at this look's share of the error budget
            evidence.update(gates=[evidence["gates"][0], *gate_values["checks"]], verdict=judge.FAIL)
        reason = f"gate failed at {ro.steps[step]}%: {failure}"
        keep_step(state, evidence, *sides)
        move(route.name, state, "rollback", reason=reason, since=now, previous=evidence)
        await self.rt.overrides.put_rollout(route.name, state)
        self._gauge(route.name)
        self._event(route.name, "rolled_back")
        log.warning("rollout rolled back", route=route.name, step=ro.steps[step], reason=failure, **gate_values)
        await self.rt.history.record("rollout", "rollout", "rollout_rollback", route.name, old, 0, state["reason"])

    async def _ready_check(self, route: Route, state: dict[str, Any], now: float) -> None:
        """A done rollout whose legacy served none of the route's requests for retire_after_s is ready to retire:
        said once (event, history, notification), the moment it became so kept in the record (`ready`), so a
        restart does not say it again. Legacy serving the route again makes it not ready until the next time."""
        assert route.rollout is not None
        view = retire_view(route.rollout, state, self.rt.legacy_last.get(route.name), now)
        if not view["ready_to_retire"] or state.get("ready") == view["quiet_since"]:
            return
        state["ready"] = view["quiet_since"]
        await self.rt.overrides.put_rollout(route.name, state)
        self._event(route.name, "ready_to_retire")
        log.warning("route ready to retire", route=route.name, says=view["says"])
        pct = self.rt.snapshot.percent[route.name]
        summary = await self._summary(route, "ready_to_retire", state, now)  # the notification's line for people
        why = f"{view['says']}: splitter retire {route.name}. {summary}"
        await self.rt.history.record("rollout", "rollout", "ready_to_retire", route.name, pct, pct, why)

    async def _start(self, route: Route, state: dict[str, Any], now: float) -> None:
        """The first step at or above the running percent: a rollout added to a route already past its first
        steps never moves users back to legacy (`splitter rollout restart` starts at the first step on purpose).
        Above every step, it is done at once, the percent untouched."""
        ro = route.rollout
        assert ro is not None
        running = self.rt.snapshot.percent[route.name]
        first = next((i for i, s in enumerate(ro.steps) if s >= running), None)
        if first is not None:
            await self._enter(route, state, first, now, "start")
            return
        why = f"the route already runs at {running}%, above every step"
        move(route.name, state, "done", reason=why, since=now)
        await self.rt.overrides.put_rollout(route.name, state)
        self._event(route.name, "done")
        log.warning("rollout done at start", route=route.name, percent=running, reason=why)
        await self.rt.history.record("rollout", "rollout", "rollout_done", route.name, running, running, why)

    async def _ended(
        self, route: Route, state: dict[str, Any], now: float, sides: tuple[Counts, Counts]
    ) -> tuple[RolloutSpec, int, dict[str, Any]]:
        """The span that just ended (a step, or the bake): its window record, kept among the past steps."""
        ro = route.rollout
        assert ro is not None
        step, since = int(state["step"]), float(state["since"])
        evidence = self._window_record(ro, step, since, now, *sides, await self.extra(route, state, now))
        if state["status"] == Status.BAKING:
            evidence["bake"] = True  # the last step again, judged while it baked: progress labels it
        keep_step(state, evidence, *sides)
        return ro, step, evidence

    async def _bake(
        self, route: Route, state: dict[str, Any], now: float, sides: tuple[Counts, Counts], gate_values: dict[str, Any]
    ) -> None:
        """The last step's gates held: it bakes there for bake_s, judged as any step (a failure rolls back)."""
        ro, step, evidence = await self._ended(route, state, now, sides)
        why = f"the last step's gates held: baking {ro.bake_s:g} s at {ro.steps[step]}%"
        # a fresh span to judge (step_total) but the same step: legacy's side at 100 % stays the step before's
        move(route.name, state, "bake", reason=why, since=now, previous=evidence, step_total=None)
        await self.rt.overrides.put_rollout(route.name, state)
        self._event(route.name, "baking")
        log.info("rollout baking", route=route.name, percent=ro.steps[step], bake_s=ro.bake_s, **gate_values)
        at = ro.steps[step]
        await self.rt.history.record("rollout", "rollout", "rollout_baking", route.name, at, at, why)

    async def _done(
        self, route: Route, state: dict[str, Any], now: float, sides: tuple[Counts, Counts], gate_values: dict[str, Any]
    ) -> None:
        """The last step's gates held (and its bake, if any): the rollout is done, at its last step."""
        ro, step, evidence = await self._ended(route, state, now, sides)
        why = f"all steps passed and baked {ro.bake_s:g} s" if ro.bake_s > 0 else "all steps passed"
        move(route.name, state, "done", reason=why, since=now, previous=evidence)
        await self.rt.overrides.put_rollout(route.name, state)
        self._event(route.name, "done")
        log.info("rollout done", route=route.name, percent=ro.steps[step], **gate_values)
        at = ro.steps[step]
        said = f"{why}. {await self._summary(route, 'done', state, now)}"  # the notification tells the stakeholders
        await self.rt.history.record("rollout", "rollout", "rollout_done", route.name, at, at, said)

    async def _summary(self, route: Route, status: str, state: dict[str, Any], now: float) -> str:
        """The route's summary line in the migration plan's words (progress.py), for the done and
        ready_to_retire notifications: 'auth: migrated, 100 % on new since 2026-12-03; p95 −12 %, ...'."""
        assert route.rollout is not None
        events = sorted(await self.rt.history.recent(1_000, route.name), key=lambda e: e["at"])
        snap = self.rt.snapshot
        view = {"name": route.name, "percent": snap.percent[route.name], "file_percent": route.percent,
                "source": snap.sources[route.name]}
        steps = [p for p in state.get("past_steps") or [] if isinstance(p, dict)]
        rollout = {"status": status, "steps": list(route.rollout.steps)}
        return str(progress.route_progress(view, rollout, steps, events, now)["summary"])

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
            return new, _counts(before)
        return new, legacy

    async def _since_step(self, route: Route, state: dict[str, Any], side: str, now: float) -> Counts:
        """One side's outcomes since the step began: its running total, plus the window since the total's end."""
        ro = route.rollout
        assert ro is not None
        total = _step_total(state)
        counts = _counts(total.get(side, {}))
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
        total = _step_total(state)
        until = float(total["until"])
        width = self.rt.windows.width(route.name, span)
        end = math.floor((now - FINAL_AFTER_S) / width) * width
        if now - until < span / 2 or end <= until:
            return
        for side in (*ROLES, SHADOW) if ro.gates.max_mismatch_rate is not None else ROLES:
            counts = _counts(total.get(side, {}))
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
            return tuple(_prom_check(g, None, None, "read once the step is interval_s old") for g in gates)
        at, checks = self._prom.get(route.name, (0.0, ()))
        task = self._prom_reads.get(route.name)
        if task is not None and task.done():
            at, checks = self._prom[route.name] = (now, task.result())
            del self._prom_reads[route.name]
        elif task is None and now - at >= 1.0:
            url = self.rt.settings.prometheus_url
            self._prom_reads[route.name] = asyncio.create_task(_read_prometheus(url, route.name, gates))
        if now - at > 10.0:
            return tuple(_prom_check(g, None, None, "no answer from Prometheus yet") for g in gates)
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

    def _once(self, name: str, step: int, event: str, **fields: Any) -> None:
        if (name, step, event) not in self._waiting_logged:
            self._waiting_logged.add((name, step, event))
            log.info(event, route=name, step=step, **fields)

    async def _enter(
        self, route: Route, state: dict[str, Any], step: int, now: float, why: str, **gate_values: Any
    ) -> None:
        """Move to `step` (start, advance, promote), or hold before it when it needs approval and
        no one has given it (why != "promote")."""
        ro = route.rollout
        assert ro is not None
        if step in ro.approval and why != "promote":
            if state["status"] != "awaiting_approval":
                why_held = f"{ro.steps[step]}% needs approval: splitter rollout promote {route.name}"
                move(route.name, state, "await", reason=why_held)
                await self.rt.overrides.put_rollout(route.name, state)
                self._event(route.name, "awaiting_approval")
                at = self.rt.snapshot.percent[route.name]
                nxt = ro.steps[step]
                log.warning("rollout awaiting approval", route=route.name, percent=at, next=nxt, **gate_values)
            return
        if why != "promote" and not await self._hooks_allow(route, state, step, now):
            return  # held: the hooks are being asked or retried (or they rolled it back)
        current = int(state["step"])
        if current >= 0:  # the window that ends now: kept (the console labels it), and legacy's side for 100 %
            new_c, legacy_c = await self.evidence(route, state, now)
            extra = await self.extra(route, state, now)
            state["previous"] = self._window_record(ro, current, float(state["since"]), now, new_c, legacy_c, extra)
            keep_step(state, state["previous"], new_c, legacy_c)
        else:  # before the first step: legacy's latest window
            legacy_c = await self.rt.windows.counts(route.name, "legacy", now, ro.interval_s + 1)
        state["legacy_before"] = legacy_c.fields() if ro.steps[step] == 100 else None
        old = self.rt.snapshot.percent[route.name]
        await self.rt.overrides.set_percent(route.name, ro.steps[step], source="rollout")
        action = "promote" if why == "promote" else "advance"
        move(route.name, state, action, step=step, since=now, reason="", step_total=None)
        await self.rt.overrides.put_rollout(route.name, state)
        self._gauge(route.name)
        self._event(route.name, "promoted" if why == "promote" else "advanced")
        log.info("rollout step", route=route.name, action=why, old=old, new=ro.steps[step], **gate_values)
        reason = "start" if why == "start" else f"gates held for {ro.interval_s:g} s at {ro.steps[step - 1]} %"
        await self.rt.history.record("rollout", "rollout", "rollout_step", route.name, old, ro.steps[step], reason)

    async def _hooks_allow(self, route: Route, state: dict[str, Any], step: int, now: float) -> bool:
        """The before_step hooks for entering `step`: True once every one answered 2xx; False while they are
        asked (in the background) or waiting a second to be asked again; past a hook's `retries` failures
        the rollout is rolled back. The failures so far live in the record (`hooks`): a new driver goes on."""
        ro = route.rollout
        assert ro is not None
        if not ro.before_step:
            return True
        since = float(state["since"])
        progress = state.get("hooks")
        if not isinstance(progress, dict) or progress.get("since") != since or progress.get("to") != ro.steps[step]:
            progress = {"since": since, "to": ro.steps[step], "failures": 0, "next_at": 0.0, "last": ""}
        asking = self._asking.get(route.name)
        if asking is None or asking[0] != (since, step):
            if now >= progress["next_at"]:
                body = {"route": route.name, "from": self.rt.snapshot.percent[route.name], "to": ro.steps[step]}
                self._asking[route.name] = ((since, step), asyncio.create_task(_ask(ro.before_step, body)))
            return False
        if not asking[1].done():
            return False
        del self._asking[route.name]
        failed = asking[1].result()
        if failed is None:
            state["hooks"] = None
            return True
        index, said = failed
        progress.update(failures=progress["failures"] + 1, next_at=now + 1.0, last=said)
        state["hooks"] = progress
        tries = f"{progress['failures']} of {ro.before_step[index].retries + 1} tries"
        if progress["failures"] <= ro.before_step[index].retries:
            await self.rt.overrides.put_rollout(route.name, state)
            log.warning("rollout held: a before_step hook failed", route=route.name, hook=said, tries=tries)
            return False
        await self._hook_rollback(route, state, now, f"before_step hook before {ro.steps[step]}%: {said} ({tries})")
        return False

    async def _hook_rollback(self, route: Route, state: dict[str, Any], now: float, failure: str) -> None:
        """A hook said no after its retries: back to 0 %, like a failed gate (before the first step too)."""
        old = self.rt.snapshot.percent[route.name]
        if int(state["step"]) >= 0:
            new_c, legacy_c = await self.evidence(route, state, now)
            await self._roll_back(route, state, old, now, failure, (new_c, legacy_c), {})
            return
        await self.rt.overrides.set_percent(route.name, 0, source="rollout")
        move(route.name, state, "rollback", reason=failure, since=now)
        await self.rt.overrides.put_rollout(route.name, state)
        self._event(route.name, "rolled_back")
        log.warning("rollout rolled back", route=route.name, reason=failure)
        await self.rt.history.record("rollout", "rollout", "rollout_rollback", route.name, old, 0, failure)

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
        gates, verdict = _gate_views(ro.gates, new_c, legacy_c, extra)
        sides = {"new": new_c.totals().view(), "legacy": legacy_c.totals().view()}
        return {"percent": ro.steps[step], "since": since, "until": until, **sides, "gates": gates, "verdict": verdict}

    def _gauge(self, name: str) -> None:
        self.rt.metrics.rollout_step.labels(name).set(self.rt.snapshot.percent.get(name, 0))

    # --- operator actions -------------------------------------------------------
    async def view(self) -> list[dict[str, Any]]:
        return [await self._view_one(r, time.time()) for r in self.routes()]

    async def _view_one(self, r: Route, now: float) -> dict[str, Any]:
        ro = r.rollout
        assert ro is not None
        pending: dict[str, Any] = {"status": "pending", "step": -1, "since": None, "reason": ""}
        state = await self.rt.overrides.get_rollout(r.name) or pending
        step = int(state["step"])
        since = float(state["since"]) if state["since"] is not None else None
        status = state["status"]
        moving = since is not None and status == "running" and step + 1 < len(ro.steps)
        view: dict[str, Any] = {
            "route": r.name,
            "status": status,
            "step": ro.steps[step] if step >= 0 else None,
            "percent": self.rt.snapshot.percent[r.name],
            "steps": list(ro.steps),
            "approval_steps": [ro.steps[i] for i in sorted(ro.approval)],
            "awaiting": ro.steps[step + 1] if status == "awaiting_approval" and step + 1 < len(ro.steps) else None,
            "interval_s": ro.interval_s,
            "since": since,
            "next_step_in_s": round(max(0.0, since + ro.interval_s - now), 1) if moving and since is not None else None,
            "reason": state["reason"],
            "actions": allowed(status),
            "kill": self.rt.snapshot.kill,
            "driven_here": r.name in self.driving,
            "scope": self.rt.windows.scope,
            "previous": state.get("previous"),
            "before_step": state.get("hooks"),  # the hooks' failures before the step to enter, while held by them
            "bake_s": ro.bake_s,
            "bake_ends_in_s": round(max(0.0, since + ro.bake_s - now), 1) if status == "baking" and since else None,
            **retire_view(ro, state, self.rt.legacy_last.get(r.name), now),
        }
        if step >= 0 and since is not None and status in (*ACTIVE, "paused"):  # a finished one shows `previous`
            new_c, legacy_c = await self.evidence(r, state, now)
            extra = await self.extra(r, state, now)
            view["gates"], verdict = _gate_views(ro.gates, new_c, legacy_c, extra)
            if ro.gates.confidence is not None:
                view["verdict"], view["confidence"] = verdict, ro.gates.confidence
            view["new"], view["legacy"] = new_c.totals().view(), legacy_c.totals().view()
            from_before = ro.steps[step] == 100 and state.get("legacy_before") is not None
            view["legacy_from_step_before"] = from_before
            if status in ACTIVE:
                view["waiting_for"] = self._waiting_for(r, since, now, new_c, legacy_c, not from_before, extra)
                view["stalled"] = state.get("stalled") == since
        return view

    def _waiting_for(
        self, r: Route, since: float, now: float, new: Counts, legacy: Counts, grows: bool, extra: judge.Extra
    ) -> list[dict[str, Any]]:
        """waiting_for(), at most once a second per route: it judges the gates on grown evidence many times,
        and consoles and `--watch` poll the view (the admin app shares the proxy's loop)."""
        cached = self._waits.get(r.name)
        if cached is not None and cached[0] == since and now - cached[1] < 1.0:
            return cached[2]
        assert r.rollout is not None
        waits = waiting_for(r.rollout.gates, new, legacy, now - since, grows, extra)
        self._waits[r.name] = (since, now, waits)
        return waits

    async def act(self, name: str, action: str, full: bool = False) -> dict[str, Any]:
        """An operator's action, as TRANSITIONS allows it for the rollout's status (else Refused: 409)."""
        route = self.rt.snapshot.config.by_name[name]
        steps = self._steps(name)
        now = time.time()
        fresh: dict[str, Any] = {"status": "running", "step": -1, "since": now, "reason": ""}
        state = await self.rt.overrides.get_rollout(name) or fresh
        was = Status(state["status"])
        if action == "promote":
            await self._promote(route, state, now, full)
        elif action == "restart" or (action == "resume" and was in (Status.ABORTED, Status.ROLLED_BACK)):
            move(name, state, action, step=-1, since=now, reason="", legacy_before=None)
            await self._enter(route, state, 0, now, "start")  # starts over at the first step, now
        elif action == "resume":
            move(name, state, "resume", since=now, reason="")
            if int(state["step"]) >= 0:  # back to the step it was paused on
                await self.rt.overrides.set_percent(name, steps[int(state["step"])], source="rollout")
        elif action == "pause":
            move(name, state, "pause", reason="paused by operator")
        elif action == "abort":
            transition(name, state["status"], "abort")  # refused before anything changes
            await self._keep_current(route, state, now)
            move(name, state, "abort", reason="aborted by operator", since=now)
            await self.rt.overrides.set_percent(name, 0, source="rollout")
        else:
            raise Refused(f"unknown rollout action {action!r}")
        await self.rt.overrides.put_rollout(name, state)
        if action in ("pause", "resume", "abort"):
            self._event(name, {"pause": "paused", "resume": "resumed", "abort": "aborted"}[action])
        log.warning("rollout " + action, route=name, status=state["status"], full=full)
        return await self._view_one(route, time.time())

    async def _promote(self, route: Route, state: dict[str, Any], now: float, full: bool) -> None:
        """The next step now (a held approval step included), or with `full` the last step and done."""
        ro = route.rollout
        assert ro is not None
        step = int(state["step"])
        if full or step + 1 >= len(ro.steps):
            why = f"promoted to {ro.steps[-1]}% by operator"
            transition(route.name, state["status"], "finish")  # refused before anything changes
            if state["status"] in ACTIVE:
                await self._keep_current(route, state, now)
            move(route.name, state, "finish", step=len(ro.steps) - 1, since=now, reason=why, legacy_before=None)
            await self.rt.overrides.set_percent(route.name, ro.steps[-1], source="rollout")
            self._gauge(route.name)
            self._event(route.name, "promoted")
            self._event(route.name, "done")
            return
        transition(route.name, state["status"], "promote")  # refused before anything changes
        await self._enter(route, state, step + 1, now, "promote")

    async def retire_check(self, route: Route, now: float) -> tuple[bool, str]:
        """(ready to retire, why not): `splitter retire` refuses a route that is not, unless forced. Legacy's
        last request is read from the store here (an operator's action), not this process's copy."""
        state = await self.rt.overrides.get_rollout(route.name)
        if route.rollout is None:
            if state is not None and state.get("retired"):
                return False, f"it was retired {ago(now - float(state['retired']))}"
            return False, "it has no rollout in routes.yaml, so nothing has shown legacy unused"
        last = (await self.rt.overrides.legacy_last()).get(route.name)
        view = retire_view(route.rollout, state, last, now)
        if view["ready_to_retire"]:
            return True, ""
        status = state["status"] if state is not None else "pending"
        if status != Status.DONE:
            return False, f"its rollout is {status}, not done"
        wait = f"retire_after_s {route.rollout.retire_after_s:g}: ready in {view['ready_in_s']:.0f} s"
        return False, f"{view['says']} ({wait})"

    async def mark_retired(self, name: str, now: float) -> None:
        """The rollout's record says it was retired (the file loses its rollout next); event `retired`."""
        state = await self.rt.overrides.get_rollout(name)
        if state is not None:
            state["retired"] = now
            await self.rt.overrides.put_rollout(name, state)
        self._zero_events(name)
        self._event(name, "retired")

    def _steps(self, name: str) -> tuple[Percent, ...]:
        r = self.rt.snapshot.config.by_name[name]
        assert r.rollout is not None
        return r.rollout.steps


def ago(seconds: float) -> str:
    """`3 days ago`, `5 hours ago`, `40 s ago`: how long since, as a person says it."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size:.0f} {unit}s ago"
    return f"{max(0.0, seconds):.0f} s ago"


def retire_view(ro: RolloutSpec, state: dict[str, Any] | None, legacy_last: float | None, now: float) -> dict[str, Any]:
    """Whether a route is ready to retire: its rollout done (and baked), and legacy has served none of its
    requests for retire_after_s. Quiet since legacy's last request, or since the rollout finished when legacy
    was never seen (not since "never": that would make a route ready the moment it finishes)."""
    done = state is not None and state.get("status") == Status.DONE
    quiet_since = legacy_last if legacy_last is not None else float(state["since"]) if done and state else None
    ready = done and quiet_since is not None and now - quiet_since >= ro.retire_after_s
    if legacy_last is not None:
        says = f"legacy last served this route {ago(now - legacy_last)}"
    else:
        says = "legacy has served this route no request since splitter began counting"
    left = ro.retire_after_s - (now - quiet_since) if done and quiet_since is not None and not ready else None
    return {
        "ready_to_retire": ready,
        "legacy_last_request": legacy_last,
        "retire_after_s": ro.retire_after_s,
        "quiet_since": quiet_since,
        "ready_in_s": round(left, 1) if left is not None else None,
        "says": says,
    }


def waiting_for(
    gates: Gates, new: Counts, legacy: Counts, elapsed: float, legacy_grows: bool, extra: judge.Extra | None = None
) -> list[dict[str, Any]]:
    """What each undecided gate waits for: the requests it needs on each side (at the rates and values
    seen since the step began) and about how long that takes; `says` is the operator's line."""
    shadow = extra.shadow if extra is not None and extra.shadow is not None else None
    compared = shadow.t.get("match", 0) + shadow.t.get("mismatch", 0) if shadow is not None else 0
    per_s = max(1.0, elapsed)
    rates = {"new": new.n / per_s, "legacy": legacy.n / per_s if legacy_grows else 0.0, "shadow": compared / per_s}
    has = {"new": new.n, "legacy": legacy.n, "shadow": compared}
    out = []
    if new.n < gates.min_requests:
        out.append(_needs("min_requests", {"new": gates.min_requests}, has, rates, ""))
    if gates.confidence is None:
        if gates.max_p95_ratio is not None and legacy.n < max(1, gates.min_requests):
            out.append(_needs("max_p95_ratio", {"legacy": max(1, gates.min_requests)}, has, rates, ""))
        return out
    at = f" at confidence {gates.confidence:g}"
    for c in judge.judge(gates, new, legacy, 1 - gates.confidence, extra):
        if c.verdict != judge.WAIT:
            continue
        factor = judge.growth_to_decide(gates, c.gate, new, legacy, legacy_grows, extra)
        if factor is None:
            est = "no value yet" if c.estimate is None else f"estimate {c.estimate:.4g} against {c.threshold:g}"
            says = f"{c.gate}: more of the same traffic would not decide it ({est}); it holds until that changes"
            if new.n == 0:
                says = f"{c.gate}: no requests of new yet"
            out.append({"gate": c.gate, "needs": None, "has": has, "eta_s": None, "says": says})
            continue
        sides = ("new", "legacy") if legacy_grows and c.gate in judge.RELATIVE else ("new",)
        if c.gate == "max_mismatch_rate":
            sides = ("shadow",)
        out.append(_needs(c.gate, {s: math.ceil(has[s] * factor) for s in sides}, has, rates, at))
    return out


def _needs(gate: str, need: dict[str, int], has: dict[str, int], rates: dict[str, float], at: str) -> dict[str, Any]:
    """One waiting gate: `need` requests per side against `has`, and the time that takes at `rates`."""
    short = {s: n - has[s] for s, n in need.items() if n > has[s]}
    eta = max((k / rates[s] if rates[s] > 0 else math.inf for s, k in short.items()), default=0.0)
    said = {s: f"{n} shadow comparisons" if s == "shadow" else f"{n} requests of {s}" for s, n in need.items()}
    sides = " and ".join(said.values())
    counts = ", ".join(f"{s} has {has[s]}" for s in need)
    when = "no traffic to get them at the moment" if math.isinf(eta) else f"about {eta:.0f} s at the current rate"
    says = f"{gate}: needs {sides}{at}; {counts} — {when}"
    return {"gate": gate, "needs": need, "has": has, "eta_s": None if math.isinf(eta) else round(eta, 1), "says": says}


async def _read_prometheus(url: str | None, route: str, gates: tuple[PromGate, ...]) -> tuple[judge.Check, ...]:
    """Each prometheus gate read once: its query for new (and for legacy when it compares them)."""
    if url is None:
        return tuple(_prom_check(g, None, None, "no Prometheus: serve --prometheus URL") for g in gates)
    out = []
    async with httpx.AsyncClient(base_url=url.rstrip("/"), timeout=2.0) as client:
        for g in gates:
            try:
                new = await _prom_value(client, g.query.replace("{route}", route).replace("{role}", "new"))
                relative = g.min_ratio is not None or g.max_ratio is not None
                legacy = await _prom_value(client, g.query.replace("{route}", route).replace("{role}", "legacy"))
                out.append(_prom_check(g, new, legacy if relative else None, ""))
            except (httpx.HTTPError, ValueError, KeyError, IndexError) as exc:
                out.append(_prom_check(g, None, None, f"Prometheus did not answer ({type(exc).__name__})"))
    return tuple(out)


async def _prom_value(client: httpx.AsyncClient, query: str) -> float | None:
    """The first sample of an instant query; None when there is none (or it is NaN)."""
    r = await client.get("/api/v1/query", params={"query": query})
    r.raise_for_status()
    result = r.json()["data"]["result"]
    if not result:
        return None
    value = float(result[0]["value"][1])
    return value if math.isfinite(value) else None


def _prom_check(g: PromGate, new: float | None, legacy: float | None, why: str) -> judge.Check:
    """A prometheus gate's verdict: waiting without a value (Prometheus unreachable means wait, not pass)."""
    bounds = [b for b in (g.min_ratio, g.max_ratio, g.min, g.max) if b is not None]
    name = f"prometheus.{g.name}"
    relative = g.min_ratio is not None or g.max_ratio is not None
    if new is None or (relative and not legacy):
        said = why or ("no data for new" if new is None else "no data for legacy (or 0): no ratio")
        return judge.Check(name, bounds[0], None, None, None, judge.WAIT, None, said)
    ratio = new / legacy if relative and legacy else None
    bad = (
        (g.min_ratio is not None and ratio is not None and ratio < g.min_ratio)
        or (g.max_ratio is not None and ratio is not None and ratio > g.max_ratio)
        or (g.min is not None and new < g.min)
        or (g.max is not None and new > g.max)
    )
    named = {"min_ratio": g.min_ratio, "max_ratio": g.max_ratio, "min": g.min, "max": g.max}
    limits = ", ".join(f"{k} {v:g}" for k, v in named.items() if v is not None)
    sides = f", legacy {legacy:.4g}, ratio {ratio:.4g}" if ratio is not None and legacy is not None else ""
    said = f"new {new:.4g}{sides} ({limits})"
    estimate = ratio if ratio is not None else new
    return judge.Check(name, bounds[0], estimate, None, None, judge.FAIL if bad else judge.PASS, None, said)


async def _ask(hooks: tuple[Hook, ...], body: dict[str, Any]) -> tuple[int, str] | None:
    """POST `body` to each hook in order: None when all answered 2xx in time, else (index, what went wrong)."""
    async with httpx.AsyncClient(follow_redirects=False) as client:
        for i, hook in enumerate(hooks):
            try:
                r = await asyncio.wait_for(client.post(hook.url, json=body), hook.timeout_s)
            except TimeoutError:
                return i, f"{hook.url} did not answer within {hook.timeout_s:g} s"
            except (httpx.HTTPError, OSError) as exc:
                return i, f"{hook.url} could not be reached ({type(exc).__name__})"
            if not 200 <= r.status_code < 300:
                return i, f"{hook.url} answered {r.status_code}"
    return None


PAST_STEPS = 20  # ended steps whose evidence a rollout record keeps (progress.py): a few restarts of a long plan


def keep_step(state: dict[str, Any], evidence: dict[str, Any], new: Counts, legacy: Counts) -> None:
    """An ended step's window record with both sides' counts (histograms included: progress.py reads
    intervals from them), appended to the record's `past_steps`, the newest PAST_STEPS kept. `previous`
    holds only the last step; a migration's report needs every step, after the windows forgot them."""
    past = [p for p in state.get("past_steps") or [] if isinstance(p, dict)][-(PAST_STEPS - 1) :]
    state["past_steps"] = [*past, {**evidence, "counts": {"new": new.fields(), "legacy": legacy.fields()}}]


def _step_total(state: dict[str, Any]) -> dict[str, Any]:
    """The step's running total in the record (window.Counts fields per role, folded up to `until`),
    or an empty one when it belongs to another step (or there is none yet)."""
    since = float(state["since"])
    total = state.get("step_total")
    if isinstance(total, dict) and total.get("since") == since:
        return total
    return {"since": since, "until": since, "new": {}, "legacy": {}}


def _counts(fields: dict[str, Any]) -> Counts:
    return Counts.from_fields({k: str(v) for k, v in fields.items()})


def _gate_views(
    gates: Gates, new_c: Counts, legacy_c: Counts, extra: judge.Extra | None = None
) -> tuple[list[dict[str, Any]], str]:
    """Each gate as the API shows it, and the verdict (wait below min_requests): judged with
    `confidence` (estimate, interval, p-value), else the raw value against its threshold."""
    new = new_c.totals()
    if gates.confidence is None:
        checks = gate_checks(gates, new, legacy_c.totals())
        for c in count_checks(gates, new_c, legacy_c, extra):
            decided = c.verdict != judge.WAIT and new.requests >= max(1, gates.min_requests)
            ok = c.verdict == judge.PASS if decided else None
            checks.append({"gate": c.gate, "value": c.estimate, "threshold": c.threshold, "ok": ok, "detail": c.detail})
        oks = [c["ok"] for c in checks]
        return checks, judge.FAIL if False in oks else judge.PASS if all(oks) else judge.WAIT
    judged, verdict = judge.at_confidence(gates, new_c, legacy_c, extra)
    enough = new.requests >= gates.min_requests
    floor = {"gate": "min_requests", "value": new.requests, "threshold": gates.min_requests, "ok": enough}
    return [floor, *(c.view() for c in judged)], verdict
