"""`splitter cohort`: the members of a route's users cohorts added or removed at runtime, and listed."""

from __future__ import annotations

import argparse
import json
from typing import Any

from .client import _admin
from .common import fail, plural, say, usage


def cmd_cohort(args: argparse.Namespace) -> int:
    """`cohort add|remove ROUTE COHORT USER...` (one change, all or nothing), `cohort list ROUTE [COHORT]`."""
    from urllib.parse import quote

    path = f"/admin/routes/{quote(args.route, safe='')}/cohorts"
    if args.action == "list":
        if args.users:
            usage("list takes ROUTE [COHORT], no user ids")
        return _cohort_list(args, _all_members(args, path, _admin(args, "GET", path)["cohorts"]))
    if not args.cohort or not args.users:
        got = f"cohort {args.cohort!r} and no user ids" if args.cohort else "no cohort"
        usage(f"{args.action} needs ROUTE COHORT USER... (got route {args.route!r}, {got})")
    body = {args.action: args.users}
    r = _admin(args, "PUT", f"{path}/{quote(args.cohort, safe='')}", body, write=True)
    did = f"added {r['added']}" if args.action == "add" else f"removed {r['removed']}"
    say(
        f"{args.route}/{args.cohort}: {did}; {plural(r['count'], 'member')} "
        f"({r['file_members']} in routes.yaml, {r['runtime_members']} added at runtime)"
    )
    return 0


def _all_members(args: argparse.Namespace, path: str, cohorts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The listing's `users` cohorts come with their first page of members: read the rest, page by page
    (`next_cursor`), so the list shows every member, as it did before the API was paged."""
    from urllib.parse import quote, urlencode

    for c in cohorts:
        cursor = c.pop("next_cursor", None)
        while cursor is not None and (not args.cohort or c["name"] == args.cohort):
            query = urlencode({"cursor": cursor, "limit": 10_000})
            page = _admin(args, "GET", f"{path}/{quote(c['name'], safe='')}?{query}")
            c["file_members"] += page["file_members"]
            c["runtime_members"] += page["runtime_members"]
            cursor = page["next_cursor"]
    return cohorts


def _cohort_list(args: argparse.Namespace, cohorts: list[dict[str, Any]]) -> int:
    if args.cohort:
        cohorts = [c for c in cohorts if c["name"] == args.cohort]
        if not cohorts:
            fail(f"route {args.route!r} has no cohort {args.cohort!r}")
    if args.json:
        print(json.dumps({"route": args.route, "cohorts": cohorts}, indent=2))
        return 0
    if not cohorts:
        say(f"{args.route}: no cohorts")
        return 0
    say(f"{'COHORT':<16} {'TO':<7} {'MEMBERS':>7}  MATCHER")
    for c in cohorts:
        if c["matcher"] != "users":
            values = ", ".join(c["values"])
            say(f"{c['name']:<16} {c['to']:<7} {'-':>7}  {c['matcher']} {c['key']} {c['op']} {values}")
            continue
        say(f"{c['name']:<16} {c['to']:<7} {c['count']:>7}  users")
        for where, ids in (("routes.yaml", c["file_members"]), ("runtime", c["runtime_members"])):
            more = f" ... and {len(ids) - 20} more (--json lists all)" if len(ids) > 20 else ""
            say(f"    {where}: {', '.join(ids[:20]) or '-'}{more}")
    return 0
