"""Old vs new told to people: report (the migration plan's criteria, exit 3/4) and progress (per
route: state, timeline, steps), from the admin API or Prometheus."""

from __future__ import annotations

import argparse
import re
import sys
from typing import Any

from .client import _admin, _known_route, _prometheus, admin_url, http_url
from .common import Transient, fail, say, usage


def cmd_progress(args: argparse.Namespace) -> int:
    """GET /admin/progress rendered for people: text, markdown (a wiki, a chat), json, html (one page)."""
    from urllib.parse import quote

    from .. import progress, strictjson

    doc = _admin(args, "GET", "/admin/progress" + (f"?route={quote(args.route, safe='')}" if args.route else ""))
    if args.prometheus:
        _progress_from_prometheus(args, doc)
    elif args.since:
        usage("--since goes with --prometheus URL: the rollout records need no range")
    if args.format == "json":
        print(strictjson.dumps(doc, indent=2))
    else:
        render = {"text": progress.text, "markdown": progress.markdown, "html": progress.html}[args.format]
        print(render(doc), end="" if args.format != "text" else "\n")
    return 0


def _progress_from_prometheus(args: argparse.Namespace, doc: dict[str, Any]) -> None:
    """Routes without rollout steps (moved by hand): each percent they held within --since, read from
    Prometheus over its span (increase() at its end), cohort requests left out as in `splitter report`."""
    from .. import progress, report

    since = _seconds(args.since or "30d")
    now = doc["generated_at"]
    base = http_url(args.prometheus, "--prometheus")
    for view in doc["routes"]:
        if view["steps"]:
            continue
        steps = []
        for pct, start, end in progress.segments(view, since, now):
            span = f"{max(1, round(end - start))}s"
            sides = report.from_prometheus(_prometheus(base, report.prometheus_queries(span), end)).get(view["route"])
            if sides is not None and (sides["new"].requests or sides["legacy"].requests):
                steps.append(progress.prometheus_step(pct, start, end, sides["legacy"], sides["new"], now))
        progress.with_steps(view, steps)


def _seconds(text: str) -> float:
    """--since: 30d, 12h, 90m, 3600s."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    number, unit = text[:-1], text[-1:]
    if unit not in units or not number.isdigit() or int(number) == 0:
        usage(f"--since {text!r}: a whole number and a unit (s, m, h, d, w), e.g. 30d")
    return int(number) * units[unit]


def cmd_report(args: argparse.Namespace) -> int:
    import httpx

    from .. import report, strictjson

    if args.window and not args.prometheus:
        usage(f"--window {args.window} needs --prometheus URL: a proxy's /metrics counts only since it started")
    if args.window and not re.fullmatch(r"([0-9]+(ms|[smhdwy]))+", args.window):
        usage(f"--window must be a Prometheus duration such as 10m, 1h or 1d, got {args.window!r}")
    if args.prometheus:
        queries = report.prometheus_queries(args.window)
        sides = report.from_prometheus(_prometheus(http_url(args.prometheus, "--prometheus"), queries))
    else:
        base = admin_url(args)
        try:
            text = httpx.get(base + "/metrics", timeout=10).text
        except httpx.HTTPError as exc:
            fail(f"cannot reach the admin API at {base} ({type(exc).__name__}); is the proxy running? (--admin URL)")
        sides = report.from_metrics_text(text)
    reports = report.build(sides, args.route, _report_rollouts(args))
    if args.route and not reports:
        if not args.prometheus:
            _known_route(args, args.route)
        seen = ", ".join(sorted(n for n in sides if n != "unmatched")) or "none"
        fail(f"no traffic recorded for route {args.route!r} (routes with traffic: {seen})")
    if args.json:
        print(strictjson.dumps([r.as_dict() for r in reports], indent=2))
    else:
        print(report.table(reports))
    verdicts = {r.verdict for r in reports}
    return 3 if report.FAIL in verdicts else 4 if report.UNDECIDED in verdicts else 0


def _report_rollouts(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The rollouts' gates for the report; with --prometheus and no proxy reachable the report goes on
    without them (it says so)."""
    try:
        items: list[dict[str, Any]] = _admin(args, "GET", "/admin/rollouts")
    except Transient as exc:
        if not args.prometheus:
            raise
        say(f"splitter: rollout gates left out: {exc}", file=sys.stderr)
        return []
    return items
