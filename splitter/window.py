"""Outcome windows per route and backend: requests, errors and a latency histogram with a stated error.

Latency is kept in a log-linear histogram (DDSketch's mapping): bucket i holds the
durations in (MIN * g^(i-1), MIN * g^i] with g = (1 + a) / (1 - a), a = 1 %, and reads
back as 2 * MIN * g^i / (g + 1). So a quantile is within 1 % of the sample of that rank
(the gates need 2 %), from 0.1 ms to 60 s, in 667 buckets; one log() per request.

The hot path only counts into the current second (`Outcomes.record`). Once a second
the runtime drains those counts (`Windows.flush`): into this process's windows and, with
a fleet store (Redis), added to per-slot keys every replica and worker adds to, so the
guard and the rollout gates judge the sum over the fleet. This module does no I/O: the
store is handed in.

Requests a route's cohort decided are not a random sample of either side: they are never
recorded as "new" or "legacy". The runtime hands their counts in once a second
(`Windows.add_cohorts`), kept and shared the same way under the side `cohort.NAME`, so the
console shows how many each cohort sent, apart from the comparison.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

ALPHA = 0.01
GAMMA = (1 + ALPHA) / (1 - ALPHA)
_INV_LOG_GAMMA = 1 / math.log(GAMMA)
MIN_S = 0.0001
MAX_S = 60.0
MAX_INDEX = math.ceil(math.log(MAX_S / MIN_S) * _INV_LOG_GAMMA)
MAX_SLOTS = 600  # a window keeps at most this many slots: one second each, coarser for long windows
FINAL_AFTER_S = 3.0  # a slot this far in the past has been flushed by every process: cache it
ROLES = ("new", "legacy")  # the two sides a route's windows are kept for, in the order they are drained and shown
SHADOW = "shadow"  # the side a route's shadow comparisons are counted under (`t`: match, mismatch): never compared


def cohort_side(name: str) -> str:
    """The side a cohort's request counts are kept under (never compared with new or legacy)."""
    return f"cohort.{name}"


def bucket_index(seconds: float) -> int:
    if seconds <= MIN_S:
        return 0
    if seconds >= MAX_S:
        return MAX_INDEX
    return math.ceil(math.log(seconds / MIN_S) * _INV_LOG_GAMMA)


def bucket_ms(index: int) -> float:
    """The value a bucket reads back as, in milliseconds."""
    if index == 0:
        return MIN_S * 1000
    return MIN_S * 1000 * 2 * GAMMA**index / (GAMMA + 1)


def quantile_ms(hist: Mapping[int, int], n: int, q: float) -> float | None:
    """The nearest-rank q-quantile (rank ceil(q * n)) of a histogram holding n samples."""
    if n <= 0:
        return None
    rank = max(1, math.ceil(q * n))
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return round(bucket_ms(index), 6)
    return round(bucket_ms(max(hist)), 6) if hist else None


@dataclass(frozen=True)
class Totals:
    requests: int
    errors: int
    p95_ms: float | None

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def view(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": round(self.error_rate, 5),
            "p95_ms": self.p95_ms,
        }


class Counts:
    """A mergeable summary: requests, errors, latency histogram, and the error types (`t`: an answer
    status >= 400 or one a gate lists, as "409", or a proxy failure kind, as "connect") by count."""

    __slots__ = ("e", "h", "n", "t")

    def __init__(self) -> None:
        self.n = 0
        self.e = 0
        self.h: dict[int, int] = {}
        self.t: dict[str, int] = {}

    def add(self, other: Counts) -> None:
        self.n += other.n
        self.e += other.e
        h = self.h
        for i, c in other.h.items():
            h[i] = h.get(i, 0) + c
        if other.t:
            t = self.t
            for k, c in other.t.items():
                t[k] = t.get(k, 0) + c

    def totals(self) -> Totals:
        return Totals(self.n, self.e, quantile_ms(self.h, self.n, 0.95))

    def fields(self) -> dict[str, int]:
        """As the fields of a Redis hash."""
        out = {"n": self.n, "e": self.e}
        out.update({str(i): c for i, c in self.h.items()})
        out.update({f"t:{k}": c for k, c in self.t.items()})
        return out

    @classmethod
    def from_fields(cls, fields: Mapping[str, str]) -> Counts:
        c = cls()
        for k, v in fields.items():
            if k == "n":
                c.n = int(v)
            elif k == "e":
                c.e = int(v)
            elif k.isdigit():
                c.h[int(k)] = int(v)
            elif k.startswith("t:"):
                c.t[k[2:]] = int(v)
        return c


