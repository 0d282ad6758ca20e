"""Who changed what, when and why: one event per change, by a person or by automation.

    {"at": epoch s, "who": token name | guard | rollout | file, "source": cli | console | api |
     guard | rollout | file, "action": ..., "route": name | null, "old": ..., "new": ...,
     "reason": str, "on_behalf": what the client said (X-Splitter-Actor), only when it said it}

Events go to the store (store/: the newest ~10,000, in a Redis stream shared by the fleet or in
the embedded SQLite file), to `splitter_changes_total{route,action,source}` (Grafana annotations) and to
the notifier (notify.py), all by the one process that made the change, so a fleet sends one
notification per change. Like Kubernetes' audit log and LaunchDarkly's: the actor is the
credential, not a header.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import structlog

from .metrics import Metrics
from .store import Store, Unavailable

log = structlog.get_logger("splitter.history")
SOURCES = ("cli", "console", "api", "guard", "rollout", "file")
MAX_REASON = 500


class History:
    def __init__(self, store: Store, metrics: Metrics, notify: Callable[[dict[str, Any]], None]) -> None:
        self.store = store
        self.metrics = metrics
        self.notify = notify

    async def record(
        self,
        who: str,
        source: str,
        action: str,
        route: str | None,
        old: Any,
        new: Any,
        reason: str = "",
        on_behalf: str | None = None,
    ) -> dict[str, Any]:
        """Store, count and announce one change that has happened. A store that cannot be
        reached loses the stored copy only: the change stands, the metric and notification go out."""
        event: dict[str, Any] = {
            "at": round(time.time(), 3),
            "who": who,
            "source": source,
            "action": action,
            "route": route,
            "old": old,
            "new": new,
            "reason": reason,
        }
        if on_behalf:
            event["on_behalf"] = on_behalf
        self.metrics.changes.labels(route or "", action, source).inc()
        try:
            await self.store.push_history(event)
        except Unavailable as exc:
            log.error("change not written to the history: the store is unreachable", error=str(exc), **event)
        self.notify(event)
        return event

    async def recent(self, limit: int = 100, route: str | None = None) -> list[dict[str, Any]]:
        return await self.store.history(limit, route)


_FINISH = {  # the finish line (rollout/, `splitter retire`): said in the migration plan's words
    "rollout_baking": "rollout of {route} baking at {new} %",
    "ready_to_retire": "{route} is ready to retire",
    "retire": "retired {route}: pinned to new in routes.yaml (100 %; its rollout, guard and shadow removed)",
}


def describe(e: dict[str, Any]) -> str:
    """One line for people (Slack, the console): who did what to which route, and why."""
    who = e["who"] + (f" (for {e['on_behalf']})" if e.get("on_behalf") else "")
    action, route = e["action"], e.get("route")
    if action == "kill":
        what = "turned the kill switch " + ("ON: every request goes to legacy" if e["new"] else "off")
    elif action == "cohort":
        what = _cohort_change(route, e["old"], e["new"])
    elif action in _FINISH:
        what = _FINISH[action].format(route=route, new=e["new"])
    elif action == "reload":
        what = f"routes.yaml changed {route}: {e['old']} % → {e['new']} %"
    else:
        # the guard's and the rollout's actions start with their own name: `guard trip`, not `guard guard trip`
        verb = action.removeprefix(f"{e['who']}_") if e["who"] == e["source"] else action
        what = f"{verb.replace('_', ' ')} {route}: {e['old']} % → {e['new']} %"
    return f"{who} {what}" + (f" — {e['reason']}" if e.get("reason") else "")


def _cohort_change(route: str | None, old: dict[str, Any], new: dict[str, Any]) -> str:
    """`changed cohort beta of auth: +carol, -dave (1 → 1 runtime members)`; at most the sample by name."""
    parts = []
    for sign, ids, count in (("+", new["added"], new["added_count"]), ("-", new["removed"], new["removed_count"])):
        parts += [sign + u for u in ids]
        if count > len(ids):
            parts.append(f"{sign}{count - len(ids)} more")
    counts = f"{old['runtime_members']} → {new['runtime_members']} runtime members"
    return f"changed cohort {new['cohort']} of {route}: {', '.join(parts) or 'no change'} ({counts})"
