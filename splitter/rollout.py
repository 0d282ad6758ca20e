"""Gated progressive rollout: walk a route's override through its steps while the gates hold.

State per route (in Redis with a fleet, else in memory):
    {"status": running|paused|aborted|rolled_back|done, "step": index, "since": epoch s, "reason": str}
With Redis one replica drives a route at a time (a lease renewed every tick;
when the holder dies another takes over after the lease runs out). The driver
judges the gates on the fleet's traffic since the current step began (window.py;
without Redis, this process's).
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from typing import TYPE_CHECKING, Any

import structlog

from . import judge
from .config import Gates, Route
from .overrides import Conflict, Unavailable
from .window import Counts, Totals

if TYPE_CHECKING:
    from .runtime import Runtime

log = structlog.get_logger("splitter.rollout")
LEASE_S = 3.0


def gate_checks(g: Gates, new: Totals, legacy: Totals) -> list[dict[str, Any]]:
    """Each gate's current value against its threshold; `ok` None while there is no value yet."""
    checks: list[dict[str, Any]] = [{"gate": "min_requests", "value": new.requests, "threshold": g.min_requests, "ok": new.requests >= g.min_requests}]
    if g.max_error_rate is not None:
        checks.append({"gate": "max_error_rate", "value": round(new.error_rate, 5), "threshold": g.max_error_rate, "ok": new.error_rate <= g.max_error_rate if new.requests else None})
    if g.max_p95_ms is not None:
        checks.append({"gate": "max_p95_ms", "value": new.p95_ms, "threshold": g.max_p95_ms, "ok": new.p95_ms <= g.max_p95_ms if new.p95_ms is not None else None})
    if g.max_p95_ratio is not None:
        judged = bool(new.p95_ms and legacy.p95_ms and legacy.requests >= max(1, g.min_requests))
        ratio = round(new.p95_ms / legacy.p95_ms, 4) if judged and new.p95_ms and legacy.p95_ms else None
        checks.append({"gate": "max_p95_ratio", "value": ratio, "threshold": g.max_p95_ratio, "ok": ratio <= g.max_p95_ratio if ratio is not None else None})
    return checks


_SAYS = {"max_error_rate": "error rate", "max_p95_ms": "p95 ms", "max_p95_ratio": "p95 ratio"}


def gate_failure(g: Gates, new: Totals, legacy: Totals) -> str | None:
    """The first gate that fails, judged only with enough new traffic."""
    if new.requests < max(1, g.min_requests):
        return None
    for c in gate_checks(g, new, legacy)[1:]:
        if c["ok"] is False:
            return f"{_SAYS[c['gate']]} {c['value']:g} > {c['threshold']:g}"
    return None


