"""A migration's progress for the people who asked for it: per route, where it stands, how it got there,
and how new compared with legacy at each step, in the migration plan's words.

    GET /admin/progress   build(): the JSON (admin.py gathers its inputs)
    splitter progress     text(), markdown(), html() of that JSON (cli.py asks the admin API)

Inputs are what the admin API already holds: the change history (who moved a route, when and why),
the rollout records (each ended step's counts, rollout.keep_step, and the current step's) and the
routes' live state. Each step's numbers come with 95 % intervals from the judge's own statistics
(judge.py): Clopper-Pearson for error rates, order statistics for p95, the p95 ratio from both p95
intervals each at sqrt(0.95) (they hold together at 0.95), Newcombe for the error-rate difference;
a change is called lower or higher only when its whole interval says so. Pure: no I/O, no clock.
"""

from __future__ import annotations

import html as html_mod
import math
import time
from typing import Any

from . import judge
from .text import terminal
from .window import Counts

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
    timeline = _timeline([e for e in mine if _is_percent(e.get("new")) and e.get("old") != e.get("new")], now)
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


def _is_percent(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


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
        spans.insert(0, (first_from if _is_percent(first_from) else 0, start, timeline[0]["at"]))
    clipped = [(p, max(a, start), b) for p, a, b in spans if b > start]
    return [(p, a, b) for p, a, b in clipped if b - a >= MIN_SPAN_S and p != 0]  # at 0 % new has nothing


def prometheus_step(percent: float, since: float, until: float, legacy: Any, new: Any, now: float) -> dict[str, Any]:
    """A step read from Prometheus (report.Side: counts and cumulative buckets over the span), in the shape
    of _step(): error rates and p95 with 95 % intervals, the p95 ratio from both intervals at sqrt(0.95)."""
    from . import report

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


# --- words --------------------------------------------------------------------------------------------------
def date(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d", time.gmtime(at))


def when(at: float | None) -> str:
    return "-" if at is None else time.strftime("%Y-%m-%d %H:%M", time.gmtime(at)) + " UTC"


def pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x * 100:.{digits}f} %"


def _num(x: float) -> str:
    return f"{x:g}"


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
    name, state, at, since = view["route"], view["state"], _num(view["percent"]), date(view.get("since"))
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
        of = f", plan {' → '.join(_num(p) for p in plan)}" if plan else ""
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


def _rate_cell(v: dict[str, Any]) -> str:
    if v["error_rate"] is None:
        return "-"
    low, high = v["error_rate_ci"]
    return f"{pct(v['error_rate'], 3)} ({pct(low, 3)}–{pct(high, 3)})"


def _p95_cell(v: dict[str, Any]) -> str:
    if v["p95_ms"] is None:
        return "-"
    low, high = v["p95_ci_ms"]
    return f"{v['p95_ms']:.1f} ms ({low:.1f}–{'∞' if high is None else f'{high:.1f}'})"


def _who(e: dict[str, Any]) -> str:
    return e["who"] if e["who"] == e["source"] else f"{e['who']} ({e['source']})"


def _moved(t: dict[str, Any]) -> str:
    return f"{_num(t['from'])} → {_num(t['percent'])} %" if _is_percent(t["from"]) else f"{_num(t['percent'])} %"


def _gates(s: dict[str, Any]) -> str:
    """The step's gates as judged when it ended: name and verdict (or ok), e.g. 'max_error_rate pass'."""
    out = []
    for g in s["gates"]:
        verdict = g.get("verdict") or {True: "pass", False: "fail", None: "wait"}[g.get("ok")]
        out.append(f"{g['gate']} {verdict}")
    return ", ".join(out)


def text(doc: dict[str, Any]) -> str:
    """For a terminal: each route's story, then the summary lines."""
    lines = [f"migration progress, environment {doc['environment']}, {when(doc['generated_at'])}"]
    for r in doc["routes"]:
        lines += ["", r["summary"], f"  state: {r['state']} ({_num(r['percent'])} % on new, routes.yaml "
                  f"{_num(r['file_percent'])} %, source {r['source']})"]
        lines += ["  timeline:"] + [
            f"    {when(t['at'])}  {_moved(t):<14} {t['days']:>6.2f} days  {_who(t)}: {t['why'] or t['action']}"
            for t in r["timeline"]
        ] if r["timeline"] else ["  timeline: no change recorded"]
        for s in r["steps"]:
            ongoing = (" (bake)" if s["bake"] else "") + (" (current)" if s["until"] is None else "")
            lines.append(f"  step {_num(s['percent'])} % for {s['days']:.2f} days{ongoing}: {s['verdict'] or '-'}"
                         f"  new {s['new']['requests']} / legacy {s['legacy']['requests']} requests")
            lines.append(f"    error rate: new {_rate_cell(s['new'])}, legacy {_rate_cell(s['legacy'])}")
            lines.append(f"    p95: new {_p95_cell(s['new'])}, legacy {_p95_cell(s['legacy'])}")
            lines.append(f"    {said_p95(s['p95_change'])}; {said_errors(s)}")
            lines += [f"    gates: {_gates(s)}"] if s["gates"] else []
            lines += ["    (from Prometheus)"] if s.get("evidence") == "prometheus" else []
        lines += [f"  incident {when(i['at'])}: {i['kind']} by {i['who']}" + (f": {i['why']}" if i["why"] else "")
                  for i in r["incidents"]]
    lines += ["", "summary:"] + [f"  {r['summary']}" for r in doc["routes"]]
    return "\n".join(terminal(line) for line in lines)  # names and reasons are text from outside (text.py)


def _source(r: dict[str, Any]) -> str:
    if any(s.get("evidence") == "prometheus" for s in r["steps"]):
        return " Steps read from Prometheus: each percent's span, cohort requests left out."
    return ""


def _md(v: Any) -> str:
    """A table cell: no line break, no column break, nothing a chat renders as markup it was not meant as."""
    return terminal(str(v)).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def markdown(doc: dict[str, Any]) -> str:
    """For a wiki page or a chat message: a section per route, tables, the summary at the end."""
    out = [f"# Migration progress — {_md(doc['environment'])}, {when(doc['generated_at'])}", ""]
    for r in doc["routes"]:
        out += [f"## {_md(r['route'])}: {r['state']}", "", f"**{_md(r['summary'])}**", ""]
        if r["timeline"]:
            out += ["| date | percent | who | why | days at it |", "|---|---|---|---|---:|"]
            out += [f"| {when(t['at'])} | {_moved(t)} | {_md(_who(t))} | {_md(t['why'] or t['action'])} | "
                    f"{t['days']:.2f} |" for t in r["timeline"]]
            out.append("")
        if r["steps"]:
            out += ["| step | days | requests new / legacy | errors new | errors legacy | p95 new | p95 legacy | "
                    "new vs legacy | verdict |", "|---:|---:|---|---|---|---|---|---|---|"]
            for s in r["steps"]:
                cur = (" (bake)" if s["bake"] else "") + (" (current)" if s["until"] is None else "")
                out.append(
                    f"| {_num(s['percent'])} %{cur} | {s['days']:.2f} | {s['new']['requests']} / "
                    f"{s['legacy']['requests']} | {_rate_cell(s['new'])} | {_rate_cell(s['legacy'])} | "
                    f"{_p95_cell(s['new'])} | {_p95_cell(s['legacy'])} | {_md(said_p95(s['p95_change']))} | "
                    f"{_md(s['verdict'] or '-')} |"
                )
            out += ["", f"Intervals are {doc['confidence']:.0%} confidence intervals.{_source(r)}", ""]
        if r["incidents"]:
            out += ["Incidents:", ""] + [
                f"- {when(i['at'])}: {i['kind']} by {_md(i['who'])}" + (f" — {_md(i['why'])}" if i["why"] else "")
                for i in r["incidents"]
            ] + [""]
    out += ["## Summary", ""] + [f"- {_md(r['summary'])}" for r in doc["routes"]]
    return "\n".join(out) + "\n"


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#1f2933;background:#f5f7fa;margin:0}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px}
.sub{color:#616e7c;margin:0 0 20px}
section{background:#fff;border:1px solid #e4e7eb;border-radius:8px;padding:18px 20px;margin:0 0 18px}
h2{font-size:18px;margin:0;display:flex;gap:10px;align-items:center}
.badge{font-size:12px;font-weight:600;padding:2px 8px;border-radius:10px;background:#e4e7eb;color:#323f4b}
.badge.done,.badge.ready,.badge.retired{background:#d1fae5;color:#065f46}
.badge.running,.badge.baking{background:#dbeafe;color:#1e40af}
.badge.rolled,.badge.aborted,.badge.paused{background:#fee2e2;color:#991b1b}
.summary{font-weight:600;margin:8px 0 12px}
.bar{height:8px;background:#e4e7eb;border-radius:4px;overflow:hidden;margin:0 0 14px}
.bar span{display:block;height:100%;background:#3b82f6}
table{border-collapse:collapse;width:100%;margin:6px 0 14px;font-size:13px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e4e7eb;vertical-align:top}
th{color:#616e7c;font-weight:600;background:#f9fafb}
td.n{text-align:right;white-space:nowrap}
.better{color:#047857}.worse{color:#b91c1c}.same{color:#616e7c}
h3{font-size:14px;margin:10px 0 2px;color:#323f4b}
ul{margin:4px 0 0;padding-left:20px}
.note{color:#616e7c;font-size:12px}
.ci{color:#7b8794;font-size:12px;white-space:nowrap}
.axis{font-size:10px;fill:#616e7c}
svg{display:block;margin:0 0 8px}
"""


def _h(v: Any) -> str:
    return html_mod.escape(str(v))


def _html_rate(v: dict[str, Any]) -> str:
    if v["error_rate"] is None:
        return "-"
    low, high = v["error_rate_ci"]
    return f"{_h(pct(v['error_rate'], 3))}<br><span class=ci>{_h(pct(low, 3))} – {_h(pct(high, 3))}</span>"


def _html_p95(v: dict[str, Any]) -> str:
    if v["p95_ms"] is None:
        return "-"
    low, high = v["p95_ci_ms"]
    return f"{v['p95_ms']:.1f} ms<br><span class=ci>{low:.1f} – {'∞' if high is None else f'{high:.1f}'} ms</span>"


def _tone(change: dict[str, Any] | None) -> str:
    if change is None:
        return "same"
    low, high = change["interval"]
    return "worse" if low is not None and low > 0 else "better" if high is not None and high < 0 else "same"


def _chart(r: dict[str, Any], now: float) -> str:
    """The percent over time as a step line: the timeline at a glance."""
    points = r["timeline"]
    if not points:
        return ""
    start, w, h = float(points[0]["at"]), 1000, 84
    span = max(now - start, 1.0)

    def x(at: float) -> float:
        return round(40 + (at - start) / span * (w - 50), 1)

    def y(p: float) -> float:
        return round(6 + (100 - p) / 100 * (h - 26), 1)

    path, prev = [], None
    for t in points:
        if prev is not None:
            path.append(f"L{x(t['at'])},{y(prev)}")
        path.append(f"{'M' if prev is None else 'L'}{x(t['at'])},{y(t['percent'])}")
        prev = t["percent"]
    path.append(f"L{x(now)},{y(prev or 0)}")
    shade = "".join(
        f'<rect x="{x(a)}" y="{y(100)}" width="{max(2.0, x(b) - x(a))}" height="{y(0) - y(100)}" fill="#fee2e2">'
        f"<title>kill switch on</title></rect>"
        for a, b in _kill_spans(r["incidents"], now) if a >= start
    )
    dates = (f'<text class=axis x="40" y="{h - 1}">{_h(date(start))}</text>'
             f'<text class=axis x="{w - 10}" y="{h - 1}" text-anchor="end">now</text>')
    marks = "".join(f'<circle cx="{x(t["at"])}" cy="{y(t["percent"])}" r="3" fill="#1e40af"/>' for t in points)
    axis = (f'<text x="0" y="{y(100) + 4}" font-size="10" fill="#616e7c">100 %</text>'
            f'<text x="0" y="{y(0) + 4}" font-size="10" fill="#616e7c">0 %</text>'
            f'<line x1="40" x2="{w - 10}" y1="{y(0)}" y2="{y(0)}" stroke="#e4e7eb"/>'
            f'<line x1="40" x2="{w - 10}" y1="{y(100)}" y2="{y(100)}" stroke="#e4e7eb"/>')
    return (f'<svg viewBox="0 0 {w} {h}" width="100%" height="{h}" role="img" aria-label="percent on new over time">'
            f'{shade}{axis}{dates}<path d="{" ".join(path)}" fill="none" stroke="#3b82f6" stroke-width="2"/>'
            f"{marks}</svg>")


def _kill_spans(incidents: list[dict[str, Any]], now: float) -> list[tuple[float, float]]:
    """(on, off) of each time the kill switch was on: everything went to legacy then."""
    spans, on = [], None
    for i in incidents:
        if i["kind"] == "kill switch on" and on is None:
            on = i["at"]
        elif i["kind"] == "kill switch off" and on is not None:
            spans.append((on, i["at"]))
            on = None
    return spans + ([(on, now)] if on is not None else [])


def _html_route(r: dict[str, Any], doc: dict[str, Any]) -> list[str]:
    badge = r["state"].split()[0]
    out = [f'<section id="route-{_h(r["route"])}">',
           f'<h2>{_h(r["route"])} <span class="badge {_h(badge)}">{_h(r["state"])}</span></h2>',
           f'<p class="summary">{_h(r["summary"])}</p>',
           f'<div class="bar" title="{_h(_num(r["percent"]))} % on new"><span style="width:{float(r["percent"]):g}%">'
           "</span></div>", _chart(r, doc["generated_at"])]
    if r["timeline"]:
        out += ["<h3>Timeline</h3><table><tr><th>date</th><th>percent</th><th>who</th><th>why</th>"
                "<th>days at it</th></tr>"]
        out += [f"<tr><td>{_h(when(t['at']))}</td><td>{_h(_moved(t))}</td><td>{_h(_who(t))}</td>"
                f"<td>{_h(t['why'] or t['action'])}</td><td class=n>{t['days']:.2f}</td></tr>" for t in r["timeline"]]
        out.append("</table>")
    if r["steps"]:
        out += ["<h3>New vs legacy at each step</h3><table><tr><th>step</th><th>days</th><th>requests new / legacy"
                "</th><th>errors new</th><th>errors legacy</th><th>p95 new</th><th>p95 legacy</th>"
                "<th>new vs legacy</th><th>gates</th></tr>"]
        for s in r["steps"]:
            cur = (" (bake)" if s["bake"] else "") + (" (current)" if s["until"] is None else "")
            out.append(
                f"<tr><td class=n>{_h(_num(s['percent']))} %{cur}</td><td class=n>{s['days']:.2f}</td>"
                f"<td class=n>{s['new']['requests']} / {s['legacy']['requests']}</td>"
                f"<td>{_html_rate(s['new'])}</td><td>{_html_rate(s['legacy'])}</td>"
                f"<td>{_html_p95(s['new'])}</td><td>{_html_p95(s['legacy'])}</td>"
                f'<td class="{_tone(s["p95_change"])}">{_h(said_p95(s["p95_change"]))}</td>'
                f"<td>{_h(s['verdict'] or '-')}<br><span class=note>{_h(_gates(s))}</span></td></tr>"
            )
        out.append(f'</table><p class="note">Under each value: its {doc["confidence"]:.0%} confidence interval. '
                   f"New is called faster or slower only when the whole interval of the difference says so.{_source(r)}"
                   "</p>")
    if r["incidents"]:
        out += ["<h3>Incidents</h3><ul>"] + [
            f"<li>{_h(when(i['at']))}: <b>{_h(i['kind'])}</b> by {_h(i['who'])}"
            + (f" — {_h(i['why'])}" if i["why"] else "") + "</li>" for i in r["incidents"]
        ] + ["</ul>"]
    return [*out, "</section>"]


def html(doc: dict[str, Any]) -> str:
    """One self-contained page (inline CSS and SVG, nothing fetched): to attach, mail or open from disk."""
    body = [f"<h1>Migration progress</h1><p class=sub>environment {_h(doc['environment'])}, "
            f"{_h(when(doc['generated_at']))}</p>",
            "<section><h2>Summary</h2><ul>" + "".join(f"<li>{_h(r['summary'])}</li>" for r in doc["routes"])
            + "</ul></section>"]
    for r in doc["routes"]:
        body += _html_route(r, doc)
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>Migration progress</title>"
            f"<style>{_CSS}</style></head><body><main>{''.join(body)}</main></body></html>\n")
