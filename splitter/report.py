"""`splitter report`: the migration plan's MigrationMonitor as a command.

Per route, old vs new: requests, error rate, p95, and a verdict against the
plan's success criteria (new error rate < 0.1 %, new p95 within 10 % of old).
Reads Prometheus (rates over a window) or one proxy's /metrics (since start).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

MAX_ERROR_RATE = 0.001
MAX_P95_RATIO = 1.10


@dataclass
class Side:
    requests: float = 0.0
    errors: float = 0.0
    p95_ms: float | None = None

    @property
    def error_rate(self) -> float | None:
        return self.errors / self.requests if self.requests else None


@dataclass
class RouteReport:
    route: str
    old: Side
    new: Side
    verdict: str  # pass | fail | no_data
    reasons: list[str]

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["old"]["error_rate"], d["new"]["error_rate"] = self.old.error_rate, self.new.error_rate
        return d


def judge(route: str, old: Side, new: Side, max_error_rate: float = MAX_ERROR_RATE, max_p95_ratio: float = MAX_P95_RATIO) -> RouteReport:
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
    return sides


def prometheus_queries(window: str | None) -> dict[str, str]:
    """Over a range (`increase`, extrapolated by Prometheus) or, without one, since the proxies started."""
    if window:
        return {
            "requests": f"sum by (route, backend) (increase(splitter_requests_total[{window}]))",
            "errors": f"sum by (route, backend) (increase(splitter_errors_total[{window}]))",
            "p95": f"histogram_quantile(0.95, sum by (route, backend, le) (rate(splitter_request_duration_seconds_bucket[{window}])))",
        }
    return {
        "requests": "sum by (route, backend) (splitter_requests_total)",
        "errors": "sum by (route, backend) (splitter_errors_total)",
        "p95": "histogram_quantile(0.95, sum by (route, backend, le) (splitter_request_duration_seconds_bucket))",
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

    lines = [f"{'ROUTE':<16} {'OLD REQ':>9} {'NEW REQ':>9} {'OLD ERR':>9} {'NEW ERR':>9} {'OLD P95ms':>10} {'NEW P95ms':>10}  VERDICT"]
    for r in reports:
        lines.append(f"{r.route:<16} {r.old.requests:>9.0f} {r.new.requests:>9.0f} {pct(r.old.error_rate):>9} {pct(r.new.error_rate):>9} {ms(r.old.p95_ms):>10} {ms(r.new.p95_ms):>10}  {r.verdict.upper()}")
        for reason in r.reasons:
            lines.append(f"{'':<16} - {reason}")
    lines.append(f"criteria: new error rate < {MAX_ERROR_RATE:.1%}, new p95 <= {MAX_P95_RATIO:.2f} x old p95")
    return "\n".join(lines)
