"""The store of one process: nothing shared, nothing kept across a restart. For unit tests and
`state: {path: ":memory:"}`. With several workers a write would reach only the worker that took
it, so writes are refused (409)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from . import KEEP_HISTORY, KEEP_MISMATCHES, CohortKey, Conflict, MemberChange, State, Store, TooMany, member_change


class MemoryStore(Store):
    def __init__(self, workers: int = 1) -> None:
        super().__init__()
        self.workers = workers
        self._rollouts: dict[str, dict[str, Any]] = {}
        self._mismatches: dict[str, deque[dict[str, Any]]] = {}
        self._history: deque[dict[str, Any]] = deque(maxlen=KEEP_HISTORY)
        self._legacy_last: dict[str, float] = {}

    def _check_writable(self) -> None:
        if self.workers > 1:
            raise Conflict(
                f'runtime changes need a shared store with --workers {self.workers}: state.path is ":memory:", '
                "so each worker keeps its own; remove it (the embedded file is the default) or set redis.url"
            )

    async def _change(self, make: Callable[[State], State], event: dict[str, Any]) -> None:
        self._check_writable()
        self._apply(make(self.state))

    async def change_members(
        self, key: CohortKey, add: list[str], remove: list[str], limit: int
    ) -> MemberChange:
        """Add and remove runtime members of one cohort, all or nothing: TooMany when more than
        `limit` would remain. `add` and `remove` hold distinct ids, none in both."""
        self._check_writable()
        old = self.members.get(key, frozenset())
        added = [u for u in add if u.encode() not in old]
        removed = [u for u in remove if u.encode() in old]
        after = len(old) + len(added) - len(removed)
        if after > limit:
            raise TooMany(len(old), after, limit)
        new = (old - {u.encode() for u in removed}) | {u.encode() for u in added}
        self._apply_members({**self.members, key: new})
        return member_change(len(old), after, added, removed)

    # --- rollout controller state: one record per route, and who drives it ---
    async def get_rollout(self, route: str) -> dict[str, Any] | None:
        return self._rollouts.get(route)

    async def put_rollout(self, route: str, record: dict[str, Any]) -> None:
        self._rollouts[route] = record

    async def lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Whether `owner` may drive `name` now; one process always may."""
        return self.workers == 1

    async def note_legacy(self, seen: Mapping[str, int]) -> None:
        for route, sec in seen.items():
            self._legacy_last[route] = max(self._legacy_last.get(route, 0.0), float(sec))

    async def legacy_last(self) -> dict[str, float]:
        return dict(self._legacy_last)

    async def claim(self, key: str) -> bool:
        """Whether this process is the one to act on something every replica sees; alone, it is."""
        return True

    # --- recent shadow mismatches, newest first ---
    async def push_mismatch(self, route: str, entry: dict[str, Any]) -> None:
        self._mismatches.setdefault(route, deque(maxlen=KEEP_MISMATCHES)).appendleft(entry)

    async def mismatches(self, route: str) -> list[dict[str, Any]]:
        return list(self._mismatches.get(route, ()))

    # --- change history, newest first ---
    async def push_history(self, event: dict[str, Any]) -> None:
        self._history.appendleft(event)

    async def history(self, limit: int, route: str | None = None) -> list[dict[str, Any]]:
        out = []
        for e in self._history:
            if route is None or e.get("route") == route:
                out.append(e)
                if len(out) >= limit:
                    break
        return out

    async def add_outcomes(self, batch: list[tuple[str, dict[str, int], int]]) -> None:
        """Never asked: this store is not shared, the windows judge this process alone."""

    async def read_outcomes(self, keys: list[str]) -> list[dict[str, str]]:
        return [{} for _ in keys]
