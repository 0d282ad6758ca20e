"""A step's gates: each gate's value against its threshold (the threshold-only gates), the count gates that
always test, the first failure in words, each gate as the API shows it, and what an undecided gate waits for."""

from __future__ import annotations

import math
from typing import Any

from .. import judge
from ..config import Gates
from ..window import Counts, Totals


def gate_checks(g: Gates, new: Totals, legacy: Totals) -> list[dict[str, Any]]:
    """Each gate's current value against its threshold; `ok` None while there is no value yet."""
    checks: list[dict[str, Any]] = [
        {
            "gate": "min_requests",
            "value": new.requests,
            "threshold": g.min_requests,
            "ok": new.requests >= g.min_requests,
        }
    ]
    if g.max_error_rate is not None:
        checks.append(
            {
                "gate": "max_error_rate",
                "value": round(new.error_rate, 5),
                "threshold": g.max_error_rate,
                "ok": new.error_rate <= g.max_error_rate if new.requests else None,
            }
        )
    if g.max_p95_ms is not None:
        checks.append(
            {
                "gate": "max_p95_ms",
                "value": new.p95_ms,
                "threshold": g.max_p95_ms,
                "ok": new.p95_ms <= g.max_p95_ms if new.p95_ms is not None else None,
            }
        )
    if g.max_p95_ratio is not None:
        judged = bool(new.p95_ms and legacy.p95_ms and legacy.requests >= max(1, g.min_requests))
        ratio = round(new.p95_ms / legacy.p95_ms, 4) if judged and new.p95_ms and legacy.p95_ms else None
        slower = round(new.p95_ms - legacy.p95_ms, 3) if ratio is not None and new.p95_ms and legacy.p95_ms else None
        checks.append(
            {
                "gate": "max_p95_ratio",
                "value": ratio,
                "threshold": g.max_p95_ratio,
                "slower_ms": slower,
                "tolerance_ms": g.p95_tolerance_ms,
                # fails only when new is also slower by more than the tolerance: a difference users feel
                "ok": ratio <= g.max_p95_ratio or (slower or 0) <= g.p95_tolerance_ms if ratio is not None else None,
            }
        )
    return checks


_SAYS = {"max_error_rate": "error rate", "max_p95_ms": "p95 ms", "max_p95_ratio": "p95 ratio"}


THRESHOLD_ALPHA = 0.01  # the count gates' test level when the gates set no confidence


def count_checks(g: Gates, new: Counts, legacy: Counts, extra: judge.Extra | None = None) -> list[judge.Check]:
    """The gates that count occurrences (no_new_errors, max_mismatch_rate) need a test even without
    `confidence`: at 0.99."""
    checks = []
    if g.no_new_errors:
        checks.append(judge.no_new_errors_check(new, legacy, THRESHOLD_ALPHA, extra.examples if extra else None))
    if g.max_mismatch_rate is not None:
        checks.append(judge.mismatch_check(extra.shadow if extra else None, g.max_mismatch_rate, THRESHOLD_ALPHA))
    return checks + list(extra.prometheus if extra else ())


def count_failure(g: Gates, new: Counts, legacy: Counts, extra: judge.Extra | None = None) -> str | None:
    """The count gates' failure, judged only with enough new traffic (threshold gates)."""
    if new.n < max(1, g.min_requests):
        return None
    failed = [c for c in count_checks(g, new, legacy, extra) if c.verdict == judge.FAIL]
    return judge.reason(failed) if failed else None


def gate_failure(g: Gates, new: Totals, legacy: Totals) -> str | None:
    """The first gate that fails, judged only with enough new traffic."""
    if new.requests < max(1, g.min_requests):
        return None
    for c in gate_checks(g, new, legacy)[1:]:
        if c["ok"] is False:
            said = f"{_SAYS[c['gate']]} {c['value']:g} > {c['threshold']:g}"
            if c["gate"] == "max_p95_ratio":
                said += f", {c['slower_ms']:g} ms slower than legacy (tolerance {c['tolerance_ms']:g} ms)"
            return said
    return None


