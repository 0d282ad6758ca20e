"""The runtime state store: overrides, kill switch, rollout records, leases, claims, history,
shadow mismatches, runtime cohort members and the fleet's outcome windows.

One interface (`Store`), three implementations chosen once at start (`open_store`):
memory.py (one process, unit tests, `state: {path: ":memory:"}`), sqlite.py (the default
without Redis: one file next to routes.yaml, shared by the workers of one host, kept across
restarts) and redis.py (Redis or Sentinel, shared by a fleet). The code above never asks
which one it has: it reads `store.state` and `store.members` (immutable, replaced whole on
every change, so the hot path never waits on the store) and awaits the methods below.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from ..config import Percent

KEEP_MISMATCHES = 100
KEEP_HISTORY = 10_000
CLAIM_S = 300
MEMBER_SAMPLE = 20  # ids a change reports by name (history, notifications); the rest are counted
STATE_FILE = "splitter-state.db"


class Unavailable(Exception):
    """A write cannot reach every replica right now (503)."""


class Conflict(Exception):
    """A write that would only reach one worker (409)."""


class TooMany(Exception):
    """A change of a cohort's runtime members that would leave more than the limit (400); nothing changed."""

    def __init__(self, before: int, after: int, limit: int) -> None:
        super().__init__(f"{after} runtime members, more than {limit}")
        self.before, self.after, self.limit = before, after, limit


CohortKey = tuple[str, str]  # (route, cohort)
Members = Mapping[CohortKey, frozenset[bytes]]


class MemberChange(NamedTuple):
    """What a change of runtime members did: counts before and after, how many ids were added and
    removed, and the first MEMBER_SAMPLE of each by name."""

    before: int
    after: int
    added: int
    removed: int
    added_ids: tuple[str, ...]
    removed_ids: tuple[str, ...]


@dataclass(frozen=True)
class State:
    percents: Mapping[str, Percent] = field(default_factory=dict)
    sources: Mapping[str, str] = field(default_factory=dict)
    kill: bool = False


Listener = Callable[[State], None]


class Store(ABC):
    """What every caller uses. `shared`: the state reaches other processes (workers or replicas),
    so the outcome windows are judged over all of them (scope "fleet")."""

    shared = False
    name = "memory"  # what /healthz and `splitter status` call it

    def __init__(self) -> None:
        self.state = State()
        self.up = True
        self.ever_connected = True
        self.members: Members = {}  # runtime members of `users` cohorts; unchanged sets are reused
        self._listeners: list[Listener] = []
        self._member_listeners: list[Callable[[Members], None]] = []

    def subscribe(self, listener: Listener) -> None:
        self._listeners.append(listener)

    def subscribe_members(self, listener: Callable[[Members], None]) -> None:
        self._member_listeners.append(listener)

    def _apply(self, state: State) -> None:
        self.state = state
        for listener in self._listeners:
            listener(state)

    def _apply_members(self, members: Members) -> None:
        self.members = members
        for listener in self._member_listeners:
            listener(members)

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    @abstractmethod
    async def _change(self, make: Callable[[State], State], event: dict[str, Any]) -> None:
        """Every write of the overrides: the new state is `make(current)`; the store decides where current lives."""
        ...

    async def set_percent(self, route: str, percent: Percent, source: str = "override") -> None:
        await self._change(
            lambda s: State({**s.percents, route: percent}, {**s.sources, route: source}, s.kill),
            {"type": "set", "route": route, "percent": percent},
        )

    async def set_many(self, percents: Mapping[str, Percent], source: str = "override") -> None:
        await self._change(
            lambda s: State({**s.percents, **percents}, {**s.sources, **dict.fromkeys(percents, source)}, s.kill),
            {"type": "set_many"},
        )

    async def clear(self, route: str) -> None:
        await self._change(
            lambda s: State(
                {k: v for k, v in s.percents.items() if k != route},
                {k: v for k, v in s.sources.items() if k != route},
                s.kill,
            ),
            {"type": "clear", "route": route},
        )

    async def set_kill(self, on: bool) -> None:
        await self._change(lambda s: State(s.percents, s.sources, on), {"type": "kill", "on": on})

    async def replace_state(self, state: State) -> None:
        """Every override and the kill switch at once (`splitter state import`)."""
        await self._change(lambda s: state, {"type": "import"})

    # The rest each implementation provides (see memory.py for the plain meaning of each).
    @abstractmethod
    async def change_members(self, key: CohortKey, add: list[str], remove: list[str], limit: int) -> MemberChange:
        ...

    @abstractmethod
    async def get_rollout(self, route: str) -> dict[str, Any] | None:
        ...

    @abstractmethod
    async def put_rollout(self, route: str, record: dict[str, Any]) -> None:
        ...

    @abstractmethod
    async def lease(self, name: str, owner: str, ttl_s: float) -> bool:
        ...

    @abstractmethod
    async def claim(self, key: str) -> bool:
        ...

    @abstractmethod
    async def push_mismatch(self, route: str, entry: dict[str, Any]) -> None:
        ...

    @abstractmethod
    async def mismatches(self, route: str) -> list[dict[str, Any]]:
        ...

    @abstractmethod
    async def push_history(self, event: dict[str, Any]) -> None:
        ...

    @abstractmethod
    async def history(self, limit: int, route: str | None = None) -> list[dict[str, Any]]:
        ...

    @abstractmethod
    async def add_outcomes(self, batch: list[tuple[str, dict[str, int], int]]) -> None:
        """Add counts to the shared window keys (only a `shared` store is asked)."""
        ...

    @abstractmethod
    async def read_outcomes(self, keys: list[str]) -> list[dict[str, str]]:
        ...

    @abstractmethod
    async def note_legacy(self, seen: Mapping[str, int]) -> None:
        """Each route's last second legacy served one of its requests: kept as the latest of all writers."""
        ...

    @abstractmethod
    async def legacy_last(self) -> dict[str, float]:
        """route -> the last second legacy served it (fleet-wide, kept across restarts); absent: not seen."""
        ...


def member_change(before: int, after: int, added: list[str], removed: list[str]) -> MemberChange:
    sample = MEMBER_SAMPLE
    return MemberChange(before, after, len(added), len(removed), tuple(added[:sample]), tuple(removed[:sample]))


def state_path(config_path: str, configured: str | None) -> str:
    """The embedded store's file: `state.path` (relative to routes.yaml's directory), by default
    splitter-state.db next to routes.yaml; ":memory:" keeps the state in the process."""
    if configured == ":memory:":
        return configured
    return os.path.join(os.path.dirname(os.path.abspath(config_path)), configured or STATE_FILE)


def open_store(path: str, workers: int) -> Store:
    """The store without Redis, chosen once at start (runtime.py builds the Redis one itself)."""
    if path == ":memory:":
        from .memory import MemoryStore

        return MemoryStore(workers)
    from .sqlite import SqliteStore

    return SqliteStore(path, workers)
