"""A running proxy's routes and their overrides: status, set, clear, rollback, kill, shadow."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .. import config as config_mod
from .client import _admin, _admin_base
from .common import say, usage


def _print_routes(routes: list[dict[str, Any]], kill: bool) -> None:
    say(f"{'ROUTE':<20} {'PREFIX':<24} {'PERCENT':>7} {'FILE':>5}  SOURCE")
    for r in routes:
        say(f"{r['name']:<20} {r['prefix']:<24} {r['percent']:>7} {r['file_percent']:>5}  {r['source']}")
    say(f"kill switch: {'ON (everything goes to legacy)' if kill else 'off'}")


def cmd_status(args: argparse.Namespace) -> int:
    routes = _admin(args, "GET", "/admin/routes")
    kill = _admin(args, "GET", "/admin/kill")
    rejected = _admin(args, "GET", "/admin/overview").get("reloads", {}).get("last_error") or []
    store = _admin(args, "GET", "/healthz").get("store")
    rollouts = {r["route"]: r for r in _admin(args, "GET", "/admin/rollouts") if "route" in r}
    if args.json:
        doc = {"routes": routes, "kill": bool(kill.get("on")), "reload_error": rejected, "store": store,
               "differences": _drift(routes, rollouts)}
        print(json.dumps(doc, indent=2))
        return 0
    _print_routes(routes, bool(kill.get("on")))
    for line in _drift(routes, rollouts):
        say(line)
    for r in routes:
        if r.get("ready_to_retire"):
            say(f"{r['name']}: ready to retire, {r['retire_says']}: splitter retire {r['name']}")
    say(f"store: {store}")
    if rejected:
        say(f"routes.yaml REJECTED at the last reload; still serving the previous routes: {rejected[0]}")
    say(f"console: {_admin_base(args)}/ui")
    return 0


def _drift(routes: list[dict[str, Any]], rollouts: dict[str, dict[str, Any]]) -> list[str]:
    """A line per route whose running percent is not routes.yaml's: the file in git no longer says what runs."""
    lines = []
    for r in routes:
        name, pct, file_pct, source = r["name"], r["percent"], r["file_percent"], r["source"]
        if source == "kill" or float(pct) == float(file_pct):
            continue
        status = rollouts.get(name, {}).get("status")
        said = f"{name}: routes.yaml says {file_pct}, running {pct}"
        if source == "rollout" and status == "done":
            lines.append(f"{said} since the rollout finished: `splitter sync --write`")
        elif source == "rollout":
            lines.append(f"{said} (rollout {status}; `splitter sync --write` once it is done)")
        else:
            lines.append(f"{said} ({source}): `splitter sync --write` keeps it, `splitter clear {name}` drops it")
    return lines


def cmd_set(args: argparse.Namespace) -> int:
    pct = config_mod.parse_percent(args.percent)
    if pct is None:
        usage(f"percent must be {config_mod.PERCENT_RULE}, got {args.percent!r}")
    r = _admin(args, "PUT", f"/admin/routes/{args.route}", {"percent": pct}, write=True)
    say(f"{r['name']}: {r['percent']}% to new (file {r['file_percent']}%, source {r['source']})")
    return 0


def cmd_clear(args: argparse.Namespace) -> int:
    r = _admin(args, "DELETE", f"/admin/routes/{args.route}/override", write=True)
    say(f"{r['name']}: override cleared, {r['percent']}% to new (from routes.yaml)")
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    if args.all == (args.route is not None):
        usage("name one ROUTE or --all")
    body: dict[str, Any] = {"all": True} if args.all else {"route": args.route}
    if args.close_websockets:
        body["close_websockets"] = True
    answer: dict[str, str] = {}
    routes = _admin(args, "POST", "/admin/rollback", body, write=True, answer_headers=answer)
    names = [r["name"] for r in routes if r["percent"] == 0]
    say(f"rolled back to legacy (0%): {', '.join(names) if args.all else args.route}")
    if args.close_websockets:
        closed = answer.get("x-splitter-websockets-closed", "?")
        say(
            f"closed {closed} WebSocket connection{'' if closed == '1' else 's'} to new "
            "(1012: clients reconnect to legacy)"
        )
    return 0


def cmd_kill(args: argparse.Namespace) -> int:
    on = args.state == "on"
    _admin(args, "PUT" if on else "DELETE", "/admin/kill", write=True)
    say("kill switch ON: every request goes to legacy" if on else "kill switch off: routing by percent again")
    return 0


def cmd_shadow(args: argparse.Namespace) -> int:
    data = _admin(args, "GET", f"/admin/shadow/{args.route}")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    items = data["mismatches"]
    if not items:
        say(f"{args.route}: no recent shadow mismatches")
        return 0
    for m in items:
        say(f"{m['method']} {m['path']}  primary={m['primary']} shadow={m['shadow']}  request_id={m['request_id']}")
        for d in m["diff"]:
            say(f"    {d['path']}: {json.dumps(d['primary'])} != {json.dumps(d['shadow'])}")
    return 0
