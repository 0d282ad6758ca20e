"""The rollouts an operator sees and acts on: see `Rollouts`."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog

from .. import judge
from ..config import Percent, Route
from ..refused import Refused
from ..window import Counts
from .driver import Driver
from .gates import gate_views, waiting_for
from .record import ago, retire_view
from .states import ACTIVE, Status, allowed, move, transition

if TYPE_CHECKING:
    from ..runtime import Runtime

log = structlog.get_logger("splitter.rollout")


class Rollouts(Driver):
    """Every route's rollout: the driver (`run`), and what an operator sees (`view`) and does (`act`,
    `retire_check`, `mark_retired`)."""

    def __init__(self, rt: Runtime) -> None:
        super().__init__(rt)
        self._waits: dict[str, tuple[float, float, list[dict[str, Any]]]] = {}  # route -> (step since, at, waits)

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
            view["gates"], verdict = gate_views(ro.gates, new_c, legacy_c, extra)
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
            raise Refused(409, "conflict", f"unknown rollout action {action!r}")
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
