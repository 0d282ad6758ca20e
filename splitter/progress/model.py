"""The progress document (GET /admin/progress): per route its state, timeline, each step's evidence with
95 % intervals, incidents and summary line. Pure: no I/O, no clock."""

from __future__ import annotations

import math
from typing import Any

from .. import judge
from ..window import Counts
from .words import is_percent, summary_line

CONFIDENCE = 0.95
TAIL = (1 - CONFIDENCE) / 2  # two-sided: this much in each tail
RATIO_TAIL = (1 - math.sqrt(CONFIDENCE)) / 2  # each p95 interval of a ratio: both hold together at CONFIDENCE
DAY = 86400.0
STATES = {  # a rollout's status -> the state a stakeholder reads (baking, ready_to_retire, retired: #35's bake)
    "pending": "not started",
    "running": "running",
    "awaiting_approval": "running",
    "paused": "paused",
    "baking": "baking",
    "done": "done",
    "ready_to_retire": "ready to retire",
    "retired": "retired",
    "rolled_back": "rolled back",
    "aborted": "aborted",
}
INCIDENTS = {"rollback", "guard_trip", "rollout_rollback", "kill", "rollout_stalled"}


def build(
    environment: str,
    now: float,
    routes: list[dict[str, Any]],
    rollouts: dict[str, dict[str, Any]],
    steps: dict[str, list[dict[str, Any]]],
    history: list[dict[str, Any]],
) -> dict[str, Any]:
    """routes: GET /admin/routes; rollouts: route -> its GET /admin/rollouts view; steps: route -> its ended
    steps (rollout record `past_steps`) and the current one (`until` None), each with `counts`; history:
    GET /admin/history, newest first."""
    events = sorted(history, key=lambda e: e["at"])
    out = [route_progress(r, rollouts.get(r["name"]), steps.get(r["name"], []), events, now) for r in routes]
    return {"generated_at": now, "environment": environment, "confidence": CONFIDENCE, "routes": out}


def route_progress(
    route: dict[str, Any], rollout: dict[str, Any] | None, steps: list[dict[str, Any]], events: list[dict[str, Any]],
    now: float,
) -> dict[str, Any]:
    """One route: state, timeline, per-step evidence, incidents and the summary line."""
    name = route["name"]
    mine = [e for e in events if e.get("route") == name or (e["action"] == "kill" and e.get("route") is None)]
    timeline = _timeline([e for e in mine if is_percent(e.get("new")) and e.get("old") != e.get("new")], now)
    retired = any(e["action"] == "retire" and e.get("route") == name for e in mine)
    view: dict[str, Any] = {
        "route": name,
        "state": "retired" if retired else _state(route, rollout),
        "percent": route["percent"],
        "file_percent": route["file_percent"],
        "source": route["source"],
        "since": timeline[-1]["at"] if timeline else None,
        "steps_planned": rollout["steps"] if rollout else None,
        "timeline": timeline,
        "steps": [_step(s, now) for s in steps],
        "incidents": [_incident(e) for e in mine if e["action"] in INCIDENTS],
    }
    view["summary"] = summary_line(view)
    return view


def _state(route: dict[str, Any], rollout: dict[str, Any] | None) -> str:
    if route.get("ready_to_retire"):  # the route's own view says it (GET /admin/routes): legacy quiet long enough
        return "ready to retire"
    if rollout is not None:
        status = str(rollout.get("status") or "pending")
        return STATES.get(status, status.replace("_", " "))
    pct = route["percent"]
    return "not started" if pct == 0 else "done" if pct == 100 else "running"


def _timeline(changes: list[dict[str, Any]], now: float) -> list[dict[str, Any]]:
    """Each change of the percent, with how long the route then stayed at it."""
    out = []
    for i, e in enumerate(changes):
        until = changes[i + 1]["at"] if i + 1 < len(changes) else now
        out.append({
            "at": e["at"], "from": e.get("old"), "percent": e["new"], "who": e["who"], "source": e["source"],
            "action": e["action"], "why": e.get("reason") or "", "days": round((until - e["at"]) / DAY, 3),
        })
    return out


def _incident(e: dict[str, Any]) -> dict[str, Any]:
    kind = {"kill": "kill switch " + ("on" if e.get("new") else "off"), "guard_trip": "guard trip",
            "rollout_rollback": "rollout rolled back", "rollback": "rolled back by hand",
            "rollout_stalled": "rollout stalled"}[e["action"]]
    return {"at": e["at"], "kind": kind, "who": e["who"], "why": e.get("reason") or ""}


def _step(s: dict[str, Any], now: float) -> dict[str, Any]:
    """One step's numbers: each side's error rate and p95 with intervals, and new against legacy."""
    counts = s.get("counts") or {}
    new, legacy = _counts(counts.get("new")), _counts(counts.get("legacy"))
    until = s.get("until")
    out = {
        "percent": s["percent"], "bake": bool(s.get("bake")), "since": s["since"], "until": until,
        "days": round(((until if until is not None else now) - s["since"]) / DAY, 3),
        "verdict": s.get("verdict"), "gates": s.get("gates") or [],
        "new": side(new), "legacy": side(legacy),
        "p95_change": p95_change(new, legacy), "error_rate_change": error_rate_change(new, legacy),
    }
    return out


