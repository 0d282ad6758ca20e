"""The rollout driver (step engine): see `Driver`."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import structlog

from .. import judge, progress
from ..config import Percent, RolloutSpec, Route
from ..store import Conflict, Unavailable
from ..window import Counts
from .evidence import Evidence
from .gates import THRESHOLD_ALPHA, count_checks, count_failure, gate_failure, waiting_for
from .record import keep_step, retire_view
from .remote import ask_hooks
from .states import ACTIVE, EVENTS, Status, move

if TYPE_CHECKING:
    from ..runtime import Runtime

log = structlog.get_logger("splitter.rollout")


LEASE_S = 3.0


class Driver(Evidence):
    """The step engine: each tick, under the route's lease, judge the current step and move the record as
    TRANSITIONS allows (start, advance, hold for approval or hooks, bake, done, roll back, stop), with one event,
    log line and history record per move."""

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt)
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.driving: set[str] = set()
        self._waiting_logged: set[tuple[str, int, str]] = set()
        self._skipping: set[str] = set()
        self._counted: set[str] = set()
        # route -> ((step since, step to enter), the before_step hooks being asked): off the tick, so a slow
        # hook holds only its own route and never the lease
        self._asking: dict[str, tuple[tuple[float, int], asyncio.Task[tuple[int, str] | None]]] = {}

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

    def _gauge(self, name: str) -> None:
        self.rt.metrics.rollout_step.labels(name).set(self.rt.snapshot.percent.get(name, 0))

    def _once(self, name: str, step: int, event: str, **fields: Any) -> None:
        if (name, step, event) not in self._waiting_logged:
            self._waiting_logged.add((name, step, event))
            log.info(event, route=name, step=step, **fields)

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
        """The route's summary line in the migration plan's words (progress/words.py), for the done and
        ready_to_retire notifications: 'auth: migrated, 100 % on new since 2026-12-03; p95 −12 %, ...'."""
        assert route.rollout is not None
        events = sorted(await self.rt.history.recent(1_000, route.name), key=lambda e: e["at"])
        snap = self.rt.snapshot
        view = {"name": route.name, "percent": snap.percent[route.name], "file_percent": route.percent,
                "source": snap.sources[route.name]}
        steps = [p for p in state.get("past_steps") or [] if isinstance(p, dict)]
        rollout = {"status": status, "steps": list(route.rollout.steps)}
        return str(progress.route_progress(view, rollout, steps, events, now)["summary"])

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
                self._asking[route.name] = ((since, step), asyncio.create_task(ask_hooks(ro.before_step, body)))
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
