"""`splitter state export` / `import`: the runtime state as one JSON document, so it can move
between stores (the embedded file to Redis, or a restore into a fresh file). Only the `Store`
interface is used, so any store exports and any store imports.

    {"format": 1, "store": "sqlite /srv/splitter-state.db", "kill": false,
     "overrides": {"auth": {"percent": 60, "source": "override"}},
     "rollouts": {"auth": {...the rollout record...}},
     "members": {"auth:beta": ["alice", "bob"]},
     "legacy_last": {"auth": 1796400000.0},   # when legacy last served each route (ready to retire)
     "history": [newest first, as GET /admin/history]}

Import replaces the overrides and the kill switch, writes the rollout records, adds the cohort
members, and appends the history events the target does not hold yet (oldest first, so the
order is kept). Windows, leases, claims and shadow mismatches are not moved: they are recent
and rebuild themselves.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..config import parse_percent
from . import KEEP_HISTORY, State, Store

FORMAT = 1


async def export_state(store: Store, routes: Iterable[str]) -> dict[str, Any]:
    """What `store` holds; rollout records of the routes named (routes.yaml's)."""
    st = store.state
    rollouts = {}
    for name in routes:
        record = await store.get_rollout(name)
        if record is not None:
            rollouts[name] = record
    return {
        "format": FORMAT,
        "store": store.name,
        "kill": st.kill,
        "overrides": {k: {"percent": v, "source": st.sources.get(k, "override")} for k, v in st.percents.items()},
        "rollouts": rollouts,
        "members": {f"{r}:{c}": sorted(u.decode() for u in ids) for (r, c), ids in store.members.items()},
        "legacy_last": await store.legacy_last(),
        "history": await store.history(KEEP_HISTORY),
    }


def parse_export(doc: Any) -> tuple[State, dict[str, dict[str, Any]], dict[tuple[str, str], list[str]], list[Any]]:
    """The document's parts, or ValueError naming the first thing wrong (nothing is written then)."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError(f'not a splitter state export (needs "format": {FORMAT}, from `splitter state export`)')
    percents, sources = {}, {}
    for route, o in (doc.get("overrides") or {}).items():
        pct = parse_percent(str(o.get("percent"))) if isinstance(o, dict) else None
        if pct is None:
            raise ValueError(f"overrides.{route}: needs a percent 0..100, got {o!r}")
        percents[route], sources[route] = pct, str(o.get("source") or "override")
    rollouts = doc.get("rollouts") or {}
    if not isinstance(rollouts, dict) or not all(isinstance(r, dict) for r in rollouts.values()):
        raise ValueError("rollouts: must map route names to rollout records")
    members: dict[tuple[str, str], list[str]] = {}
    for key, ids in (doc.get("members") or {}).items():
        route, sep, cohort = str(key).partition(":")
        if not sep or not isinstance(ids, list) or not all(isinstance(u, str) for u in ids):
            raise ValueError(f'members.{key}: must be "route:cohort" -> a list of user ids')
        members[(route, cohort)] = ids
    history = doc.get("history") or []
    if not isinstance(history, list) or not all(isinstance(e, dict) for e in history):
        raise ValueError("history: must be a list of events")
    if not isinstance(doc.get("kill", False), bool):
        raise ValueError("kill: must be true or false")
    return State(percents, sources, bool(doc.get("kill"))), rollouts, members, history


async def import_state(store: Store, doc: Any, member_limit: int) -> dict[str, int]:
    """Write an export into `store`; returns how much of each part was written."""
    state, rollouts, members, history = parse_export(doc)
    legacy_last = _legacy_last(doc)
    await store.replace_state(state)
    if legacy_last:  # moved, not lost: a route that lost it would count its quiet time from its rollout's end
        await store.note_legacy(legacy_last)
    for route, record in rollouts.items():
        await store.put_rollout(route, record)
    added = 0
    for key, ids in members.items():
        added += (await store.change_members(key, ids, [], member_limit)).added
    held = {_identity(e) for e in await store.history(KEEP_HISTORY)}
    new = [e for e in reversed(history) if _identity(e) not in held]
    for event in new:
        await store.push_history({k: v for k, v in event.items() if k != "id"})
    return {"overrides": len(state.percents), "rollouts": len(rollouts), "members": added, "history": len(new)}


def _legacy_last(doc: dict[str, Any]) -> dict[str, int]:
    """`legacy_last` of an export (absent in one written before it existed), or ValueError before any write."""
    raw = doc.get("legacy_last") or {}
    if not isinstance(raw, dict) or not all(isinstance(v, (int, float)) and v >= 0 for v in raw.values()):
        raise ValueError("legacy_last: must map route names to unix seconds")
    return {str(k): int(v) for k, v in raw.items()}


def _identity(event: dict[str, Any]) -> tuple[Any, ...]:
    """An event without the id its store gave it: the same change exported twice is imported once."""
    return tuple(repr(event.get(k)) for k in ("at", "who", "action", "route", "old", "new"))
