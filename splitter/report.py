"""`splitter report`: the migration plan's MigrationMonitor as a command.

Per route, old vs new: requests, error rate, p95, and a verdict against the
plan's success criteria (new error rate < 0.1 %, new p95 within 10 % of old).
Reads Prometheus (rates over a window) or one proxy's /metrics (since start).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .text import terminal

MAX_ERROR_RATE = 0.001
MAX_P95_RATIO = 1.10


CONFIDENCE = 0.95  # the intervals the report prints: two-sided, 2.5 % in each tail


@dataclass
class Side:
    requests: float = 0.0
    errors: float = 0.0
    p95_ms: float | None = None
    buckets: list[tuple[float, float]] = field(default_factory=list, repr=False)  # cumulative (le seconds, count)

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None

    def error_rate_ci(self) -> tuple[float, float] | None:
        """Clopper-Pearson interval at CONFIDENCE."""
        from .judge import proportion_bounds

        n = round(self.requests)
        if n <= 0:
            return None
        return proportion_bounds(min(n, round(self.errors)), n, (1 - CONFIDENCE) / 2)

    def quantile_ms(self, q: float) -> tuple[float | None, float | None, float | None]:
        """(estimate, low, high) in ms from the histogram buckets; the interval from the ranks that
        bracket the quantile at CONFIDENCE (binomial order statistics), read like histogram_quantile."""
        from .judge import binom_ppf

        if not self.buckets:
            return None, None, None
        total = max(c for _, c in self.buckets)
        n = round(total)
        est = quantile(q, self.buckets)
        if n <= 0 or est is None:
            return None, None, None
        tail = (1 - CONFIDENCE) / 2
        low_rank, high_rank = binom_ppf(tail, n, q), binom_ppf(1 - tail, n, q) + 1
        low = quantile(max(low_rank, 0) / n, self.buckets) if low_rank >= 1 else 0.0
        high = quantile(high_rank / n, self.buckets) if high_rank <= n else math.inf
        return est * 1000, None if low is None else low * 1000, None if high is None else high * 1000

    def view(self) -> dict[str, Any]:
        p50, p50_lo, p50_hi = self.quantile_ms(0.5)
        _, p95_lo, p95_hi = self.quantile_ms(0.95)
        ci = self.error_rate_ci()
        return {
            "requests": round(self.requests),  # counts are integers (Prometheus' increase() extrapolates)
            "errors": round(self.errors),
            "error_rate": self.error_rate,
            "error_rate_ci": list(ci) if ci else None,
            "p50_ms": _r(p50),
            "p50_ci_ms": [_r(p50_lo), _r(p50_hi)],
            "p95_ms": _r(self.p95_ms),
            "p95_ci_ms": [_r(p95_lo), _r(p95_hi)],
        }


def _r(x: float | None) -> float | None:
    """Three digits; None for no value and for an open interval end (infinity): JSON has no Infinity."""
    return round(x, 3) if x is not None and math.isfinite(x) else None


@dataclass
class RouteReport:
    route: str
    old: Side
    new: Side
    verdict: str  # pass | fail | no_data
    reasons: list[str]

    def as_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "old": self.old.view(),
            "new": self.new.view(),
            "confidence": CONFIDENCE,
            "verdict": self.verdict,
            "reasons": self.reasons,
        }


def judge(
    route: str, old: Side, new: Side, max_error_rate: float = MAX_ERROR_RATE, max_p95_ratio: float = MAX_P95_RATIO
) -> RouteReport:
    reasons = []
    if not new.requests:
        return RouteReport(route, old, new, "no_data", ["no requests to new"])
    rate = new.error_rate or 0.0
    if rate >= max_error_rate:
        reasons.append(f"new error rate {rate:.4%} >= {max_error_rate:.1%}")
    if new.p95_ms is not None and old.p95_ms:
        if new.p95_ms > max_p95_ratio * old.p95_ms:
            reasons.append(f"new p95 {new.p95_ms:.1f} ms > {max_p95_ratio:.2f} x old p95 {old.p95_ms:.1f} ms")
    return RouteReport(route, old, new, "fail" if reasons else "pass", reasons)


def quantile(q: float, buckets: list[tuple[float, float]]) -> float | None:
    """Prometheus' histogram_quantile over cumulative (le, count) pairs; seconds in, seconds out."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] == 0:
        return None
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if math.isinf(le):
                return prev_le
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le


