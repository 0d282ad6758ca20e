"""What a rollout's record keeps beside its status: the ended steps' evidence (`past_steps`), the current
step's running total (`step_total`), and whether the route is ready to retire, in an operator's words."""

from __future__ import annotations

from typing import Any

from ..config import RolloutSpec
from ..window import Counts
from .states import Status


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


PAST_STEPS = 20  # ended steps whose evidence a rollout record keeps (progress/): a few restarts of a long plan


def keep_step(state: dict[str, Any], evidence: dict[str, Any], new: Counts, legacy: Counts) -> None:
    """An ended step's window record with both sides' counts (histograms included: progress/ reads
    intervals from them), appended to the record's `past_steps`, the newest PAST_STEPS kept. `previous`
    holds only the last step; a migration's report needs every step, after the windows forgot them."""
    past = [p for p in state.get("past_steps") or [] if isinstance(p, dict)][-(PAST_STEPS - 1) :]
    state["past_steps"] = [*past, {**evidence, "counts": {"new": new.fields(), "legacy": legacy.fields()}}]


def step_total(state: dict[str, Any]) -> dict[str, Any]:
    """The step's running total in the record (window.Counts fields per role, folded up to `until`),
    or an empty one when it belongs to another step (or there is none yet)."""
    since = float(state["since"])
    total = state.get("step_total")
    if isinstance(total, dict) and total.get("since") == since:
        return total
    return {"since": since, "until": since, "new": {}, "legacy": {}}


def as_counts(fields: dict[str, Any]) -> Counts:
    return Counts.from_fields({k: str(v) for k, v in fields.items()})
