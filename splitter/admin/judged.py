"""What a route's view adds when a guard or rollout judges it: the window judged (a rollout's whole current
step), the judge's evidence at `confidence`, and whether the route is ready to retire."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .. import judge
from ..rollout import retire_view
from ..store import Unavailable

if TYPE_CHECKING:
    from ..config import Route as RouteSpec
    from ..rollout import Rollouts
    from ..runtime import Runtime


async def retire_fields(rt: Runtime, view: dict[str, Any], r: RouteSpec, now: float) -> None:
    """A rollout's route: ready to retire (the rollout done, legacy unused for retire_after_s), and when legacy
    last served it (fleet-wide; null: not seen), with the operator's sentence ("legacy last served ... ago").
    Other routes have no rollout to finish: their view stays as it was (the gauge has legacy's last request)."""
    if r.rollout is None:
        return
    last = rt.legacy_last.get(r.name)
    view.update(ready_to_retire=False, legacy_last_request=last, retire_says=None)
    try:
        state = await rt.overrides.get_rollout(r.name)
    except Unavailable:
        return
    said = retire_view(r.rollout, state, last, now)
    view.update(ready_to_retire=said["ready_to_retire"], retire_says=said["says"], ready_in_s=said["ready_in_s"])
    view["retired"] = state.get("retired") if state else None


async def judged_window(rt: Runtime, rollouts: Rollouts, r: RouteSpec, now: float) -> dict[str, Any]:
    """The window a guard judges, or everything a rollout's current step is judged on (since it
    began, not its last interval): the span shown is the span judged."""
    span, since = await rt.judged_span(r)
    state = await rt.overrides.get_rollout(r.name) if r.guard is None and r.rollout is not None else None
    if not state or int(state["step"]) < 0 or state.get("since") is None:
        return await rt.windows.view(r.name, now, span, since)
    new, legacy = await rollouts.evidence(r, state, now)
    step_since = float(state["since"])
    return {
        "scope": rt.windows.scope,
        "span_s": round(max(0.0, now - step_since), 1),
        "since": step_since,
        "step_since": step_since,
        "new": new.totals().view(),
        "legacy": legacy.totals().view(),
    }


async def judgement_of(
    rt: Runtime, rollouts: Rollouts, r: RouteSpec, now: float, span: float, since: float | None
) -> dict[str, Any] | None:
    """The judge's evidence on the window a guard or rollout with `confidence` judges: estimate,
    interval, p-value, verdict per gate; None for threshold-only gates."""
    if r.guard is not None and r.guard.confidence is not None:
        gates: Any = r.guard
    else:
        gates = r.rollout.gates if r.rollout is not None else None
    if gates is None or gates.confidence is None:
        return None
    rollout_gates = r.rollout is not None and gates is r.rollout.gates
    state = await rt.overrides.get_rollout(r.name) if rollout_gates else None
    if state and int(state["step"]) >= 0:
        new, legacy = await rollouts.evidence(r, state, now)  # at 100 %: legacy of the step before
    else:
        new, legacy = await rt.windows.pair(r.name, now, span, since)
    checks, verdict = judge.at_confidence(gates, new, legacy)
    return {"confidence": gates.confidence, "verdict": verdict, "checks": [c.view() for c in checks]}
