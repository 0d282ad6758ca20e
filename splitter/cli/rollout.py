"""`splitter rollout`: status (once, --watch, --json), the changes (pause, resume, abort, promote,
restart), and wait (exit 0 done, 3 rolled back or aborted, 4 timed out, 5 awaiting approval)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .client import _admin, _known_route
from .common import Transient, fail, plural, say, usage


def _rollout_lines(items: list[dict[str, Any]]) -> list[str]:
    lines = []
    for i in items:
        steps = " ".join(f"[{s}]" if s == i["step"] else str(s) for s in i["steps"])
        nxt = f", next step in {i['next_step_in_s']:g} s" if i.get("next_step_in_s") is not None else ""
        lines.append(
            f"{i['route']}: {i['status']} at {i['percent']}%  steps {steps}{nxt}  ({i.get('scope', 'process')} window)"
        )
        if i.get("confidence") is not None:
            lines.append(f"  judged at confidence {i['confidence']:g}: {i.get('verdict', 'wait')}")
        for g in i.get("gates", []):
            if "verdict" in g:  # judged: estimate, interval, p-value, verdict
                mark = {"pass": "✓", "fail": "✗", "wait": "…"}[g["verdict"]]
                est = "-" if g["estimate"] is None else _gate_number(g["gate"], g["estimate"])
                lo, hi = g["interval"]
                interval = "" if lo is None else f"  [{_gate_number(g['gate'], lo)} .. {_gate_number(g['gate'], hi)}]"
                p = "" if g["p_value"] is None else f"  p={g['p_value']:.2g}"
                lines.append(
                    f"  {mark} {g['gate']:<18} {est:>10}{interval}{p}  (threshold {g['threshold']:g}) {g['verdict']}"
                )
                lines += [f"      {g['detail']}"] if g.get("detail") else []
                continue
            too_few = g["gate"] == "min_requests"  # not enough traffic yet: waiting, not failing
            mark = {True: "✓", False: "…" if too_few else "✗", None: "…"}[g["ok"]]
            value = "-" if g["value"] is None else _gate_number(g["gate"], g["value"])
            felt = f", {g['slower_ms']:.2f} ms slower, tolerance {g['tolerance_ms']:g} ms" if g.get("slower_ms") else ""
            lines.append(f"  {mark} {g['gate']:<18} {value:>10}  (threshold {g['threshold']:g}{felt})")
            lines += [f"      {g['detail']}"] if g.get("detail") else []
        if i.get("legacy_from_step_before"):
            lines.append("  legacy's side: its window of the step before (no legacy traffic at 100%)")
        if i.get("stalled"):
            lines.append("  stalled: held past max_wait_s (still holding)")
        lines += [f"  waiting: {w['says']}" for w in i.get("waiting_for") or []]
        hooks = i.get("before_step")
        if hooks and hooks.get("last"):
            lines.append(f"  held before {hooks['to']}%: {hooks['last']} ({hooks['failures']} failed so far)")
        if i["reason"]:
            lines.append(f"  reason: {i['reason']}")
        if i.get("kill"):
            lines.append("  kill switch ON: everything goes to legacy, the rollout holds")
        prev = i.get("previous")
        if prev:
            new = prev["new"]
            took = prev["until"] - prev["since"]
            lines.append(
                f"  last window: {prev['percent']}% for {took:.0f} s, "
                f"new {plural(new['requests'], 'request')}, {plural(new['errors'], 'error')}, "
                f"p95 {_ms(new['p95_ms'])}: {prev['verdict']}"
            )
    return lines


def _gate_number(gate: str, value: float | None) -> str:
    """A gate's estimate or bound as far as it can mean anything: milliseconds to 0.01, rates and ratios
    to 4 significant digits; None is an open interval end (∞) in a bound's place."""
    if value is None:
        return "∞"
    if gate.endswith("_ms"):
        return f"{value:.2f}"
    return str(int(value)) if float(value).is_integer() else f"{value:.4g}"


def _ms(value: float | None) -> str:
    """Milliseconds to 0.01 ms: the latency histogram's own resolution is coarser (2 %)."""
    return "-" if value is None else f"{value:.2f} ms"