def width_for(span_s: float) -> int:
    return max(1, math.ceil(max(1.0, span_s) / MAX_SLOTS))


def slot_range(now: float, span_s: float, since: float | None, width: int) -> range:
    """The slots (of `width` seconds) a window of `span_s` seconds ending now covers,
    starting no earlier than the first whole slot after `since`."""
    first = math.floor((now - span_s) / width) + 1
    if since is not None:
        first = max(first, math.ceil(since / width))
    return range(first, math.floor(now / width) + 1)


class Window:
    """This process's outcomes of one backend, in slots of `width` seconds."""

    def __init__(self, span_s: float) -> None:
        self.span = max(1.0, span_s)
        self.width = width_for(self.span)
        self.slots: dict[int, Counts] = {}

    def merge(self, sec: int, counts: Counts) -> None:
        slot = sec // self.width
        target = self.slots.get(slot)
        if target is None:
            target = self.slots[slot] = Counts()
            oldest = slot - MAX_SLOTS - 1
            for old in [s for s in self.slots if s < oldest]:
                del self.slots[old]
        target.add(counts)

    def counts(self, slots: range) -> Counts:
        total = Counts()
        for s in slots:
            c = self.slots.get(s)
            if c is not None:
                total.add(c)
        return total


class Outcomes:
    """One route: what the hot path counts, and the windows the guard and the rollout judge."""

    def __init__(self, spans: Iterable[float], name: str = "", touched: set[str] | None = None) -> None:
        self.spans = tuple(sorted({max(1.0, s) for s in spans}))
        self.pending: dict[str, dict[int, Counts]] = {"new": {}, "legacy": {}}
        self.windows: dict[tuple[str, float], Window] = {(b, s): Window(s) for b in ROLES for s in self.spans}
        self.since = 0.0  # judge only what happened after the last change of percent
        # the routes with pending counts, shared by all of a Windows' routes: this one's name goes in
        # whenever a second's first count does, so a flush visits only routes that had requests
        self.name = name
        self.touched: set[str] = touched if touched is not None else set()
        self.typed: frozenset[int] = frozenset()  # statuses below 400 counted as error types (no_new_errors_statuses)
        self.examples: dict[tuple[str, str], str] = {}  # (role, error type) -> the last path that had it (this process)

    def record(
        self, backend: str, now: float, error: bool, seconds: float, kind: str | None = None, path: str = ""
    ) -> None:
        role = "new" if backend == "new" else "legacy"
        pending = self.pending[role]
        sec = int(now)
        c = pending.get(sec)
        if c is None:
            c = pending[sec] = Counts()
            self.touched.add(self.name)
        c.n += 1
        if error:
            c.e += 1
        i = bucket_index(seconds)
        c.h[i] = c.h.get(i, 0) + 1
        if kind is not None:  # the error paths only: one dict increment, and the example kept
            c.t[kind] = c.t.get(kind, 0) + 1
            self.examples[(role, kind)] = path

    def count_cohort(self, name: str, sec: int, requests: int) -> None:
        """`requests` a cohort decided, in second `sec` (requests only: no errors, no latency)."""
        pending = self.pending.setdefault(cohort_side(name), {})
        c = pending.get(sec)
        if c is None:
            c = pending[sec] = Counts()
            self.touched.add(self.name)
        c.n += requests

    def count_shadow(self, result: str, sec: int) -> None:
        """One shadow comparison's result (match or mismatch), in second `sec`, off the request path."""
        pending = self.pending.setdefault(SHADOW, {})
        c = pending.get(sec)
        if c is None:
            c = pending[sec] = Counts()
            self.touched.add(self.name)
        c.n += 1
        c.t[result] = c.t.get(result, 0) + 1

    def drain(self) -> list[tuple[str, int, Counts]]:
        """Take what was counted since the last drain; merged into the local windows here."""
        out = []
        for backend in list(self.pending):  # new, legacy, then the cohorts' sides
            pending, self.pending[backend] = self.pending[backend], {}
            for sec, counts in pending.items():
                for span in self.spans:
                    window = self.windows.get((backend, span))
                    if window is None:
                        window = self.windows[(backend, span)] = Window(span)
                    window.merge(sec, counts)
                out.append((backend, sec, counts))
        return out

    def window_for(self, span_s: float) -> float:
        """The kept span that covers `span_s` most closely."""
        return next((s for s in self.spans if s >= span_s), self.spans[-1])


