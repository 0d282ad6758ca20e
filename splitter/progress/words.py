"""How the migration's progress is said, in the plan's words: dates, percents, each step's comparison of new
with legacy said only as far as its interval goes, the summary line, and the cells every renderer shares."""

from __future__ import annotations

import time
from typing import Any


def is_percent(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


# --- words --------------------------------------------------------------------------------------------------
def date(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d", time.gmtime(at))


def when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(at)) + " UTC"


def pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x * 100:.{digits}f} %"


def num(x: float) -> str:
    return f"{x:g}"


def step_said(s: dict[str, Any]) -> str:
    """A step as its row names it: `50 %`, `100 % (bake)`, `25 % (current)`."""
    return f"{num(s['percent'])} %" + (" (bake)" if s["bake"] else "") + (" (current)" if s["until"] is None else "")


def said_p95(change: dict[str, Any] | None) -> str:
    """'p95 12 % lower on new, 95 % CI 9–15 %'; 'not shown' when the interval holds no change."""
    if change is None:
        return "p95: no comparison (a side has no requests)"
    est, (low, high) = change["estimate"], change["interval"]
    if low is not None and low > 0:
        return f"p95 {est * 100:.0f} % higher on new, 95 % CI {low * 100:.0f}–{_open(high)} %"
    if high is not None and high < 0:
        return f"p95 {-est * 100:.0f} % lower on new, 95 % CI {-high * 100:.0f}–{-(low or -1) * 100:.0f} %"
    return f"p95 {_signed(est)} on new, not shown different (95 % CI {_signed(low)} to {_signed(high)})"


def _open(x: float | None) -> str:
    return "∞" if x is None else f"{x * 100:.0f}"


def _signed(x: float | None) -> str:
    if x is None:
        return "+∞"
    return f"{'−' if x < 0 else '+'}{abs(x) * 100:.0f} %"


def said_errors(step: dict[str, Any]) -> str:
    new, legacy = step["new"], step["legacy"]
    if new["error_rate"] is None or legacy["error_rate"] is None:
        return "errors: no comparison (a side has no requests)"
    ci = step["error_rate_change"]["interval"]
    return (f"errors {pct(new['error_rate'], 3)} on new vs {pct(legacy['error_rate'], 3)} on legacy "
            f"(difference 95 % CI {_points(ci[0])} to {_points(ci[1])} points)")


def _points(x: float | None) -> str:
    return "?" if x is None else f"{'−' if x < 0 else '+'}{abs(x) * 100:.3f}"


def summary_line(view: dict[str, Any]) -> str:
    """One line in the migration plan's words, from a route's progress (route_progress()): where it stands
    and how new compares with legacy on the latest step both served. For the done / ready_to_retire
    notifications too: 'auth: migrated, 100 % on new since 2026-12-03; p95 −12 %, errors 0.02 % vs 0.03 %'."""
    name, state, at, since = view["route"], view["state"], num(view["percent"]), date(view.get("since"))
    if state in ("done", "ready to retire", "retired", "baking") and view["percent"] == 100:
        head = {"done": "migrated", "ready to retire": "migrated, ready to retire", "retired": "migrated and retired",
                "baking": "baking"}[state]
        line = f"{name}: {head}, 100 % on new since {since}"
    elif state == "not started":
        line = f"{name}: not started, {at} % on new"
    elif state in ("rolled back", "aborted"):
        why = next((i["why"] for i in reversed(view["incidents"]) if i["why"]), "")
        line = f"{name}: {state}, {at} % on new since {since}" + (f" ({why})" if why else "")
    else:
        plan = view.get("steps_planned")
        of = f", plan {' → '.join(num(p) for p in plan)}" if plan else ""
        line = f"{name}: {state}, {at} % on new since {since}{of}"
    compared = next((s for s in reversed(view["steps"]) if s["new"]["requests"] and s["legacy"]["requests"]), None)
    if compared is None:
        return line
    change, new, legacy = compared["p95_change"], compared["new"], compared["legacy"]
    p95 = f"p95 {_signed(change['estimate'])}" if change else "p95 -"
    if change and _crosses_zero(change["interval"]):  # said only as far as its interval goes
        p95 = f"p95 {_signed(change['estimate'])} (not shown different)"
    return f"{line}; {p95}, errors {pct(new['error_rate'])} vs {pct(legacy['error_rate'])}"


def _crosses_zero(interval: list[float | None]) -> bool:
    low, high = interval
    return (low is None or low <= 0) and (high is None or high >= 0)


def rate_said(v: dict[str, Any]) -> tuple[str, str, str] | None:
    """A side's error rate and its interval's ends, as every renderer says them; None without requests."""
    if v["error_rate"] is None:
        return None
    low, high = v["error_rate_ci"]
    return pct(v["error_rate"], 3), pct(low, 3), pct(high, 3)


def p95_said(v: dict[str, Any]) -> tuple[str, str, str] | None:
    """A side's p95 (ms) and its interval's ends (∞: no upper bound yet); None without requests."""
    if v["p95_ms"] is None:
        return None
    low, high = v["p95_ci_ms"]
    return f"{v['p95_ms']:.1f}", f"{low:.1f}", "∞" if high is None else f"{high:.1f}"


def cell(said: tuple[str, str, str] | None, unit: str = "") -> str:
    """A value and its interval for a terminal or a table: '12.3 ms (10.0–14.1)'; '-' without requests."""
    return "-" if said is None else f"{said[0]}{unit} ({said[1]}–{said[2]})"


def rate_cell(v: dict[str, Any]) -> str:
    return cell(rate_said(v))


def p95_cell(v: dict[str, Any]) -> str:
    return cell(p95_said(v), " ms")


def who_did(e: dict[str, Any]) -> str:
    return e["who"] if e["who"] == e["source"] else f"{e['who']} ({e['source']})"


def moved(t: dict[str, Any]) -> str:
    return f"{num(t['from'])} → {num(t['percent'])} %" if is_percent(t["from"]) else f"{num(t['percent'])} %"


def gates_line(s: dict[str, Any]) -> str:
    """The step's gates as judged when it ended: name and verdict (or ok), e.g. 'max_error_rate pass'."""
    out = []
    for g in s["gates"]:
        verdict = g.get("verdict") or {True: "pass", False: "fail", None: "wait"}[g.get("ok")]
        out.append(f"{g['gate']} {verdict}")
    return ", ".join(out)


def source_note(r: dict[str, Any]) -> str:
    if any(s.get("evidence") == "prometheus" for s in r["steps"]):
        return " Steps read from Prometheus: each percent's span, cohort requests left out."
    return ""
