"""The finish line in routes.yaml: sync (the running values written into the file) and retire (a route
pinned to new); the file is rewritten with its comments kept, checked, and replaced whole."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from .. import config as config_mod
from ..config import ConfigError
from . import environ
from .client import _admin, _known_route
from .cohort import _all_members
from .common import _config_path, fail, say


def _served_file(args: argparse.Namespace) -> str:
    """--file, else the routes file the proxy serves (its /healthz says; `ROUTES=examples/rollout.yaml make run`
    serves another than ./routes.yaml) when it is on this machine, else routes.yaml here."""
    if args.file:
        return str(args.file)
    served = _admin(args, "GET", "/healthz").get("config")
    return served if isinstance(served, str) and os.path.isfile(served) else "routes.yaml"


def cmd_sync(args: argparse.Namespace) -> int:
    """routes.yaml against what runs; `--write` puts the live values into the file (comments kept), checked
    before it replaces the file. Exit 0 in step (or written), 3 when they differ and nothing was written."""
    from .. import sync, yamledit

    path = _config_path(_served_file(args), "pass --file PATH")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        doc = yamledit.load(text)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    except ValueError as exc:
        fail(f"{path} is not YAML: {exc}")
    routes = _admin(args, "GET", "/admin/routes")
    kill = bool(_admin(args, "GET", "/admin/kill").get("on"))
    env = _admin(args, "GET", "/admin/overview")["environment"]
    diffs = sync.differences(doc, env, routes, kill, _runtime_members(args, routes))
    for d in diffs:
        say(d.says)
    if not diffs:
        say(f"{path} says what runs (environment {env})")
        return 0
    if not args.write:
        say(f"splitter sync --write --file {path} writes the running values into it")
        return 3
    if kill:
        fail("the kill switch is ON: the running percents are hidden under it; turn it off, then sync")
    sync.write(doc, diffs)
    _replace_checked(path, text, yamledit.dump(doc, text), env)
    return 0


def _runtime_members(args: argparse.Namespace, routes: list[dict[str, Any]]) -> dict[tuple[str, str], list[str]]:
    """(route, cohort) -> the members added at runtime, for every `users` cohort of the running routes."""
    from urllib.parse import quote

    out = {}
    each = argparse.Namespace(**{**vars(args), "cohort": None})
    for r in routes:
        path = f"/admin/routes/{quote(r['name'], safe='')}/cohorts"
        for c in _all_members(each, path, _admin(args, "GET", path)["cohorts"]):
            if c["matcher"] == "users":
                out[(r["name"], c["name"])] = c["runtime_members"]
    return out


def _replace_checked(path: str, old: str, new: str, env: str) -> None:
    """Write `new` beside `path`, check it as `splitter check` would, then rename it over the file: the
    proxy's reload watcher never reads a half-written or invalid file."""
    import shutil

    from .. import yamledit

    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.sync-{os.getpid()}")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(new)
        shutil.copymode(path, tmp)  # the file keeps who may read it
        try:
            config_mod.load(tmp, env)
        except ConfigError as exc:
            fail(f"not written: the synced file would not pass `splitter check`: {exc.errors[0]}")
        os.replace(tmp, path)
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    for line in yamledit.diff(old, new, path).splitlines():
        say(line)
    say(f"wrote {path}; the running proxy reloads it within 2 s")


RETIRED = {"percent": 100}  # pinned to new, in every environment of a per-environment percent
RETIRED_GONE = ("rollout", "guard", "shadow")


def cmd_retire(args: argparse.Namespace) -> int:
    """`retire ROUTE`: the proxy checks the route is ready (or --force) and records it; then routes.yaml here is
    rewritten with the route pinned to new, comments and order kept (yamledit.py); the proxy reloads it."""
    from urllib.parse import quote

    from .. import yamledit

    if not environ.get("SPLITTER_ADMIN_TOKEN"):  # a change: said before anything is read or asked
        fail("SPLITTER_ADMIN_TOKEN is not set: export your admin token (an operator's, for changes)")
    _known_route(args, args.route)  # the proxy's routes first: the file may be another's
    path = _config_path(_served_file(args), "pass the file the proxy serves: --file PATH")
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
        new = yamledit.edit_route(text, args.route, RETIRED, RETIRED_GONE)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    except yamledit.EditError as exc:
        fail(f"{path}: {exc}")
    try:
        config_mod.parse(new, path, environ.get("SPLITTER_ENV") or None)
    except ConfigError as exc:
        fail(f"{path}: the rewritten file would not pass `splitter check`: {exc.errors[0]}")
    body = {"force": args.force, "dry_run": args.dry_run}
    answer = _admin(args, "POST", f"/admin/routes/{quote(args.route, safe='')}/retire", body, write=True)
    forced = f" ({answer['forced']})" if answer.get("forced") else ""
    if args.dry_run:
        sys.stdout.write(yamledit.unified_diff(text, new, path) or f"{path}: already pinned to new; no change\n")
        say(f"dry run: {args.route} would be retired{forced}; nothing changed", file=sys.stderr)
        return 0
    try:
        _replace(path, new)
    except OSError as exc:
        fail(f"{args.route} is recorded as retired, but {path} could not be written ({exc.strerror}): run it again")
    say(f"retired {args.route}{forced}: {path} pins it to new (percent 100; rollout, guard, shadow removed)")
    say("the proxy applies it on its next reload (within 2 s, or SIGHUP); commit the file")
    return 0


def _replace(path: str, text: str) -> None:
    """Write the whole file or nothing (a reload must never read half of it), keeping its permissions."""
    tmp = f"{path}.splitter-tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, os.stat(path).st_mode & 0o7777)
    os.replace(tmp, path)
