"""What the proxy's store holds: the change history, and the runtime state exported or imported
(moving from the embedded file to Redis)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..text import terminal
from .client import _admin, _known_route
from .common import fail, plural, say, usage


def cmd_state(args: argparse.Namespace) -> int:
    """Export prints what the proxy's store holds; import writes an export into it. Moving from the
    embedded file to Redis: export, restart with redis.url, import (store/transfer.py)."""
    if args.action == "export":
        if args.file:
            usage("export writes to stdout: splitter state export > state.json")
        print(json.dumps(_admin(args, "GET", "/admin/state"), indent=2))
        return 0
    if not args.file:
        usage("import needs the file an export wrote: splitter state import state.json")
    try:
        with open(0 if args.file == "-" else args.file, encoding="utf-8", closefd=args.file != "-") as f:
            doc = json.loads(f.read())
    except OSError as exc:
        fail(f"cannot read {args.file}: {exc.strerror}")
    except ValueError:
        fail(f"{args.file} is not JSON: write it with `splitter state export > {args.file}`")
    view = _admin(args, "PUT", "/admin/state", doc, write=True)
    n = view["imported"]
    say(
        f"imported into {view['store']}: {plural(n['overrides'], 'override')} and the kill switch, "
        f"{plural(n['rollouts'], 'rollout record')}, {plural(n['members'], 'cohort member')}, "
        f"{plural(n['history'], 'history event')}"
    )
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    from urllib.parse import urlencode

    if args.limit < 1:
        usage(f"--limit must be at least 1, got {args.limit}")
    query = urlencode({k: v for k, v in (("route", args.route), ("limit", args.limit)) if v})
    events = _admin(args, "GET", "/admin/history?" + query)
    if args.route and not events:
        _known_route(args, args.route)  # a removed route's past events still show above
    if args.json:
        print(json.dumps(events, indent=2))
        return 0
    if not events:
        say(f"no changes recorded{' for ' + args.route if args.route else ''}")
        return 0
    for line in _history_table(events):
        say(line)
    return 0


def _history_table(events: list[dict[str, Any]]) -> list[str]:
    """Columns as wide as their widest cell (kubectl's way), so the usual table fits 100 columns; the
    reason last, whole (--json has every field)."""
    import time

    rows = [("AT", "WHO", "SOURCE", "ACTION", "ROUTE", "OLD -> NEW")]
    for e in events:
        who = e["who"] + (f" ({e['on_behalf']})" if e.get("on_behalf") else "")
        at = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["at"]))
        change = f"{_show(e['old'])} -> {_show(e['new'])}"
        rows.append((at, who, e["source"], e["action"], e.get("route") or "-", change))
    widths = [max(len(terminal(row[i])) for row in rows) for i in range(len(rows[0]))]
    reasons = ["REASON"] + [e.get("reason") or "" for e in events]
    return [
        "  ".join(cell + " " * (w - len(terminal(cell))) for cell, w in zip(row, widths, strict=True)) + "  " + why
        for row, why in zip(rows, reasons, strict=True)
    ]


def _show(v: Any) -> str:
    if isinstance(v, dict) and "runtime_members" in v:  # a cohort's members (action cohort)
        return f"{v['cohort']}:{v['runtime_members']}"
    return ("on" if v else "off") if isinstance(v, bool) else "-" if v is None else str(v)