class Rollouts:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.owner = f"{os.uname().nodename}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.driving: set[str] = set()
        self._waiting_logged: set[tuple[str, int, str]] = set()
        self._looks: dict[str, tuple[float, int]] = {}  # route -> (step start, last checkpoint judged)
        self._skipping: set[str] = set()

    def routes(self) -> list[Route]:
        return [r for r in self.rt.snapshot.config.routes if r.rollout is not None]

    async def run(self) -> None:
        while True:
            intervals = [r.rollout.interval_s for r in self.routes() if r.rollout]
            await asyncio.sleep(max(0.1, min([1.0, *(i / 5 for i in intervals)])))
            for route in self.routes():
                try:
                    await self.tick(route, time.time())
                    self._skipping.discard(route.name)
                except (Unavailable, Conflict) as exc:
                    if route.name not in self._skipping:  # once per outage, not once per tick
                        self._skipping.add(route.name)
                        log.warning("rollout paused: its state cannot be written", route=route.name, error=str(exc))

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
        state = await rt.overrides.get_rollout(route.name) or {"status": "running", "step": -1, "since": now, "reason": ""}
        snap = rt.snapshot
        if state["status"] != "running":
            self._gauge(route.name)
            return
        step = int(state["step"])
        if step >= 0 and snap.sources.get(route.name) != "rollout":
            why = "guard tripped" if snap.sources.get(route.name) == "guard" else f"percent changed by hand (source {snap.sources.get(route.name)})"
            state.update(status="rolled_back" if "guard" in why else "paused", reason=why)
            await rt.overrides.put_rollout(route.name, state)
            log.warning("rollout stopped", route=route.name, reason=why)
            return
        if step < 0:
            await self._go(route, state, 0, now, "start")
            return
        since = float(state["since"])
        new_c = await rt.windows.counts(route.name, "new", now, ro.interval_s + 1, since)
        legacy_c = await rt.windows.counts(route.name, "legacy", now, ro.interval_s + 1, since)
        new, legacy = new_c.totals(), legacy_c.totals()
        gate_values: dict[str, Any] = {"requests": new.requests, "error_rate": round(new.error_rate, 5), "p95_ms": new.p95_ms, "legacy_p95_ms": legacy.p95_ms}
        judged = ro.gates.confidence is not None
        failure = self._judged_failure(route.name, ro.gates, new_c, legacy_c, since, gate_values) if judged else gate_failure(ro.gates, new, legacy)
        if failure:
            await rt.overrides.set_percent(route.name, 0, source="rollout")
            state.update(status="rolled_back", reason=f"gate failed at {ro.steps[step]}%: {failure}", since=now)
            await rt.overrides.put_rollout(route.name, state)
            self._gauge(route.name)
            log.warning("rollout rolled back", route=route.name, step=ro.steps[step], reason=failure, **gate_values)
            old = snap.percent[route.name]
            await rt.history.record("rollout", "rollout", "rollout_rollback", route.name, old, 0, state["reason"])
            return
        if now - since < ro.interval_s:
            return
        if new.requests < ro.gates.min_requests:
            self._once(route.name, step, "rollout waiting for traffic", have=new.requests, need=ro.gates.min_requests)
            return
        if judged:
            assert ro.gates.confidence is not None
            checks = judge.judge(ro.gates, new_c, legacy_c, 1 - ro.gates.confidence)
            gate_values["checks"] = [c.view() for c in checks]
            if judge.verdict(checks) != judge.PASS:
                # neither shown to hold nor shown to fail: a rollout waits for more evidence
                self._once(route.name, step, "rollout holding: the gates are not yet shown to hold", checks=gate_values["checks"])
                return
        if step + 1 >= len(ro.steps):
            state.update(status="done", reason="all steps passed", since=now)
            await rt.overrides.put_rollout(route.name, state)
            log.info("rollout done", route=route.name, percent=ro.steps[step], **gate_values)
            at = ro.steps[step]
            await rt.history.record("rollout", "rollout", "rollout_done", route.name, at, at, "all steps passed")
            return
        await self._go(route, state, step + 1, now, "advance", **gate_values)

    def _judged_failure(self, name: str, gates: Gates, new: Counts, legacy: Counts, since: float, values: dict[str, Any]) -> str | None:
        """With `confidence`, a failure is judged at checkpoints (new's requests reaching
        min_requests x 1, 2, 4, 8 ...), look k spending alpha * 6 / (pi^2 k^2) of the error
        budget, so judging a whole step keeps the false-rollback rate within 1 - confidence."""
        assert gates.confidence is not None
        look = judge.look(new.n, gates.min_requests)
        if look == 0 or self._looks.get(name, (since, 0)) >= (since, look):
            return None
        self._looks[name] = (since, look)
        checks = judge.judge(gates, new, legacy, judge.spend(1 - gates.confidence, look))
        values["checks"] = [c.view() for c in checks]
        values["look"] = look
        return judge.reason(checks) if judge.verdict(checks) == judge.FAIL else None

    def _once(self, name: str, step: int, event: str, **fields: Any) -> None:
        if (name, step, event) not in self._waiting_logged:
            self._waiting_logged.add((name, step, event))
            log.info(event, route=name, step=step, **fields)

    async def _go(self, route: Route, state: dict[str, Any], step: int, now: float, why: str, **gate_values: Any) -> None:
        ro = route.rollout
        assert ro is not None
        old = self.rt.snapshot.percent[route.name]
        await self.rt.overrides.set_percent(route.name, ro.steps[step], source="rollout")
        state.update(status="running", step=step, since=now, reason="")
        await self.rt.overrides.put_rollout(route.name, state)
        self._gauge(route.name)
        log.info("rollout step", route=route.name, action=why, old=old, new=ro.steps[step], **gate_values)
        reason = "start" if why == "start" else f"gates held for {ro.interval_s:g} s at {ro.steps[step - 1]} %"
        await self.rt.history.record("rollout", "rollout", "rollout_step", route.name, old, ro.steps[step], reason)

    def _gauge(self, name: str) -> None:
        self.rt.metrics.rollout_step.labels(name).set(self.rt.snapshot.percent.get(name, 0))

    # --- operator actions -------------------------------------------------------
    async def view(self) -> list[dict[str, Any]]:
        out = []
        for r in self.routes():
            assert r.rollout is not None
            state = await self.rt.overrides.get_rollout(r.name) or {"status": "pending", "step": -1, "since": None, "reason": ""}
            step = int(state["step"])
            now = time.time()
            since = float(state["since"]) if state["since"] is not None else None
            view: dict[str, Any] = {
                "route": r.name,
                "status": state["status"],
                "step": r.rollout.steps[step] if step >= 0 else None,
                "percent": self.rt.snapshot.percent[r.name],
                "steps": list(r.rollout.steps),
                "interval_s": r.rollout.interval_s,
                "since": since,
                "next_step_in_s": round(max(0.0, since + r.rollout.interval_s - now), 1) if since is not None and state["status"] == "running" and step + 1 < len(r.rollout.steps) else None,
                "reason": state["reason"],
                "driven_here": r.name in self.driving,
                "scope": self.rt.windows.scope,
            }
            if step >= 0 and since is not None:
                new_c = await self.rt.windows.counts(r.name, "new", now, r.rollout.interval_s + 1, since)
                legacy_c = await self.rt.windows.counts(r.name, "legacy", now, r.rollout.interval_s + 1, since)
                new, legacy = new_c.totals(), legacy_c.totals()
                gates = r.rollout.gates
                if gates.confidence is not None:
                    checks = judge.judge(gates, new_c, legacy_c, 1 - gates.confidence)
                    view["gates"] = [{"gate": "min_requests", "value": new.requests, "threshold": gates.min_requests, "ok": new.requests >= gates.min_requests}] + [c.view() for c in checks]
                    view["verdict"] = judge.verdict(checks) if new.requests >= gates.min_requests else judge.WAIT
                    view["confidence"] = gates.confidence
                else:
                    view["gates"] = gate_checks(gates, new, legacy)
                view["new"], view["legacy"] = new.view(), legacy.view()
            out.append(view)
        return out

    async def act(self, name: str, action: str) -> dict[str, Any]:
        state = await self.rt.overrides.get_rollout(name) or {"status": "running", "step": -1, "since": time.time(), "reason": ""}
        now = time.time()
        if action == "pause":
            state.update(status="paused", reason="paused by operator")
        elif action == "resume":
            if state["status"] in ("aborted", "rolled_back"):
                state.update(status="running", step=-1, since=now, reason="")  # start over at the first step
            else:
                if state["status"] == "paused" and int(state["step"]) >= 0:
                    await self.rt.overrides.set_percent(name, self._steps(name)[int(state["step"])], source="rollout")
                state.update(status="running", since=now, reason="")
        elif action == "abort":
            await self.rt.overrides.set_percent(name, 0, source="rollout")
            state.update(status="aborted", reason="aborted by operator", since=now)
        await self.rt.overrides.put_rollout(name, state)
        log.warning("rollout " + action, route=name, status=state["status"])
        return next(v for v in await self.view() if v["route"] == name)

    def _steps(self, name: str) -> tuple[int, ...]:
        r = self.rt.snapshot.config.by_name[name]
        assert r.rollout is not None
        return r.rollout.steps
