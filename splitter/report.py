"""`splitter report`: the migration plan's MigrationMonitor as a command.

Per route, old vs new: requests, error rate, p95, and a verdict against the
plan's success criteria (new error rate < 0.1 %, new p95 within 10 % of old).
Reads Prometheus (rates over a window) or one proxy's /metrics (since start).

A criterion passes only when its 95 % interval is within it (the upper bound of
new's error rate below 0.1 %; the upper bound of the p95 ratio, from both p95
intervals each at sqrt(0.95), at most 1.10), fails when the interval is wholly
outside it, and otherwise is "not enough evidence" (exit 4): a point estimate
under the line with an interval across it is no pass. Requests a route's cohort
decided (staff, beta, forced users) are no random sample of either side: they are
taken out of the totals (splitter_cohort_*), as the guard's and rollouts' windows
leave them out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from .text import terminal

MAX_ERROR_RATE = 0.001
MAX_P95_RATIO = 1.10
PASS, FAIL, UNDECIDED, NO_DATA = "pass", "fail", "not_enough_evidence", "no_data"


CONFIDENCE = 0.95  # the intervals the report prints: two-sided, 2.5 % in each tail


@dataclass
class Side:
    requests: float = 0.0
    errors: float = 0.0
    p95_ms: float | None = None
    buckets: list[tuple[float, float]] = field(default_factory=list, repr=False)  # cumulative (le seconds, count)
    cohort_requests: float = 0.0  # a cohort's requests, left out of the numbers above

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

    def quantile_ms(self, q: float, confidence: float = CONFIDENCE) -> tuple[float | None, float | None, float | None]:
        """(estimate, low, high) in ms from the histogram buckets; the interval from the ranks that
        bracket the quantile at `confidence` (binomial order statistics), read like histogram_quantile."""
        from .judge import binom_ppf

        if not self.buckets:
            return None, None, None
        total = max(c for _, c in self.buckets)
        n = round(total)
        est = quantile(q, self.buckets)
        if n <= 0 or est is None:
            return None, None, None
        tail = (1 - confidence) / 2
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
            "cohort_requests_left_out": round(self.cohort_requests),
        }


def _r(x: float | None) -> float | None:
    """Three digits; None for no value and for an open interval end (infinity): JSON has no Infinity."""
    return round(x, 3) if x is not None and math.isfinite(x) else None


@dataclass
class RouteReport:
    route: str
    old: Side
    new: Side
    verdict: str  # pass | fail | not_enough_evidence | no_data
    reasons: list[str]
    p95_ratio: tuple[float, float | None, float | None] | None = None  # new / old: estimate, 95 % interval
    gates: dict[str, Any] | None = None  # the route's rollout gates as last judged (GET /admin/rollouts)

    def as_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "old": self.old.view(),
            "new": self.new.view(),
            "confidence": CONFIDENCE,
            "verdict": self.verdict,
            "reasons": self.reasons,
            "p95_ratio": None if self.p95_ratio is None else {
                "estimate": _r(self.p95_ratio[0]), "interval": [_r(self.p95_ratio[1]), _r(self.p95_ratio[2])]
            },
            "rollout_gates": self.gates,
        }


def p95_ratio(old: Side, new: Side) -> tuple[float, float | None, float | None] | None:
    """new's p95 / old's with a 95 % interval: each p95 interval at sqrt(0.95), so both hold together.
    None without a p95 on either side; an interval end None when the data cannot bound it."""
    each = math.sqrt(CONFIDENCE)
    est_n, low_n, high_n = new.quantile_ms(0.95, each)
    est_o, low_o, high_o = old.quantile_ms(0.95, each)
    if est_n is None or not est_o:
        return None
    low = low_n / high_o if low_n is not None and high_o else None
    high = high_n / low_o if high_n is not None and low_o else None
    return est_n / est_o, low, high


def judge(
    route: str, old: Side, new: Side, max_error_rate: float = MAX_ERROR_RATE, max_p95_ratio: float = MAX_P95_RATIO
) -> RouteReport:
    """Each criterion: pass when its interval is within it, fail when wholly outside, else undecided."""
    if not new.requests:
        return RouteReport(route, old, new, NO_DATA, ["no requests to new"])
    failed, undecided = [], []
    rate, (low, high) = new.error_rate or 0.0, new.error_rate_ci() or (0.0, 1.0)
    interval = f"95 % interval [{low:.3%} .. {high:.3%}]"
    if low >= max_error_rate:
        failed.append(f"new error rate {rate:.4%} >= {max_error_rate:.1%} ({interval})")
    elif high >= max_error_rate:
        undecided.append(f"new error rate {rate:.3%}, but its {interval} reaches {max_error_rate:.1%}: more traffic")
    ratio = p95_ratio(old, new)
    if ratio is None:
        undecided.append("p95: no latency on " + ("legacy" if new.p95_ms is not None else "new") + " to compare")
    else:
        est, r_low, r_high = ratio
        said = f"[{_x(r_low)} .. {_x(r_high)}]"
        if r_low is not None and r_low > max_p95_ratio:
            failed.append(f"new p95 {est:.2f} x old p95 > {max_p95_ratio:.2f} (95 % interval {said})")
        elif r_high is None or r_high > max_p95_ratio:
            undecided.append(f"new p95 {est:.2f} x old p95, but its 95 % interval {said} reaches "
                             f"{max_p95_ratio:.2f}: more traffic")
    verdict = FAIL if failed else UNDECIDED if undecided else PASS
    return RouteReport(route, old, new, verdict, failed + undecided, ratio)


def _x(v: float | None) -> str:
    return "∞" if v is None else f"{v:.2f}"


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
    """Cumulative numbers per route and backend from a /metrics page, a cohort's requests left out."""
    from prometheus_client.parser import text_string_to_metric_families

    names = {
        "splitter_requests_total": ("all", "requests"),
        "splitter_errors_total": ("all", "errors"),
        "splitter_request_duration_seconds_bucket": ("all", "buckets"),
        "splitter_cohort_requests_total": ("cohort", "requests"),
        "splitter_cohort_errors_total": ("cohort", "errors"),
        "splitter_cohort_request_duration_seconds_bucket": ("cohort", "buckets"),
    }
    found: dict[str, dict[str, dict[str, Side]]] = {"all": {}, "cohort": {}}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            labels = sample.labels
            kind = names.get(sample.name)
            if kind is None or "route" not in labels or labels.get("backend") not in ("legacy", "new"):
                continue
            routes = found[kind[0]].setdefault(labels["route"], {"legacy": Side(), "new": Side()})
            _add(routes[labels["backend"]], kind[1], sample.value, labels.get("le"))
    return _without_cohorts(found["all"], found["cohort"])


