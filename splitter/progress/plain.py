"""The progress document for a terminal (`text`) and for a wiki page or a chat message (`markdown`)."""

from __future__ import annotations

from typing import Any

from ..text import terminal
from .words import (
    gates_line,
    moved,
    num,
    p95_cell,
    rate_cell,
    said_errors,
    said_p95,
    source_note,
    step_said,
    when,
    who_did,
)


def text(doc: dict[str, Any]) -> str:
    """For a terminal: each route's story, then the summary lines."""
    lines = [f"migration progress, environment {doc['environment']}, {when(doc['generated_at'])}"]
    for r in doc["routes"]:
        lines += ["", r["summary"], f"  state: {r['state']} ({num(r['percent'])} % on new, routes.yaml "
                  f"{num(r['file_percent'])} %, source {r['source']})"]
        lines += ["  timeline:"] + [
            f"    {when(t['at'])}  {moved(t):<14} {t['days']:>6.2f} days  {who_did(t)}: {t['why'] or t['action']}"
            for t in r["timeline"]
        ] if r["timeline"] else ["  timeline: no change recorded"]
        for s in r["steps"]:
            ongoing = (" (bake)" if s["bake"] else "") + (" (current)" if s["until"] is None else "")
            lines.append(f"  step {num(s['percent'])} % for {s['days']:.2f} days{ongoing}: {s['verdict'] or '-'}"
                         f"  new {s['new']['requests']} / legacy {s['legacy']['requests']} requests")
            lines.append(f"    error rate: new {rate_cell(s['new'])}, legacy {rate_cell(s['legacy'])}")
            lines.append(f"    p95: new {p95_cell(s['new'])}, legacy {p95_cell(s['legacy'])}")
            lines.append(f"    {said_p95(s['p95_change'])}; {said_errors(s)}")
            lines += [f"    gates: {gates_line(s)}"] if s["gates"] else []
            lines += ["    (from Prometheus)"] if s.get("evidence") == "prometheus" else []
        lines += [f"  incident {when(i['at'])}: {i['kind']} by {i['who']}" + (f": {i['why']}" if i["why"] else "")
                  for i in r["incidents"]]
    lines += ["", "summary:"] + [f"  {r['summary']}" for r in doc["routes"]]
    return "\n".join(terminal(line) for line in lines)  # names and reasons are text from outside (text.py)


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
            out += [f"| {when(t['at'])} | {moved(t)} | {_md(who_did(t))} | {_md(t['why'] or t['action'])} | "
                    f"{t['days']:.2f} |" for t in r["timeline"]]
            out.append("")
        if r["steps"]:
            out += ["| step | days | requests new / legacy | errors new | errors legacy | p95 new | p95 legacy | "
                    "new vs legacy | verdict |", "|---:|---:|---|---|---|---|---|---|---|"]
            for s in r["steps"]:
                out.append(
                    f"| {step_said(s)} | {s['days']:.2f} | {s['new']['requests']} / "
                    f"{s['legacy']['requests']} | {rate_cell(s['new'])} | {rate_cell(s['legacy'])} | "
                    f"{p95_cell(s['new'])} | {p95_cell(s['legacy'])} | {_md(said_p95(s['p95_change']))} | "
                    f"{_md(s['verdict'] or '-')} |"
                )
            out += ["", f"Intervals are {doc['confidence']:.0%} confidence intervals.{source_note(r)}", ""]
        if r["incidents"]:
            out += ["Incidents:", ""] + [
                f"- {when(i['at'])}: {i['kind']} by {_md(i['who'])}" + (f" — {_md(i['why'])}" if i["why"] else "")
                for i in r["incidents"]
            ] + [""]
    out += ["## Summary", ""] + [f"- {_md(r['summary'])}" for r in doc["routes"]]
    return "\n".join(out) + "\n"
