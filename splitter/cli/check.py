"""The commands that read routes.yaml on this machine: check, bucket --file, schema (bucket without
--file asks the running proxy)."""

from __future__ import annotations

import argparse
import json

from .. import config as config_mod
from . import environ
from .client import _admin, admin_url
from .common import _config_path, _load_or_fail, plural, say, usage


def cmd_check(args: argparse.Namespace) -> int:
    env = args.env or environ.get("SPLITTER_ENV") or None
    cfg = _load_or_fail(_config_path(args.file, "pass the file: splitter check PATH"), env)
    parts = ", ".join(f"{r.name} {r.prefix} {r.percent}%" for r in cfg.routes)
    say(
        f"{args.file}: ok, environment {cfg.environment}, {plural(len(cfg.routes), 'route')} ({parts}), "
        f"unmatched -> {cfg.unmatched}"
    )
    return 0


def cmd_bucket(args: argparse.Namespace) -> int:
    """Live by default: the running proxy's decide() on its own state (overrides, runtime cohort members,
    the kill switch), as every other command shows; --file for what routes.yaml alone would decide."""
    from urllib.parse import quote

    keys = ("route", "bucket", "sub_bucket", "percent", "backend", "reason")
    env = None
    if args.file is not None and args.admin:
        usage("--file decides on the file alone, --admin asks a running proxy: choose one")
    if args.file is None:
        view = _admin(args, "GET", "/admin/bucket?user_id=" + quote(args.user_id, safe=""))
        rows = [tuple(r[k] for k in keys) for r in view["routes"]]
        source = f"live values from {admin_url(args)}" + (" (kill switch ON)" if view["kill"] else "")
        source += "; routes.yaml's: --file PATH"
    else:
        env = environ.get("SPLITTER_ENV") or None
        cfg = _load_or_fail(_config_path(args.file, "pass --file PATH"), env)
        rows = _bucket_rows(cfg, args.user_id)
        env = cfg.environment
        source = f"routes.yaml values, environment {env}; live values: without --file"
    if args.json:
        routes = [dict(zip(keys, row, strict=True)) for row in rows]
        origin = "file" if args.file else "admin"
        print(json.dumps({"user_id": args.user_id, "source": origin, "environment": env, "routes": routes}))
        return 0
    say(f"user {args.user_id!r} ({source})")
    say(f"{'ROUTE':<20} {'BUCKET':>6} {'PERCENT':>7}  {'BACKEND':<8} {'REASON':<12} SUB-BUCKET")
    for name, b, sub, pct, backend, reason in rows:
        say(f"{name:<20} {b:>6} {pct:>7}  {backend:<8} {reason:<12} {sub}")
    return 0


def _bucket_rows(cfg: config_mod.Config, user_id: str) -> list[tuple[str, int, int, config_mod.Percent, str, str]]:
    """(route, bucket, sub-bucket, percent, role, reason) per route, decided on routes.yaml's values alone."""
    from .. import bucketing
    from ..decide import Facts, decide
    from ..runtime import Snapshot

    snap = Snapshot(cfg, {r.name: r.percent for r in cfg.routes}, dict.fromkeys(cfg.by_name, "file"), False)
    uid = user_id.encode("utf-8", "surrogatepass")
    rows = []
    for r in cfg.routes:
        d = decide(snap, r, Facts(None, uid))
        assert d is not None  # the user id is known
        digest = bucketing.digest(uid, r.salt)
        rows.append((r.name, bucketing.bucket_of(digest), bucketing.sub_bucket(digest), r.percent, d.role, d.reason))
    return rows


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_mod.json_schema(), indent=2))
    return 0
