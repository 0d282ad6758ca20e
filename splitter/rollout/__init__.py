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

The package, bottom-up: states (Status, the TRANSITIONS table, move), gates (each gate against its
threshold, what an undecided gate waits for), record (past steps, the running total, ready to retire),
remote (Prometheus and before_step hooks, off the tick), evidence (what a step is judged on), driver (the
step engine), actions (`Rollouts`: the driver plus the operator's view and actions).
"""

from ..refused import Refused
from .actions import Rollouts
from .gates import gate_checks, gate_failure
from .record import retire_view
from .states import ACTIONS, TRANSITIONS, Status, transition

__all__ = [
    "ACTIONS", "TRANSITIONS", "Refused", "Rollouts", "Status", "gate_checks", "gate_failure", "retire_view",
    "transition",
]