def waiting_for(
    gates: Gates, new: Counts, legacy: Counts, elapsed: float, legacy_grows: bool, extra: judge.Extra | None = None
) -> list[dict[str, Any]]:
    """What each undecided gate waits for: the requests it needs on each side (at the rates and values
    seen since the step began) and about how long that takes; `says` is the operator's line."""
    shadow = extra.shadow if extra is not None and extra.shadow is not None else None
    compared = shadow.t.get("match", 0) + shadow.t.get("mismatch", 0) if shadow is not None else 0
    per_s = max(1.0, elapsed)
    rates = {"new": new.n / per_s, "legacy": legacy.n / per_s if legacy_grows else 0.0, "shadow": compared / per_s}
    has = {"new": new.n, "legacy": legacy.n, "shadow": compared}
    out = []
    if new.n < gates.min_requests:
        out.append(_needs("min_requests", {"new": gates.min_requests}, has, rates, ""))
    if gates.confidence is None:
        if gates.max_p95_ratio is not None and legacy.n < max(1, gates.min_requests):
            out.append(_needs("max_p95_ratio", {"legacy": max(1, gates.min_requests)}, has, rates, ""))
        return out
    at = f" at confidence {gates.confidence:g}"
    for c in judge.judge(gates, new, legacy, 1 - gates.confidence, extra):
        if c.verdict != judge.WAIT:
            continue
        factor = judge.growth_to_decide(gates, c.gate, new, legacy, legacy_grows, extra)
        if factor is None:
            est = "no value yet" if c.estimate is None else f"estimate {c.estimate:.4g} against {c.threshold:g}"
            says = f"{c.gate}: more of the same traffic would not decide it ({est}); it holds until that changes"
            if new.n == 0:
                says = f"{c.gate}: no requests of new yet"
            out.append({"gate": c.gate, "needs": None, "has": has, "eta_s": None, "says": says})
            continue
        sides = ("new", "legacy") if legacy_grows and c.gate in judge.RELATIVE else ("new",)
        if c.gate == "max_mismatch_rate":
            sides = ("shadow",)
        out.append(_needs(c.gate, {s: math.ceil(has[s] * factor) for s in sides}, has, rates, at))
    return out


def _needs(gate: str, need: dict[str, int], has: dict[str, int], rates: dict[str, float], at: str) -> dict[str, Any]:
    """One waiting gate: `need` requests per side against `has`, and the time that takes at `rates`."""
    short = {s: n - has[s] for s, n in need.items() if n > has[s]}
    eta = max((k / rates[s] if rates[s] > 0 else math.inf for s, k in short.items()), default=0.0)
    said = {s: f"{n} shadow comparisons" if s == "shadow" else f"{n} requests of {s}" for s, n in need.items()}
    sides = " and ".join(said.values())
    counts = ", ".join(f"{s} has {has[s]}" for s in need)
    when = "no traffic to get them at the moment" if math.isinf(eta) else f"about {eta:.0f} s at the current rate"
    says = f"{gate}: needs {sides}{at}; {counts} — {when}"
    return {"gate": gate, "needs": need, "has": has, "eta_s": None if math.isinf(eta) else round(eta, 1), "says": says}


def gate_views(
    gates: Gates, new_c: Counts, legacy_c: Counts, extra: judge.Extra | None = None
) -> tuple[list[dict[str, Any]], str]:
    """Each gate as the API shows it, and the verdict (wait below min_requests): judged with
    `confidence` (estimate, interval, p-value), else the raw value against its threshold."""
    new = new_c.totals()
    if gates.confidence is None:
        checks = gate_checks(gates, new, legacy_c.totals())
        for c in count_checks(gates, new_c, legacy_c, extra):
            decided = c.verdict != judge.WAIT and new.requests >= max(1, gates.min_requests)
            ok = c.verdict == judge.PASS if decided else None
            checks.append({"gate": c.gate, "value": c.estimate, "threshold": c.threshold, "ok": ok, "detail": c.detail})
        oks = [c["ok"] for c in checks]
        return checks, judge.FAIL if False in oks else judge.PASS if all(oks) else judge.WAIT
    judged, verdict = judge.at_confidence(gates, new_c, legacy_c, extra)
    enough = new.requests >= gates.min_requests
    floor = {"gate": "min_requests", "value": new.requests, "threshold": gates.min_requests, "ok": enough}
    return [floor, *(c.view() for c in judged)], verdict