def _counts(fields: dict[str, Any] | None) -> Counts:
    return Counts.from_fields({k: str(v) for k, v in (fields or {}).items()})


def _r(x: float | None, digits: int = 6) -> float | None:
    """None for no value and for an open interval end: JSON has no Infinity (strictjson)."""
    return round(x, digits) if x is not None and math.isfinite(x) else None


def side(c: Counts) -> dict[str, Any]:
    """Requests, errors, error rate and p95 with their 95 % intervals."""
    if c.n == 0:
        return {"requests": 0, "errors": 0, "error_rate": None, "error_rate_ci": None, "p95_ms": None,
                "p95_ci_ms": None}
    low, high = judge.proportion_bounds(c.e, c.n, TAIL)
    p95, p_low, p_high = judge.quantile_bounds(c, 0.95, TAIL)
    return {
        "requests": c.n, "errors": c.e, "error_rate": _r(c.e / c.n), "error_rate_ci": [_r(low), _r(high)],
        "p95_ms": _r(p95, 3), "p95_ci_ms": [_r(p_low, 3), _r(p_high, 3)],
    }


def p95_change(new: Counts, legacy: Counts) -> dict[str, Any] | None:
    """new's p95 relative to legacy's (-0.12: 12 % lower on new) with its 95 % interval (None: open)."""
    est_n, low_n, high_n = judge.quantile_bounds(new, 0.95, RATIO_TAIL)
    est_l, low_l, high_l = judge.quantile_bounds(legacy, 0.95, RATIO_TAIL)
    if est_n is None or not est_l:
        return None
    low = low_n / high_l - 1 if math.isfinite(high_l) and high_l > 0 else -1.0
    high = high_n / low_l - 1 if low_l > 0 else math.inf
    return {"estimate": _r(est_n / est_l - 1), "interval": [_r(low), _r(high)]}


def error_rate_change(new: Counts, legacy: Counts) -> dict[str, Any] | None:
    """new's error rate minus legacy's (a fraction: 0.001 is 0.1 points) with its 95 % interval."""
    if new.n == 0 or legacy.n == 0:
        return None
    c = judge.error_increase_check(new, legacy, 0.0, TAIL)
    return {"estimate": _r(c.estimate), "interval": [_r(c.low), _r(c.high)]}


# --- Prometheus (`splitter progress --prometheus URL --since 30d`) ---------------------------------------
MIN_SPAN_S = 1.0  # shorter spans hold no two scrapes: increase() has nothing to say about them


def segments(view: dict[str, Any], since_s: float, now: float) -> list[tuple[float, float, float]]:
    """(percent, start, end) of each percent the route held in the last since_s seconds, clipped to them:
    the spans Prometheus is asked about when the rollout records have no steps (a route moved by hand)."""
    start = now - since_s
    timeline = view["timeline"]
    spans = [(t["percent"], t["at"], timeline[i + 1]["at"] if i + 1 < len(timeline) else now)
             for i, t in enumerate(timeline)] or [(view["percent"], start, now)]
    before = [sp for sp in spans if sp[1] <= start]
    if timeline and not before:  # the window opens before the first recorded change: the percent before it
        first_from = timeline[0]["from"]
        spans.insert(0, (first_from if is_percent(first_from) else 0, start, timeline[0]["at"]))
    clipped = [(p, max(a, start), b) for p, a, b in spans if b > start]
    return [(p, a, b) for p, a, b in clipped if b - a >= MIN_SPAN_S and p != 0]  # at 0 % new has nothing


def prometheus_step(percent: float, since: float, until: float, legacy: Any, new: Any, now: float) -> dict[str, Any]:
    """A step read from Prometheus (report.Side: counts and cumulative buckets over the span), in the shape
    of _step(): error rates and p95 with 95 % intervals, the p95 ratio from both intervals at sqrt(0.95)."""
    from .. import report

    def view(sd: Any) -> dict[str, Any]:
        v = sd.view()
        keys = ("requests", "errors", "error_rate", "error_rate_ci", "p95_ms", "p95_ci_ms")
        return {k: v[k] for k in keys}

    ratio = report.p95_ratio(legacy, new)
    change = None
    if ratio is not None:
        est, low, high = ratio
        change = {"estimate": _r(est - 1), "interval": [-1.0 if low is None else _r(low - 1),
                                                        None if high is None else _r(high - 1)]}
    n, o = Counts(), Counts()
    n.n, n.e, o.n, o.e = round(new.requests), round(new.errors), round(legacy.requests), round(legacy.errors)
    return {
        "percent": percent, "bake": False, "since": since, "until": until if until < now else None,
        "days": round((until - since) / DAY, 3), "verdict": None, "gates": [], "evidence": "prometheus",
        "new": view(new), "legacy": view(legacy), "p95_change": change, "error_rate_change": error_rate_change(n, o),
    }


def with_steps(view: dict[str, Any], steps: list[dict[str, Any]]) -> None:
    """Give a route without rollout steps the steps read elsewhere (Prometheus), and its summary again."""
    view["steps"] = steps
    view["summary"] = summary_line(view)