def cmd_rollout(args: argparse.Namespace) -> int:
    if args.action == "status":
        return _rollout_status(args)
    if not args.route:
        usage(f"rollout {args.action} needs a ROUTE")
    if args.full and args.action != "promote":
        usage("--full goes with promote: splitter rollout promote ROUTE --full")
    if args.timeout is not None and not args.timeout > 0:
        usage(f"--timeout must be more than 0 seconds, got {args.timeout:g}")
    if args.action == "wait":
        return _rollout_wait(args)
    body = {"full": True} if args.full else {}
    r = _admin(args, "POST", f"/admin/rollouts/{args.route}/{args.action}", body, write=True)
    say(_rollout_said(r))
    return 0


def _rollout_said(v: dict[str, Any]) -> str:
    """One line: where a rollout stands and what comes next."""
    route, status, at = v["route"], v["status"], f"{v['percent']}%"
    if status == "awaiting_approval":
        line = f"{route}: at {at}, awaiting approval to enter {v.get('awaiting')}% "
        line += f"(splitter rollout promote {route} [--full])"
    elif status == "running" and v.get("step") is not None:
        line = f"{route}: rollout running at {at} (step {v['steps'].index(v['step']) + 1} of {len(v['steps'])})"
    else:
        why = f": {v['reason']}" if v.get("reason") and status != "running" else ""
        line = f"{route}: rollout {status} at {at}{why}"
    return line + (" (kill switch ON: everything goes to legacy, the rollout holds)" if v.get("kill") else "")


def _rollouts(args: argparse.Namespace) -> list[dict[str, Any]]:
    items = _admin(args, "GET", "/admin/rollouts")
    if args.route and not any(i["route"] == args.route for i in items):
        _known_route(args, args.route)
        fail(f"route {args.route!r} has no rollout section in routes.yaml")
    return [i for i in items if not args.route or i["route"] == args.route]


def _watching(args: argparse.Namespace, failing: str | None) -> tuple[list[dict[str, Any]] | None, str | None]:
    """_rollouts() for a loop that must outlive the proxy's restarts and errors: an error is said
    once on stderr (and its end), then retried. Returns (items or None, the error now)."""
    try:
        items = _rollouts(args)
    except Transient as exc:
        if failing != str(exc):
            say(f"splitter: {exc}; retrying every second", file=sys.stderr, flush=True)
        return None, str(exc)
    if failing:
        say("splitter: the admin API answers again", file=sys.stderr, flush=True)
    return items, None


def _rollout_status(args: argparse.Namespace) -> int:
    import time

    from .. import strictjson

    failing = None
    while True:
        items, failing = _watching(args, failing) if args.watch else (_rollouts(args), None)
        if items is not None and args.json:
            print(strictjson.dumps(items if not args.route else items[0]), flush=True)
        elif items is not None:
            if args.watch:
                print("\x1b[H\x1b[2J", end="")  # redraw in place, like kubectl argo rollouts get --watch
            for line in _rollout_lines(items) or ["no route has a rollout section in routes.yaml"]:
                say(line, flush=True)
        if not args.watch:
            return 0
        time.sleep(1.0)


def _rollout_wait(args: argparse.Namespace) -> int:
    """Like `kubectl rollout status`: a line per change; exit 0 at done, 3 rolled back or aborted, 4 on
    timeout (saying what the rollout waits for), 5 awaiting approval (a person must promote it)."""
    import time

    deadline = None if args.timeout is None else time.monotonic() + args.timeout
    failing, said = None, None
    while True:
        items, failing = _watching(args, failing)
        if items is not None:
            view = items[0]
            line = _rollout_said(view)
            if line != said:
                say(line, flush=True)
                said = line
            if view["status"] == "done":
                return 0
            if view["status"] in ("rolled_back", "aborted"):
                return 3
            if view["status"] == "awaiting_approval":
                return 5
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            where = f"last seen: {said}" if said else f"the admin API did not answer: {failing}"
            waits = [w["says"] for w in (view.get("waiting_for") or [])] if items is not None else []
            where += "".join(f"; waiting: {w}" for w in waits)
            say(f"splitter: rollout of {args.route} not done within {args.timeout:g} s ({where})", file=sys.stderr)
            return 4
        time.sleep(1.0 if left is None else min(1.0, left))
