"""The progress document as one self-contained HTML page (`splitter progress --format html`): a section per
route with its percent over time, each step's evidence and the incidents; no script; text from outside escaped."""

from __future__ import annotations

import html as html_mod
from typing import Any

from .words import date, gates_line, moved, num, p95_said, rate_said, said_p95, source_note, step_said, when, who_did

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


def _html_cell(said: tuple[str, str, str] | None, unit: str = "") -> str:
    """A value over its interval, on two lines; '-' without requests."""
    if said is None:
        return "-"
    value, low, high = (_h(x) for x in said)
    return f"{value}{unit}<br><span class=ci>{low} – {high}{unit}</span>"


def _html_rate(v: dict[str, Any]) -> str:
    return _html_cell(rate_said(v))


def _html_p95(v: dict[str, Any]) -> str:
    return _html_cell(p95_said(v), " ms")


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
           f'<div class="bar" title="{_h(num(r["percent"]))} % on new"><span style="width:{float(r["percent"]):g}%">'
           "</span></div>", _chart(r, doc["generated_at"])]
    if r["timeline"]:
        out += ["<h3>Timeline</h3><table><tr><th>date</th><th>percent</th><th>who</th><th>why</th>"
                "<th>days at it</th></tr>"]
        out += [f"<tr><td>{_h(when(t['at']))}</td><td>{_h(moved(t))}</td><td>{_h(who_did(t))}</td>"
                f"<td>{_h(t['why'] or t['action'])}</td><td class=n>{t['days']:.2f}</td></tr>" for t in r["timeline"]]
        out.append("</table>")
    if r["steps"]:
        out += ["<h3>New vs legacy at each step</h3><table><tr><th>step</th><th>days</th><th>requests new / legacy"
                "</th><th>errors new</th><th>errors legacy</th><th>p95 new</th><th>p95 legacy</th>"
                "<th>new vs legacy</th><th>gates</th></tr>"]
        for s in r["steps"]:
            out.append(
                f"<tr><td class=n>{_h(step_said(s))}</td><td class=n>{s['days']:.2f}</td>"
                f"<td class=n>{s['new']['requests']} / {s['legacy']['requests']}</td>"
                f"<td>{_html_rate(s['new'])}</td><td>{_html_rate(s['legacy'])}</td>"
                f"<td>{_html_p95(s['new'])}</td><td>{_html_p95(s['legacy'])}</td>"
                f'<td class="{_tone(s["p95_change"])}">{_h(said_p95(s["p95_change"]))}</td>'
                f"<td>{_h(s['verdict'] or '-')}<br><span class=note>{_h(gates_line(s))}</span></td></tr>"
            )
        out.append(f'</table><p class="note">Under each value: its {doc["confidence"]:.0%} confidence interval. '
                   "New is called faster or slower only when the whole interval of the difference says so."
                   f"{source_note(r)}"
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