def _add(side: Side, key: str, value: float, le: str | None) -> None:
    """One sample into a side; bucket samples of the same `le` (over handlers, cohorts) are summed."""
    if key == "requests":
        side.requests += value
    elif key == "errors":
        side.errors += value
    elif le is not None:
        merged = dict(side.buckets)
        merged[float(le)] = merged.get(float(le), 0.0) + value
        side.buckets = sorted(merged.items())


Sides = dict[str, dict[str, Side]]  # route -> backend (legacy, new) -> its numbers


def _without_cohorts(sides: Sides, cohorts: Sides) -> Sides:
    """Each side minus its cohort traffic (requests, errors, latency buckets), and its p95 read from what is left."""
    for route, pair in sides.items():
        for backend, side in pair.items():
            c = cohorts.get(route, {}).get(backend)
            if c is not None:
                side.requests = max(0.0, side.requests - c.requests)
                side.errors = max(0.0, side.errors - c.errors)
                out = dict(c.buckets)
                side.buckets = [(le, max(0.0, n - out.get(le, 0.0))) for le, n in side.buckets]
                side.cohort_requests = c.requests
            if side.buckets:
                p = quantile(0.95, side.buckets)
                side.p95_ms = p * 1000 if p is not None else None
    return sides


def prometheus_queries(window: str | None) -> dict[str, str]:
    """Over a range (`increase`, extrapolated by Prometheus) or, without one, since the proxies started; the
    cohorts' series apart, to be taken out."""
    series = {
        "requests": ("splitter_requests_total", "route, backend"),
        "errors": ("splitter_errors_total", "route, backend"),
        "buckets": ("splitter_request_duration_seconds_bucket", "route, backend, le"),
        "cohort_requests": ("splitter_cohort_requests_total", "route, backend"),
        "cohort_errors": ("splitter_cohort_errors_total", "route, backend"),
        "cohort_buckets": ("splitter_cohort_request_duration_seconds_bucket", "route, backend, le"),
    }
    if window:
        return {k: f"sum by ({by}) (increase({name}[{window}]))" for k, (name, by) in series.items()}
    return {k: f"sum by ({by}) ({name})" for k, (name, by) in series.items()}


