"""The histogram and windows the guard and the rollout gates judge: fast, in-process."""

import asyncio
import math
import random

import pytest

from splitter.window import MAX_S, MIN_S, Counts, Outcomes, Windows, bucket_index, quantile_ms, slot_range


def exact_p95_ms(samples: list[float]) -> float:
    s = sorted(samples)
    return s[math.ceil(0.95 * len(s)) - 1] * 1000


DISTRIBUTIONS = {
    "uniform 1-200 ms": lambda r: r.uniform(0.001, 0.2),
    "lognormal around 50 ms": lambda r: r.lognormvariate(math.log(0.05), 0.6),
    "exponential mean 20 ms": lambda r: r.expovariate(50),
    "bimodal 2 ms / 900 ms": lambda r: r.gauss(0.002, 0.0003) if r.random() < 0.9 else r.gauss(0.9, 0.05),
    "pareto tail": lambda r: 0.0005 * r.paretovariate(1.5),
    "sub-millisecond": lambda r: r.uniform(0.0001, 0.0009),
    "seconds": lambda r: r.uniform(1, 50),
}


@pytest.mark.parametrize("name", DISTRIBUTIONS)
def test_p95_is_within_2_percent_of_the_exact_one(name):
    rng = random.Random(name)
    samples = [min(MAX_S, max(MIN_S, DISTRIBUTIONS[name](rng))) for _ in range(10_000)]
    c = Counts()
    for x in samples:
        i = bucket_index(x)
        c.h[i] = c.h.get(i, 0) + 1
        c.n += 1
    got, want = c.totals().p95_ms, exact_p95_ms(samples)
    assert got is not None and abs(got - want) / want <= 0.02, (name, got, want)


def test_every_value_in_range_reads_back_within_1_percent():
    x = MIN_S
    while x < MAX_S:
        got = quantile_ms({bucket_index(x): 1}, 1, 0.95)
        assert got is not None and abs(got - x * 1000) / (x * 1000) <= 0.0101, x
        x *= 1.003


def test_99_vs_101_ms_reads_as_a_2_percent_difference_not_50():
    legacy, new = Counts(), Counts()
    for c, ms in ((legacy, 99), (new, 101)):
        for _ in range(100):
            i = bucket_index(ms / 1000)
            c.h[i] = c.h.get(i, 0) + 1
            c.n += 1
    ratio = new.totals().p95_ms / legacy.totals().p95_ms  # type: ignore[operator]
    assert 1.0 <= ratio < 1.05


def test_counts_survive_the_redis_hash_round_trip():
    c = Counts()
    for x in (0.001, 0.002, 0.002, 3.0):
        i = bucket_index(x)
        c.h[i] = c.h.get(i, 0) + 1
        c.n += 1
    c.e = 1
    back = Counts.from_fields({k: str(v) for k, v in c.fields().items()})
    assert (back.n, back.e, back.h) == (c.n, c.e, c.h)


def test_slot_ranges_cover_the_window_and_respect_since():
    assert list(slot_range(100.5, 10, None, 1)) == list(range(91, 101))
    assert list(slot_range(100.5, 10, 97.2, 1)) == [98, 99, 100]
    assert list(slot_range(1000, 600, None, 2)) == list(range(201, 501))


class FakeStore:
    """Stands in for Redis' HINCRBY / HGETALL, to test the fleet arithmetic in-process."""

    def __init__(self) -> None:
        self.data: dict[str, dict[str, int]] = {}
        self.reads = 0

    async def add_outcomes(self, batch):
        for key, fields, _expire in batch:
            h = self.data.setdefault(key, {})
            for f, n in fields.items():
                h[f] = h.get(f, 0) + n

    async def read_outcomes(self, keys):
        self.reads += len(keys)
        return [{k: str(v) for k, v in self.data.get(key, {}).items()} for key in keys]


def test_the_fleet_window_is_the_sum_of_every_process():
    store = FakeStore()
    procs = [Windows({"auth": [10.0]}, store, "p") for _ in range(4)]
    now = 1000.0
    for k, w in enumerate(procs):
        for j in range(12):  # 12 new requests per process, 3 failing: no process alone sees 40
            w.get("auth").record("new", now - 5 + j * 0.1, j % 4 == 0, 0.01 * (k + 1))  # type: ignore[union-attr]
    for w in procs:
        asyncio.run(w.flush(now))
    total = asyncio.run(procs[0].totals("auth", "new", now, 10.0))
    assert (total.requests, total.errors) == (48, 12)
    local = asyncio.run(Windows({"auth": [10.0]}).totals("auth", "new", now, 10.0))
    assert local.requests == 0


def test_windows_of_the_same_width_count_each_request_once_in_the_fleet():
    store = FakeStore()
    w = Windows({"auth": [60.0, 300.0]}, store, "p")  # a guard's 60 s and the console's 300 s: both 1 s slots
    for j in range(10):
        w.get("auth").record("new", 1000.0 + j * 0.1, False, 0.01)  # type: ignore[union-attr]
    asyncio.run(w.flush(1001.5))
    assert asyncio.run(w.totals("auth", "new", 1001.5, 60.0)).requests == 10
    assert asyncio.run(w.totals("auth", "new", 1001.5, 300.0)).requests == 10


