"""Sliding windows of request outcomes per route and backend, in memory.

The guard and the rollout gates judge "new" against "legacy" from these,
without Prometheus. One slot per second holds a count, an error count and a
coarse latency histogram, so p95 is read in O(buckets).
"""

from __future__ import annotations

import bisect
from collections import deque
from dataclasses import dataclass

# upper bounds in milliseconds; the last bucket is open
BOUNDS_MS = (1, 2, 3, 5, 7, 10, 15, 20, 30, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000, 30000)


@dataclass(frozen=True)
class Totals:
    requests: int
    errors: int
    p95_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0


MAX_SLOTS = 600


class Window:
    def __init__(self, span_s: float) -> None:
        self.span = max(1.0, span_s)
        # one-second slots, coarser for long windows so memory stays bounded
        self.width = max(1, int(self.span / MAX_SLOTS))
        self.slots: deque[list[int]] = deque()  # [slot number, requests, errors, *bucket counts]

    def record(self, now: float, error: bool, seconds: float) -> None:
        sec = int(now // self.width)
        slots = self.slots
        if not slots or slots[-1][0] != sec:
            slots.append([sec, 0, 0] + [0] * (len(BOUNDS_MS) + 1))
            oldest = sec - int(self.span // self.width) - 1
            while slots[0][0] <= oldest:
                slots.popleft()
        slot = slots[-1]
        slot[1] += 1
        if error:
            slot[2] += 1
        slot[3 + bisect.bisect_left(BOUNDS_MS, seconds * 1000)] += 1

    def totals(self, now: float, since: float | None = None, span_s: float | None = None) -> Totals:
        span = span_s if span_s is not None else self.span
        first = int((now - span) // self.width) + 1
        if since is not None:
            first = max(first, int(since // self.width))
        n = errors = 0
        counts = [0] * (len(BOUNDS_MS) + 1)
        for slot in self.slots:
            if slot[0] >= first:
                n += slot[1]
                errors += slot[2]
                for i, c in enumerate(slot[3:]):
                    counts[i] += c
        return Totals(n, errors, _p95(counts, n))

    def clear(self) -> None:
        self.slots.clear()


def _p95(counts: list[int], n: int) -> float | None:
    if n == 0:
        return None
    need = 0.95 * n
    seen = 0
    for i, c in enumerate(counts):
        seen += c
        if seen >= need:
            return float(BOUNDS_MS[i]) if i < len(BOUNDS_MS) else float(BOUNDS_MS[-1]) * 2
    return None


class RouteOutcomes:
    """Both sides of one route."""

    def __init__(self, span_s: float) -> None:
        self.new = Window(span_s)
        self.legacy = Window(span_s)

    def record(self, backend: str, now: float, error: bool, seconds: float) -> None:
        (self.new if backend == "new" else self.legacy).record(now, error, seconds)

    def clear(self) -> None:
        self.new.clear()
        self.legacy.clear()