class FleetStore(Protocol):
    async def add_outcomes(self, batch: list[tuple[str, dict[str, int], int]]) -> None: ...

    async def read_outcomes(self, keys: list[str]) -> list[dict[str, str]]: ...


class Windows:
    """Every judged route's outcomes; judged in this process, or over the fleet through a store."""

    def __init__(
        self,
        routes: Mapping[str, Iterable[float]],
        store: FleetStore | None = None,
        prefix: str = "splitter",
        old: Windows | None = None,
        typed: Mapping[str, frozenset[int]] | None = None,
    ) -> None:
        self.store = store
        self.prefix = prefix
        self.scope = "fleet" if store is not None else "process"
        self.routes: dict[str, Outcomes] = {}
        self._touched: set[str] = set()  # the routes with counts since the last flush (Outcomes.touched)
        for name, spans in routes.items():
            keep = old.routes.get(name) if old is not None else None
            fresh = Outcomes(spans, name, self._touched)
            if keep is not None and keep.spans == fresh.spans:
                keep.touched = self._touched  # its pending counts, if any, are flushed from here on
                self._touched.add(name)
                fresh = keep
            fresh.typed = (typed or {}).get(name, frozenset())
            self.routes[name] = fresh
        self._longest = max((s for o in self.routes.values() for s in o.spans), default=0.0)
        self._final: dict[str, Counts] = {}  # fleet slots every process has flushed
        # route -> the last second legacy served it here, since the runtime last took it (ready to retire)
        self.legacy_seen: dict[str, int] = dict(old.legacy_seen) if old is not None else {}

    def get(self, route: str) -> Outcomes | None:
        return self.routes.get(route)

    def reset(self, route: str, now: float) -> None:
        """A new population (the percent changed, the guard tripped): judge only what comes next."""
        o = self.routes.get(route)
        if o is not None:
            o.since = now

    def _key(self, route: str, backend: str, width: int, slot: int) -> str:
        return f"{self.prefix}:win:{route}:{backend}:{width}:{slot}"

    async def flush(self, now: float) -> None:
        """Drain the counts of every route that had requests since the last flush into the local windows
        and, with a store, into the fleet's keys."""
        batch: list[tuple[str, dict[str, int], int]] = []
        longest = self._longest
        touched = list(self._touched)  # only these have counts: 10,000 quiet routes cost nothing here
        self._touched.clear()
        for name in touched:
            o = self.routes[name]
            drained = o.drain()
            last = max((sec for backend, sec, c in drained if backend == "legacy" and c.n), default=None)
            if last is not None:
                self.legacy_seen[name] = max(last, self.legacy_seen.get(name, last))
            if self.store is None:
                continue  # drain() merged them into this process's windows: that is all there is
            widths = {width_for(span) for span in o.spans}  # spans of one width share their keys: add once
            for backend, sec, counts in drained:
                fields = counts.fields()
                for width in widths:
                    slot = sec // width
                    batch.append(
                        (self._key(name, backend, width, slot), fields, int((slot + 1) * width + longest + 60))
                    )
        if batch and self.store is not None:
            await self.store.add_outcomes(batch)

    def take_legacy_seen(self) -> dict[str, int]:
        """The routes legacy served since the last take, with the last second it did."""
        seen, self.legacy_seen = self.legacy_seen, {}
        return seen

    async def totals(self, route: str, backend: str, now: float, span_s: float, since: float | None = None) -> Totals:
        return (await self.counts(route, backend, now, span_s, since)).totals()

    async def counts(self, route: str, backend: str, now: float, span_s: float, since: float | None = None) -> Counts:
        """Everything one backend of a route did in the window (histogram included), for the judge."""
        o = self.routes[route]
        span = o.window_for(span_s)
        width = width_for(span)
        start = max(since or 0.0, o.since)
        return await self._sum(route, backend, span, slot_range(now, span_s, start or None, width), now)

    def width(self, route: str, span_s: float) -> int:
        """The slot width of the kept window that covers `span_s` (what between() can split at)."""
        return width_for(self.routes[route].window_for(span_s))

    async def between(
        self, route: str, backend: str, span_s: float, start: float, end: float | None, now: float
    ) -> Counts:
        """One backend's outcomes in the whole slots of the `span_s` window from `start` up to `end`
        (seconds, on a slot boundary; None: up to now, the current slot included), as far back as the
        window keeps them: what a long rollout step folds into its running total before the window
        forgets it, and what it has gathered since."""
        o = self.routes[route]
        span = o.window_for(span_s)
        width = width_for(span)
        first = max(math.ceil(max(start, o.since) / width), math.floor(now / width) - MAX_SLOTS)
        last = math.floor(now / width) + 1 if end is None else math.floor(end / width)
        return await self._sum(route, backend, span, range(first, last), now)

    async def pair(self, route: str, now: float, span_s: float, since: float | None = None) -> tuple[Counts, Counts]:
        """New's and legacy's outcomes over the same window, (new, legacy): what every judgement
        of a route compares (guard, rollout, /admin/routes)."""
        new = await self.counts(route, "new", now, span_s, since)
        return new, await self.counts(route, "legacy", now, span_s, since)

    async def _sum(self, route: str, backend: str, span: float, slots: range, now: float) -> Counts:
        o = self.routes[route]
        width = width_for(span)
        if self.store is None:
            o.drain()  # this process is the whole picture: bring its windows up to this moment
            window = o.windows.get((backend, span))  # a cohort that sent nothing yet has none
            return window.counts(slots) if window is not None else Counts()
        total = Counts()
        missing = []
        for s in slots:
            key = self._key(route, backend, width, s)
            cached = self._final.get(key)
            if cached is not None:
                total.add(cached)
            else:
                missing.append((key, s))
        if missing:
            rows = await self.store.read_outcomes([k for k, _ in missing])
            final_before = math.floor((now - FINAL_AFTER_S) / width)
            for (key, s), row in zip(missing, rows, strict=True):
                counts = Counts.from_fields(row)
                total.add(counts)
                if s < final_before:
                    self._final[key] = counts
            if len(self._final) > 20_000:
                self._final.clear()  # bounded: the next reads fetch again
        return total

    async def series(self, route: str, backend: str, now: float, span_s: float, step_s: int) -> list[dict[str, Any]]:
        """The last `span_s` seconds in steps of `step_s`, oldest first: requests/s, error rate, p95."""
        o = self.routes[route]
        span = o.window_for(span_s)
        width = width_for(span)
        step = max(width, step_s - step_s % width)
        end = (math.floor(now / step) + 1) * step  # the step now is in, partly filled
        out = []
        for start in range(int(end - span_s), int(end), step):
            t = (await self._sum(route, backend, span, range(start // width, (start + step) // width), now)).totals()
            seconds = min(step, max(1.0, now - start))
            out.append(
                {
                    "t": start,
                    "rps": round(t.requests / seconds, 3),
                    "error_rate": round(t.error_rate, 4),
                    "p95_ms": t.p95_ms,
                }
            )
        return out

    def count_shadow(self, route: str, result: str, now: float) -> None:
        """A shadow comparison of `route` finished (match or mismatch): kept and shared like the outcomes,
        for the rollout's max_mismatch_rate."""
        o = self.routes.get(route)
        if o is not None:
            o.count_shadow(result, int(now))

    def add_cohorts(self, counts: Mapping[tuple[str, str], int], now: float) -> None:
        """Requests cohorts decided since the last call, by (route, cohort): counted in second `now`."""
        for (route, cohort), n in counts.items():
            o = self.routes.get(route)
            if o is not None:
                o.count_cohort(cohort, int(now), n)

    async def cohort_requests(self, route: str, cohorts: Iterable[str], now: float, span_s: float) -> dict[str, int]:
        """How many requests each cohort sent in the last `span_s` seconds (the percent's changes
        do not restart it: a cohort's users are the same whatever the percent)."""
        o = self.routes[route]
        span = o.window_for(span_s)
        slots = slot_range(now, span_s, None, width_for(span))
        return {c: (await self._sum(route, cohort_side(c), span, slots, now)).n for c in cohorts}

    async def view(self, route: str, now: float, span_s: float, since: float | None = None) -> dict[str, Any]:
        """What /admin/routes shows: the window the judges read, both sides."""
        out: dict[str, Any] = {"scope": self.scope, "span_s": span_s}
        for backend in ROLES:
            out[backend] = (await self.totals(route, backend, now, span_s, since)).view()
        return out

