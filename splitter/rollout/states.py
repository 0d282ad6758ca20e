"""A rollout's status as one state machine (h11's _state.py): the `TRANSITIONS` table keyed by (status,
action) is the only place a status changes; `move` applies it to a record, `transition` refuses (409) what
the table does not allow, naming the status and what would go on."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from ..refused import Refused

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


def transition(name: str, status: str, action: str) -> Status:
    """The status `action` moves a rollout in `status` to, or Refused naming the status."""
    now = Status(status)
    nxt = TRANSITIONS.get((now, action))
    if nxt is None:
        raise Refused(409, "conflict",
            f"rollout of {name!r} is {now.value}: {action} does not apply ({_HINTS[now].format(name=name)})")
    return nxt


def move(name: str, state: dict[str, Any], action: str, **fields: Any) -> None:
    """Apply `action` to the rollout record: its next status from TRANSITIONS, and `fields`."""
    state.update(status=transition(name, state["status"], action).value, **fields)