def from_metrics_text(text: str) -> dict[str, dict[str, Side]]:
    """Cumulative numbers per route and backend from a /metrics page."""
    from prometheus_client.parser import text_string_to_metric_families

    sides: dict[str, dict[str, Side]] = {}
    hist: dict[tuple[str, str], list[tuple[float, float]]] = {}

    def side(route: str, backend: str) -> Side:
        return sides.setdefault(route, {"legacy": Side(), "new": Side()}).setdefault(backend, Side())

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = s.labels
            if "route" not in labels or labels.get("backend") not in ("legacy", "new"):
                continue
            if s.name == "splitter_requests_total":
                side(labels["route"], labels["backend"]).requests += s.value
            elif s.name == "splitter_errors_total":
                side(labels["route"], labels["backend"]).errors += s.value
            elif s.name == "splitter_request_duration_seconds_bucket":
                key = (labels["route"], labels["backend"])
                hist.setdefault(key, []).append((float(labels["le"]), s.value))
    for (route, backend), b in hist.items():
        merged: dict[float, float] = {}
        for le, c in b:
            merged[le] = merged.get(le, 0.0) + c
        p = quantile(0.95, list(merged.items()))
        side(route, backend).p95_ms = p * 1000 if p is not None else None
        side(route, backend).buckets = sorted(merged.items())
    return sides


def prometheus_queries(window: str | None) -> dict[str, str]:
    """Over a range (`increase`, extrapolated by Prometheus) or, without one, since the proxies started."""
    if window:
        return {
            "requests": f"sum by (route, backend) (increase(splitter_requests_total[{window}]))",
            "errors": f"sum by (route, backend) (increase(splitter_errors_total[{window}]))",
            "p95": "histogram_quantile(0.95, sum by (route, backend, le) "
            f"(rate(splitter_request_duration_seconds_bucket[{window}])))",
            "buckets": f"sum by (route, backend, le) (increase(splitter_request_duration_seconds_bucket[{window}]))",
        }
    return {
        "requests": "sum by (route, backend) (splitter_requests_total)",
        "errors": "sum by (route, backend) (splitter_errors_total)",
        "p95": "histogram_quantile(0.95, sum by (route, backend, le) (splitter_request_duration_seconds_bucket))",
        "buckets": "sum by (route, backend, le) (splitter_request_duration_seconds_bucket)",
    }


def from_prometheus(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Side]]:
    """Numbers from the instant-query results of prometheus_queries()."""
    sides: dict[str, dict[str, Side]] = {}
    for key, series in results.items():
        for item in series:
            labels = item["metric"]
            if labels.get("backend") not in ("legacy", "new") or "route" not in labels:
                continue
            value = float(item["value"][1])
            s = sides.setdefault(labels["route"], {"legacy": Side(), "new": Side()})[labels["backend"]]
            if math.isnan(value):
                continue
            if key == "requests":
                s.requests = value
            elif key == "errors":
                s.errors = value
            elif key == "buckets":
                s.buckets = sorted([*s.buckets, (float(labels["le"]), value)])
            else:
                s.p95_ms = value * 1000
    return sides


def build(sides: dict[str, dict[str, Side]], route: str | None = None) -> list[RouteReport]:
    names = sorted(n for n in sides if n != "unmatched" and (route is None or n == route))
    return [judge(n, sides[n]["legacy"], sides[n]["new"]) for n in names]


def table(reports: list[RouteReport]) -> str:
    def pct(v: float | None) -> str:
        return "-" if v is None else f"{v:.3%}"

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    lines = [
        f"{'ROUTE':<16} {'OLD REQ':>9} {'NEW REQ':>9} {'OLD ERR':>9} {'NEW ERR':>9} "
        f"{'OLD P95ms':>10} {'NEW P95ms':>10}  VERDICT"
    ]
    for r in reports:
        lines.append(
            f"{r.route:<16} {r.old.requests:>9.0f} {r.new.requests:>9.0f} "
            f"{pct(r.old.error_rate):>9} {pct(r.new.error_rate):>9} "
            f"{ms(r.old.p95_ms):>10} {ms(r.new.p95_ms):>10}  {r.verdict.upper()}"
        )
        for name, side in (("old", r.old), ("new", r.new)):
            lines.append(f"{'':<16}   {name}: {_interval_line(side)}")
        for reason in r.reasons:
            lines.append(f"{'':<16} - {reason}")
    lines.append(
        f"criteria: new error rate < {MAX_ERROR_RATE:.1%}, new p95 <= {MAX_P95_RATIO:.2f} x old p95; "
        f"intervals at {CONFIDENCE:.0%}"
    )
    return "\n".join(terminal(line) for line in lines)  # a route name is text from outside (text.py)


def _interval_line(side: Side) -> str:
    v = side.view()

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x:.1f}"

    def interval(estimate: float | None, low: float | None, high: float | None) -> str:
        return f"[{ms(low)} .. {'∞' if high is None and estimate is not None else ms(high)}]"  # None above: open

    ci = v["error_rate_ci"]
    err = "-" if v["error_rate"] is None else f"{v['error_rate']:.3%} [{ci[0]:.3%} .. {ci[1]:.3%}]"
    p50, p95 = interval(v["p50_ms"], *v["p50_ci_ms"]), interval(v["p95_ms"], *v["p95_ci_ms"])
    return f"error rate {err}, p50 {ms(v['p50_ms'])} ms {p50}, p95 {ms(v['p95_ms'])} ms {p95}"
