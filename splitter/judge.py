"""The canary judge: does the evidence show a gate holds, show it breached, or not yet either?

With `confidence: c` on a guard or on rollout gates, each gate is judged from the
outcome windows (window.Counts: requests, errors, a log-linear latency histogram)
with statistics that hold at level c, computed with scipy's special functions:

  max_error_rate     Clopper-Pearson (exact) one-sided bounds for new's error rate:
                     fail when the lower bound is above the threshold, pass when the
                     upper bound is at or below it.
  max_error_increase new minus legacy error rate, Newcombe's interval from Wilson
                     bounds: fail when the difference is shown above the margin.
  max_p95_ms         a distribution-free interval for new's p95 from binomial order
                     statistics (the ranks whose values bracket the p95 at level c),
                     read off the histogram.
  max_p95_ratio      the ratio interval from both p95 intervals (each at sqrt(c)),
                     plus a Mann-Whitney U test on the binned data (midranks per bin,
                     tie-corrected variance) for "new is slower": fail only when both
                     show it and new's p95 is shown more than p95_tolerance_ms above
                     legacy's (rollout gates; practical significance), pass when the
                     ratio's upper bound is within the threshold or the difference's
                     is within the tolerance.

The verdict of a set of gates is fail if any gate fails, pass if all pass, else wait.
Judging often on growing data is many looks at it: `alpha` lets the caller spend its
error budget across looks (rollout: look k gets alpha * 6 / (pi^2 k^2), which sums to
alpha). Nothing here does I/O; it runs off the request path, at most once a second.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .window import Counts, bucket_ms

PASS, FAIL, WAIT = "pass", "fail", "wait"


class _Special:
    """scipy.special, imported on first use: only routes with `confidence` pay its ~30 MiB."""

    def __getattr__(self, name: str) -> Any:
        from scipy import special as module

        globals()["special"] = module
        return getattr(module, name)


special: Any = _Special()


@dataclass(frozen=True)
class Check:
    gate: str
    threshold: float
    estimate: float | None
    low: float | None
    high: float | None
    verdict: str
    p_value: float | None = None
    detail: str | None = None  # what a count gate saw (no_new_errors: the type, both counts, an example path)

    def view(self) -> dict[str, Any]:
        r = _round
        out = {
            "gate": self.gate,
            "threshold": self.threshold,
            "estimate": r(self.estimate),
            "interval": [r(self.low), r(self.high)],
            "p_value": r(self.p_value),
            "verdict": self.verdict,
        }
        if self.detail is not None:
            out["detail"] = self.detail
        return out


def _round(x: float | None) -> float | None:
    """Six digits; None for no value and for an open interval end (infinity): JSON has no Infinity."""
    return round(x, 6) if x is not None and math.isfinite(x) else None


def spend(alpha: float, look: int) -> float:
    """The share of the error budget for look k (1, 2, ...): sums to alpha over all looks."""
    return alpha * 6 / (math.pi**2 * max(1, look) ** 2)


def look(n: int, floor: int) -> int:
    """The checkpoint n requests have reached: 0 below `floor`, then 1, 2, 3 ... at floor x 1, 2, 4 ..."""
    floor = max(1, floor)
    return 0 if n < floor else 1 + int(math.log2(n / floor))


# --- error rates --------------------------------------------------------------------------
def proportion_bounds(k: int, n: int, alpha: float) -> tuple[float, float]:
    """One-sided Clopper-Pearson bounds, each at level 1 - alpha."""
    if n <= 0:
        return 0.0, 1.0
    low = 0.0 if k == 0 else float(special.betaincinv(k, n - k + 1, alpha))  # Beta(k, n-k+1) quantile
    high = 1.0 if k == n else float(special.betaincinv(k + 1, n - k, 1 - alpha))
    return low, high


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 1.0
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def error_rate_check(new: Counts, threshold: float, alpha: float) -> Check:
    if new.n == 0:
        return Check("max_error_rate", threshold, None, 0.0, 1.0, WAIT)
    low, high = proportion_bounds(new.e, new.n, alpha)
    verdict = FAIL if low > threshold else PASS if high <= threshold else WAIT
    return Check("max_error_rate", threshold, new.e / new.n, low, high, verdict)


def error_increase_check(new: Counts, legacy: Counts, margin: float, alpha: float) -> Check:
    """new - legacy error rate against an allowed margin (Newcombe's hybrid score interval)."""
    if new.n == 0 or legacy.n == 0:
        return Check("max_error_increase", margin, None, None, None, WAIT)
    z = float(special.ndtri(1 - alpha))
    p1, p2 = new.e / new.n, legacy.e / legacy.n
    l1, u1 = _wilson(new.e, new.n, z)
    l2, u2 = _wilson(legacy.e, legacy.n, z)
    diff = p1 - p2
    low = diff - math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    high = diff + math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    verdict = FAIL if low > margin else PASS if high <= margin else WAIT
    return Check("max_error_increase", margin, diff, low, high, verdict)


# --- latency --------------------------------------------------------------------------------
def binom_ppf(y: float, n: int, p: float) -> int:
    """The smallest k with P(Bin(n, p) <= k) >= y (scipy.stats.binom.ppf, from its ufuncs: 50x faster)."""
    k = max(0, math.ceil(float(special.bdtrik(y, n, p))))
    while k > 0 and special.bdtr(k - 1, n, p) >= y:
        k -= 1
    while k < n and special.bdtr(k, n, p) < y:
        k += 1
    return k


def _value_at_rank(hist: Mapping[int, int], rank: int) -> float:
    seen = 0
    for index in sorted(hist):
        seen += hist[index]
        if seen >= rank:
            return bucket_ms(index)
    return bucket_ms(max(hist))


def quantile_bounds(c: Counts, q: float, alpha: float) -> tuple[float | None, float, float]:
    """(estimate, lower, upper) of the q-quantile in ms, each bound one-sided at 1 - alpha;
    distribution-free: the order statistics whose ranks bracket it (binomial). A bound the
    data cannot give yet is 0 or infinity."""
    n = c.n
    if n == 0 or not c.h:
        return None, 0.0, math.inf
    estimate = _value_at_rank(c.h, max(1, math.ceil(q * n)))
    low_rank = binom_ppf(alpha, n, q)  # P(Bin(n, q) >= rank) >= 1 - alpha
    high_rank = binom_ppf(1 - alpha, n, q) + 1
    low = _value_at_rank(c.h, low_rank) if low_rank >= 1 else 0.0
    high = _value_at_rank(c.h, high_rank) if high_rank <= n else math.inf
    return estimate, low, high


def p95_check(new: Counts, threshold_ms: float, alpha: float) -> Check:
    estimate, low, high = quantile_bounds(new, 0.95, alpha)
    verdict = WAIT if estimate is None else FAIL if low > threshold_ms else PASS if high <= threshold_ms else WAIT
    return Check("max_p95_ms", threshold_ms, estimate, low, high, verdict)


def mann_whitney_slower(new: Counts, legacy: Counts) -> float | None:
    """One-sided p-value of "new is slower than legacy" from binned latencies: midranks per
    bin, normal approximation with the tie correction of the variance."""
    n1, n2 = new.n, legacy.n
    if n1 == 0 or n2 == 0:
        return None
    bins = sorted(set(new.h) | set(legacy.h))
    below = 0  # legacy samples in lower bins
    u = 0.0
    ties = 0.0
    for b in bins:
        a, b_ = new.h.get(b, 0), legacy.h.get(b, 0)
        u += a * (below + 0.5 * b_)
        below += b_
        t = a + b_
        ties += t**3 - t
    big_n = n1 + n2
    mean = n1 * n2 / 2
    var = n1 * n2 / 12 * ((big_n + 1) - ties / (big_n * (big_n - 1))) if big_n > 1 else 0.0
    if var <= 0:
        return 0.5
    z = (u - mean) / math.sqrt(var)
    return float(special.ndtr(-z))


def p95_ratio_check(new: Counts, legacy: Counts, threshold: float, alpha: float, tolerance_ms: float = 0.0) -> Check:
    """Fails when the ratio is shown above the threshold, new is shown slower (Mann-Whitney) and new's
    p95 is shown more than `tolerance_ms` above legacy's; passes when the ratio is shown within the
    threshold or (tolerance_ms > 0) the difference is shown within the tolerance."""
    each = 1 - math.sqrt(1 - alpha)  # both p95 intervals hold together at 1 - alpha
    est_n, low_n, high_n = quantile_bounds(new, 0.95, each)
    est_l, low_l, high_l = quantile_bounds(legacy, 0.95, each)
    if est_n is None or est_l is None or not est_l:
        return Check("max_p95_ratio", threshold, None, None, None, WAIT)
    estimate = est_n / est_l
    low = low_n / high_l if math.isfinite(high_l) and high_l > 0 else 0.0
    high = high_n / low_l if low_l > 0 else math.inf
    p_value = mann_whitney_slower(new, legacy)
    slower = p_value is not None and p_value < alpha
    felt = low_n - high_l > tolerance_ms  # -inf when legacy's upper bound is open: not shown
    within = tolerance_ms > 0 and high_n - low_l <= tolerance_ms
    verdict = FAIL if low > threshold and slower and felt else PASS if high <= threshold or within else WAIT
    return Check("max_p95_ratio", threshold, estimate, low, high, verdict, p_value)


@dataclass(frozen=True)
class Extra:
    """Evidence beside new's and legacy's outcomes: a path per error type new had (no_new_errors names
    one), and the route's shadow comparisons since the step began (max_mismatch_rate)."""

    examples: Mapping[str, str] = field(default_factory=dict)
    shadow: Counts | None = None
    prometheus: tuple[Check, ...] = ()  # the prometheus gates, as last read (rollout/remote.py asks, off its tick)


# --- shadow comparisons -------------------------------------------------------------------------------
def mismatch_check(shadow: Counts | None, threshold: float, alpha: float) -> Check:
    """The share of shadow comparisons that differed (`t`: match, mismatch; failed copies are not
    comparisons), Clopper-Pearson bounds: fail when the lower is above the threshold, pass when the
    upper is within it."""
    k = shadow.t.get("mismatch", 0) if shadow is not None else 0
    n = k + (shadow.t.get("match", 0) if shadow is not None else 0)
    detail = f"{k} of {n} shadow comparisons differed"
    if n == 0:
        return Check("max_mismatch_rate", threshold, None, 0.0, 1.0, WAIT, None, detail)
    low, high = proportion_bounds(k, n, alpha)
    verdict = FAIL if low > threshold else PASS if high <= threshold else WAIT
    return Check("max_mismatch_rate", threshold, k / n, low, high, verdict, None, detail)


# --- error types ------------------------------------------------------------------------------------
def more_often_p(k: int, m: int, j: int, n: int) -> float:
    """One-sided exact p-value of "new (k of m requests) has this type more often than legacy (j of n)":
    given the k + j occurrences, each falls on new with probability m / (m + n) if the rates are
    equal (the conditional binomial test of two rates); P(at least k on new)."""
    if k == 0 or m == 0:
        return 1.0
    if n == 0:
        return 1.0  # nothing to compare with
    return float(special.bdtrc(k - 1, k + j, m / (m + n)))


def no_new_errors_check(new: Counts, legacy: Counts, alpha: float, examples: Mapping[str, str] | None = None) -> Check:
    """Every error type new has, tested against legacy's rate of it (alpha split over the types, Bonferroni):
    fail naming the worst, with both counts and an example path; pass when none is shown more frequent and
    new has traffic; wait while legacy has none to compare with."""
    if new.n == 0 or legacy.n == 0:
        return Check("no_new_errors", 0.0, None, None, None, WAIT)
    tested = sorted((more_often_p(k, new.n, legacy.t.get(t, 0), legacy.n), t) for t, k in new.t.items())
    if not tested:
        return Check("no_new_errors", 0.0, 0.0, None, None, PASS, 1.0, "no error types on new")
    p, worst = tested[0]
    k, j = new.t[worst], legacy.t.get(worst, 0)
    failed = p < alpha / len(tested)
    where = f", e.g. {examples[worst]}" if examples and worst in examples else ""
    detail = f"{worst}: new {k} of {new.n}, legacy {j} of {legacy.n}{where}"
    return Check("no_new_errors", 0.0, k / new.n, None, None, FAIL if failed else PASS, p, detail)


# --- a set of gates ------------------------------------------------------------------------------
def judge(gates: Any, new: Counts, legacy: Counts, alpha: float, extra: Extra | None = None) -> list[Check]:
    """Every configured gate of a GuardSpec or Gates (attributes max_error_rate, max_p95_ms,
    max_p95_ratio, max_error_increase, no_new_errors, max_mismatch_rate; absent ones are skipped)."""
    checks = []
    if getattr(gates, "max_error_rate", None) is not None:
        checks.append(error_rate_check(new, gates.max_error_rate, alpha))
    if getattr(gates, "max_error_increase", None) is not None:
        checks.append(error_increase_check(new, legacy, gates.max_error_increase, alpha))
    if getattr(gates, "max_p95_ms", None) is not None:
        checks.append(p95_check(new, gates.max_p95_ms, alpha))
    if getattr(gates, "max_p95_ratio", None) is not None:
        tolerance = getattr(gates, "p95_tolerance_ms", 0.0)
        checks.append(p95_ratio_check(new, legacy, gates.max_p95_ratio, alpha, tolerance))
    if getattr(gates, "no_new_errors", False):
        checks.append(no_new_errors_check(new, legacy, alpha, extra.examples if extra is not None else None))
    if getattr(gates, "max_mismatch_rate", None) is not None:
        checks.append(mismatch_check(extra.shadow if extra is not None else None, gates.max_mismatch_rate, alpha))
    if extra is not None:
        checks.extend(extra.prometheus)
    return checks


def at_confidence(gates: Any, new: Counts, legacy: Counts, extra: Extra | None = None) -> tuple[list[Check], str]:
    """A whole window judged at the gates' confidence (one look): the checks, and the verdict,
    which waits while new has fewer than min_requests. Admin's evidence, a step's record."""
    checks = judge(gates, new, legacy, 1 - gates.confidence, extra)
    return checks, verdict(checks) if new.n >= gates.min_requests else WAIT


def scaled(c: Counts, factor: float) -> Counts:
    """`c` as if `factor` times as much traffic had come, alike: what more evidence would look like."""
    out = Counts()
    out.h = {i: max(1, round(v * factor)) for i, v in c.h.items()}
    out.n = max(round(c.n * factor), sum(out.h.values()))
    out.e = min(out.n, round(c.e * factor))
    out.t = {k: round(v * factor) for k, v in c.t.items()}
    return out


def growth_to_decide(
    gates: Any, gate: str, new: Counts, legacy: Counts, legacy_grows: bool = True, extra: Extra | None = None
) -> float | None:
    """How many times the evidence must grow, alike (same rates, same latencies), before `gate` is
    decided (pass or fail) at the gates' confidence; None when 1000 times would not do (the values
    sit at the threshold) or there is nothing to grow yet. Doubling, then halving the last step."""
    alpha = 1 - gates.confidence

    def decided(f: float) -> bool:
        shadow = scaled(extra.shadow, f) if extra is not None and extra.shadow is not None else None
        more = Extra(extra.examples, shadow, extra.prometheus) if extra is not None else None
        checks = judge(gates, scaled(new, f), scaled(legacy, f) if legacy_grows else legacy, alpha, more)
        return any(c.gate == gate and c.verdict != WAIT for c in checks)

    if gate == "max_mismatch_rate":
        if extra is None or extra.shadow is None or not extra.shadow.t:
            return None
    elif new.n == 0 or (legacy_grows and legacy.n == 0 and gate in RELATIVE):
        return None
    high = 2.0
    while not decided(high):
        high *= 2
        if high > 1024:
            return None
    low = high / 2
    for _ in range(5):  # within 3 %: an estimate for an operator
        mid = (low + high) / 2
        low, high = (low, mid) if decided(mid) else (mid, high)
    return high


RELATIVE = ("max_p95_ratio", "max_error_increase")  # the gates that compare new with legacy


def verdict(checks: list[Check]) -> str:
    if any(c.verdict == FAIL for c in checks):
        return FAIL
    if checks and all(c.verdict == PASS for c in checks):
        return PASS
    return WAIT


def reason(checks: list[Check]) -> str:
    """One line naming the failed gates with their evidence, in the gate's unit (%, ms, x)."""
    parts = []
    for c in checks:
        if c.verdict == FAIL and c.detail is not None:
            p = f", p={c.p_value:.2g}" if c.p_value is not None else ""
            parts.append(f"{c.gate}: {c.detail}{p}")
        elif c.verdict == FAIL:
            f = _UNITS.get(c.gate, "{:.4g}".format)
            p = f", p={c.p_value:.2g}" if c.p_value is not None else ""
            high = "∞" if c.high is None or math.isinf(c.high) else f(c.high)
            parts.append(f"{c.gate} {f(c.estimate)} (interval {f(c.low)} .. {high}{p}) > {f(c.threshold)}")
    return "; ".join(parts)


_UNITS = {
    "max_error_rate": "{:.2%}".format,
    "max_error_increase": "{:+.2%}".format,
    "max_p95_ms": "{:.4g} ms".format,
    "max_p95_ratio": "x{:.3g}".format,
}