def from_prometheus(results: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Side]]:
    """Numbers from the instant-query results of prometheus_queries(), a cohort's requests left out."""
    found: dict[str, dict[str, dict[str, Side]]] = {"all": {}, "cohort": {}}
    for key, series in results.items():
        cohort = key.startswith("cohort_")
        what = key.removeprefix("cohort_")
        for item in series:
            labels = item["metric"]
            if labels.get("backend") not in ("legacy", "new") or "route" not in labels:
                continue
            value = float(item["value"][1])
            sides = found["cohort" if cohort else "all"].setdefault(labels["route"], {"legacy": Side(), "new": Side()})
            if not math.isnan(value):
                _add(sides[labels["backend"]], what, value, labels.get("le"))
    return _without_cohorts(found["all"], found["cohort"])


def build(
    sides: dict[str, dict[str, Side]], route: str | None = None, rollouts: list[dict[str, Any]] | None = None
) -> list[RouteReport]:
    """A report per route; with the rollouts (GET /admin/rollouts), each rollout's gates as last judged."""
    names = sorted(n for n in sides if n != "unmatched" and (route is None or n == route))
    reports = [judge(n, sides[n]["legacy"], sides[n]["new"]) for n in names]
    views = {v.get("route"): v for v in rollouts or []}
    for r in reports:
        r.gates = last_gates(views[r.route]) if r.route in views else None
    return reports


def last_gates(view: dict[str, Any]) -> dict[str, Any] | None:
    """A rollout's gates as last judged: the current step's, else (finished, rolled back) its last window's."""
    now = view.get("gates")
    prev = view.get("previous") or {}
    gates, step = (now, view.get("step")) if now else (prev.get("gates"), prev.get("percent"))
    if not gates:
        return None
    verdict = view.get("verdict") if now else prev.get("verdict")
    return {"status": view.get("status"), "step": step, "verdict": verdict, "gates": gates}


def gate_line(g: dict[str, Any]) -> str:
    """One gate with its numbers: judged (estimate, interval, verdict) or a value against its threshold."""
    if "verdict" in g:
        mark = {"pass": "✓", "fail": "✗"}.get(g["verdict"], "…")
        low, high = g.get("interval") or [None, None]
        est = "-" if g.get("estimate") is None else f"{g['estimate']:.4g}"
        interval = "" if low is None else f" [{low:.4g} .. {'∞' if high is None else f'{high:.4g}'}]"
        said = f"{mark} {g['gate']} {est}{interval} (threshold {g['threshold']:g}) {g['verdict']}"
    else:
        mark = "✓" if g.get("ok") is True else "✗" if g.get("ok") is False else "…"
        value = "-" if g.get("value") is None else f"{g['value']:g}"
        said = f"{mark} {g['gate']} {value} (threshold {g['threshold']:g})"
    return said + (f": {g['detail']}" if g.get("detail") else "")


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
            f"{ms(r.old.p95_ms):>10} {ms(r.new.p95_ms):>10}  {r.verdict.upper().replace('_', ' ')}"
        )
        for name, side in (("old", r.old), ("new", r.new)):
            lines.append(f"{'':<16}   {name}: {_interval_line(side)}")
        if r.p95_ratio is not None:
            est, low, high = r.p95_ratio
            lines.append(f"{'':<16}   new p95 / old p95: {est:.2f} [{_x(low)} .. {_x(high)}]")
        if r.old.cohort_requests or r.new.cohort_requests:
            lines.append(f"{'':<16}   left out: cohort requests, {r.new.cohort_requests:.0f} to new and "
                         f"{r.old.cohort_requests:.0f} to legacy (not a sample of either side)")
        for reason in r.reasons:
            lines.append(f"{'':<16} - {reason}")
        if r.gates:
            g = r.gates
            lines.append(f"{'':<16}   rollout gates ({g['status']}, at {g['step']}%), as last judged: {g['verdict']}")
            lines += [f"{'':<16}     {gate_line(x)}" for x in g["gates"]]
    lines.append(
        f"criteria: new error rate < {MAX_ERROR_RATE:.1%}, new p95 <= {MAX_P95_RATIO:.2f} x old p95; "
        f"intervals at {CONFIDENCE:.0%}: PASS when the interval is within the criterion"
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