def test_final_slots_are_read_from_redis_once():
    store = FakeStore()
    w = Windows({"auth": [60.0]}, store, "p")
    asyncio.run(w.totals("auth", "new", 1000.0, 60.0))
    first = store.reads
    asyncio.run(w.totals("auth", "new", 1001.0, 60.0))
    assert store.reads - first <= 5, "only the slots that may still change (the last 3 s) are read again"


def test_a_reset_judges_only_what_comes_after():
    w = Windows({"auth": [60.0]})
    o = w.get("auth")
    assert isinstance(o, Outcomes)
    for j in range(50):
        o.record("new", 1000.0 + j * 0.1, True, 0.01)
    w.reset("auth", 1006.0)
    o.record("new", 1007.5, False, 0.01)
    t = asyncio.run(w.totals("auth", "new", 1008.0, 60.0))
    assert (t.requests, t.errors) == (1, 0)


def test_cohort_counts_are_kept_apart_from_both_sides_and_summed_over_the_fleet():
    store = FakeStore()
    procs = [Windows({"auth": [60.0, 300.0]}, store, "p") for _ in range(2)]
    for w, n in zip(procs, (30, 10), strict=True):
        w.add_cohorts({("auth", "staff"): n, ("gone", "staff"): 5}, 1000.2)  # a route no longer configured: dropped
        asyncio.run(w.flush(1000.5))
    fleet = asyncio.run(procs[1].cohort_requests("auth", ["staff", "beta"], 1001.0, 60.0))
    assert fleet == {"staff": 40, "beta": 0}
    assert asyncio.run(procs[1].totals("auth", "new", 1001.0, 60.0)).requests == 0, "not a side of the comparison"
    assert asyncio.run(procs[1].cohort_requests("auth", ["staff"], 1070.0, 60.0)) == {"staff": 0}, "out of the span"
    local = Windows({"auth": [60.0]})
    local.add_cohorts({("auth", "staff"): 3}, 1000.2)
    assert asyncio.run(local.cohort_requests("auth", ["staff", "beta"], 1000.4, 60.0)) == {"staff": 3, "beta": 0}
    local.reset("auth", 1000.3)  # a new percent restarts the comparison, not a cohort's count
    assert asyncio.run(local.cohort_requests("auth", ["staff"], 1000.4, 60.0)) == {"staff": 3}


def test_a_flush_visits_only_the_routes_that_counted_something(monkeypatch):
    drained: list[str] = []
    real = Outcomes.drain

    def counting(self):
        drained.append(self.name)
        return real(self)

    monkeypatch.setattr(Outcomes, "drain", counting)
    store = FakeStore()
    w = Windows({f"r{i}": [10.0] for i in range(1000)}, store, "p")
    w.get("r7").record("new", 1000.1, False, 0.01)  # type: ignore[union-attr]
    w.get("r9").record("legacy", 1000.1, True, 0.01)  # type: ignore[union-attr]
    asyncio.run(w.flush(1000.2))
    assert sorted(drained) == ["r7", "r9"], "the 998 routes without a request are not visited"
    drained.clear()
    asyncio.run(w.flush(1001.2))
    assert drained == []
    w.get("r7").record("new", 1000.3, False, 0.01)  # type: ignore[union-attr]  # the same second, after a flush
    asyncio.run(w.flush(1001.5))
    assert drained == ["r7"]
    assert asyncio.run(w.totals("r7", "new", 1002.0, 10.0)).requests == 2
    assert asyncio.run(w.totals("r9", "legacy", 1002.0, 10.0)).errors == 1


def test_counts_pending_at_a_reload_reach_the_fleet_through_the_new_windows():
    store = FakeStore()
    old = Windows({"auth": [10.0]}, store, "p")
    old.get("auth").record("new", 1000.1, False, 0.01)  # type: ignore[union-attr]
    new = Windows({"auth": [10.0], "upload": [10.0]}, store, "p", old=old)
    assert new.get("auth") is old.get("auth"), "the route's windows are kept"
    asyncio.run(new.flush(1000.5))
    assert asyncio.run(new.totals("auth", "new", 1000.6, 10.0)).requests == 1, "the count made before the reload"
    new.get("auth").record("new", 1000.7, False, 0.01)  # type: ignore[union-attr]
    asyncio.run(new.flush(1000.9))
    assert asyncio.run(new.totals("auth", "new", 1001.0, 10.0)).requests == 2


def test_between_reads_whole_slots_up_to_the_end_and_the_window_after_it_adds_up_to_the_whole():
    """A long rollout step folds [start, end) into its running total, then reads the window from end:
    together every request once, fleet-wide and in one process."""
    for store in (FakeStore(), None):
        w = Windows({"auth": [4.0]}, store, "p")
        for j in range(100):  # 10 s, 10 a second
            w.get("auth").record("new", 1000.0 + j * 0.1, j % 10 == 0, 0.01)  # type: ignore[union-attr]
        asyncio.run(w.flush(1010.0))
        folded = asyncio.run(w.between("auth", "new", 4.0, 1000.0, 1007.0, 1010.5))
        assert (folded.n, folded.e) == (70, 7)
        rest = asyncio.run(w.counts("auth", "new", 1010.5, 4.0, since=1007.0))
        assert folded.n + rest.n == 100
