"""The argument parser: every command and flag, in the order `--help` and docs/reference/cli.md show
them (scripts/gen_docs.py reads it), and the shell completion it makes."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn

from .. import __version__
from ..text import terminal
from .check import cmd_bucket, cmd_check, cmd_schema
from .client import DEFAULT_ADMIN
from .cohort import cmd_cohort
from .common import EXIT_CODES
from .finish import cmd_retire, cmd_sync
from .history import cmd_history, cmd_state
from .report import cmd_progress, cmd_report
from .rollout import cmd_rollout
from .serve import _backend_url, _host_names, cmd_serve
from .status import cmd_clear, cmd_kill, cmd_rollback, cmd_set, cmd_shadow, cmd_status


class _Parser(argparse.ArgumentParser):
    """argparse's usage errors in one line like every other mistake (the usage is one --help away), exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, terminal(f"{self.prog}: {message} (see {self.prog} --help)") + "\n")


class _Help(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Shows a default once: not when the help text already says it, nor for None and flags; an epilog
    (the exit-code table) keeps its lines."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text or action.default is None or isinstance(action.default, bool):
            return text
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    fmt = _Help
    p: argparse.ArgumentParser = _Parser(
        prog="splitter",
        description="Reverse proxy for strangler-fig migrations: sticky percent split between legacy and new.",
        formatter_class=fmt,
        epilog="exit codes:\n" + "\n".join(f"  {code:>3}  {said}" for code, said in EXIT_CODES.items()),
    )
    p.add_argument("--version", action="version", version=f"splitter {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _serve_parser(sub, fmt)
    _local_parsers(sub, fmt)
    _admin_parsers(sub, fmt)
    sc = sub.add_parser(
        "schema",
        help="print the JSON Schema of routes.yaml (for editors: # yaml-language-server: $schema=...)",
        formatter_class=fmt,
    )
    sc.set_defaults(func=cmd_schema)
    co = sub.add_parser(
        "completion", help='print a shell completion script: eval "$(splitter completion bash)"', formatter_class=fmt
    )
    co.add_argument("shell", choices=["bash", "zsh", "tcsh"], help="the shell")
    co.set_defaults(func=cmd_completion)
    return p


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser], fmt: type[argparse.HelpFormatter]) -> None:
    """`serve`: the listeners, workers, Redis, timeouts and logging."""
    s = sub.add_parser("serve", help="run the proxy", formatter_class=fmt)
    s.add_argument("--config", default="routes.yaml", help="routes.yaml to serve (hot-reloaded)")
    s.add_argument("--host", default="0.0.0.0", help="proxy listener address (user traffic)")
    s.add_argument("--port", type=int, default=8080, help="proxy listener port")
    s.add_argument(
        "--admin-host", default="127.0.0.1", help="admin listener address (/metrics, /healthz, /readyz, /admin/*)"
    )
    s.add_argument("--admin-port", type=int, default=8081, help="admin listener port")
    s.add_argument(
        "--admin-allowed-hosts",
        type=_host_names,
        default=(),
        metavar="NAMES",
        help="comma list of Host names the admin listener answers besides IP addresses and localhost "
        "(others get 403: DNS rebinding); * allows any",
    )
    s.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing both sockets (and the state file, or Redis)",
    )
    s.add_argument(
        "--prometheus",
        default=None,
        metavar="URL",
        help="Prometheus the rollouts' prometheus gates query (else $SPLITTER_PROMETHEUS_URL)",
    )
    s.add_argument(
        "--redis-url",
        default=None,
        help="Redis for fleet-wide overrides and windows (else $SPLITTER_REDIS_URL, else redis.url in routes.yaml)",
    )
    s.add_argument(
        "--state",
        default=None,
        metavar="PATH",
        help="the embedded store's file without Redis (else state.path in routes.yaml, else splitter-state.db "
        'next to routes.yaml; ":memory:" keeps it in the process)',
    )
    s.add_argument(
        "--graceful-timeout", type=float, default=30.0, help="seconds to drain in-flight requests on SIGTERM"
    )
    s.add_argument("--keepalive-timeout", type=float, default=75.0, help="seconds an idle client connection stays open")
    s.add_argument(
        "--header-timeout", type=float, default=30.0, help="seconds a client has to send a complete request head"
    )
    s.add_argument(
        "--body-timeout",
        type=float,
        default=60.0,
        help="seconds between reads of a request body before the proxy answers 408",
    )
    s.add_argument(
        "--send-timeout", type=float, default=60.0,
        help="seconds a client may take no response bytes before its connection is cut (nginx send_timeout)",
    )  # fmt: skip
    s.add_argument("--no-access-log", action="store_true", help="no per-request log line (errors are still logged)")
    s.add_argument(
        "--access-log",
        default=None,
        metavar="PATH",
        help="the per-request lines to this file (appended), not stdout, at any --log-level",
    )
    s.add_argument(
        "--backend-url",
        type=_backend_url,
        action="append",
        metavar="NAME=URL",
        help="serve routes.yaml with this backend's URL replaced, on every reload too (repeatable; make run's "
        "BASE_PORT)",
    )
    s.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning", "error"], help="least severe level logged"
    )
    s.set_defaults(func=cmd_serve)


def _local_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], fmt: type[argparse.HelpFormatter]) -> None:
    """The commands that read routes.yaml: check, bucket."""
    c = sub.add_parser("check", help="validate routes.yaml", formatter_class=fmt)
    c.add_argument("file", nargs="?", default="routes.yaml", help="the file to check")
    c.add_argument(
        "--env", default=None, help="check against this environment (default: $SPLITTER_ENV, else the file's)"
    )
    c.set_defaults(func=cmd_check)

    said = "a user's bucket and backend per route: the running proxy's live decision, or routes.yaml's with --file"
    told = "a user's bucket and backend per route: the running proxy's live decision\n(overrides, runtime cohort "
    told += "members, kill switch), or routes.yaml's alone with --file"
    b = sub.add_parser("bucket", help=said, description=told, formatter_class=fmt)
    b.add_argument("user_id", help="the user ID as the proxy would read it")
    b.add_argument(
        "--file",
        "--config",
        default=None,
        metavar="ROUTES_YAML",
        help="decide on this routes.yaml's values alone instead of asking the running proxy",
    )
    b.add_argument(
        "--admin", default=None, help=f"admin API URL (default: $SPLITTER_ADMIN_URL, else {DEFAULT_ADMIN})"
    )
    b.add_argument("--json", action="store_true", help="JSON output")
    b.set_defaults(func=cmd_bucket)


def _admin_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser], fmt: type[argparse.HelpFormatter]) -> None:
    """The commands that ask a running proxy's admin API."""
    def admin_parser(name: str, help_: str) -> argparse.ArgumentParser:
        a = sub.add_parser(name, help=help_, formatter_class=fmt)
        a.add_argument(
            "--admin", default=None, help=f"admin API URL (default: $SPLITTER_ADMIN_URL, else {DEFAULT_ADMIN})"
        )
        return a

    st = admin_parser("status", "routes, percents and the kill switch of a running proxy")
    st.add_argument("--json", action="store_true", help="JSON output")
    st.set_defaults(func=cmd_status)
    se = admin_parser("set", "override a route's percent at runtime")
    se.add_argument("route", help="route name")
    se.add_argument("percent", help="0..100 in steps of 0.01, e.g. 10 or 1.5")
    se.add_argument("--reason", default=None, help="why, for the change history and notifications")
    se.set_defaults(func=cmd_set)
    cl = admin_parser("clear", "remove a route's runtime override (back to routes.yaml)")
    cl.add_argument("route", help="route name")
    cl.add_argument("--reason", default=None, help="why, for the change history and notifications")
    cl.set_defaults(func=cmd_clear)
    rb = admin_parser("rollback", "send a route (or all) to legacy: override to 0")
    rb.add_argument("route", nargs="?", help="route name")
    rb.add_argument("--all", action="store_true", help="every route")
    rb.add_argument(
        "--close-websockets",
        action="store_true",
        help="also close the route's open WebSocket connections to new (1012), so clients reconnect to legacy",
    )
    rb.add_argument("--reason", default=None, help="why, for the change history and notifications")
    rb.set_defaults(func=cmd_rollback)
    k = admin_parser("kill", "kill switch: everything to legacy")
    k.add_argument("state", choices=["on", "off"], help="on: every request to legacy; off: routing by percent again")
    k.add_argument("--reason", default=None, help="why, for the change history and notifications")
    k.set_defaults(func=cmd_kill)
    sh = admin_parser("shadow", "recent shadow mismatches of a route, with diffs")
    sh.add_argument("route", help="route name")
    sh.add_argument("--json", action="store_true", help="JSON output")
    sh.set_defaults(func=cmd_shadow)
    hi = admin_parser("history", "who changed what, when and why (people, guard, rollouts, routes.yaml), newest first")
    hi.add_argument("route", nargs="?", help="only this route")
    hi.add_argument("--limit", type=int, default=50, help="at most this many events")
    hi.add_argument("--json", action="store_true", help="JSON output")
    hi.set_defaults(func=cmd_history)
    _finish_line_parsers(admin_parser)
    sa = admin_parser("state", "the runtime state as JSON: export it (stdout), or import FILE into the proxy's store")
    sa.add_argument("action", choices=["export", "import"], help="what to do")
    sa.add_argument("file", nargs="?", help="import: a file `splitter state export` wrote (- for stdin)")
    sa.set_defaults(func=cmd_state)
    _cohort_parser(admin_parser("cohort", "members of a route's users cohorts at runtime: add, remove, list"))
    ro = admin_parser("rollout", "gated rollouts: status, pause, resume, abort, promote, restart, wait (exit 0, 3-5)")
    ro.epilog = ROLLOUT_READING
    _rollout_parser(ro)
    _retire_parser(admin_parser("retire", "pin a route ready to retire to new in routes.yaml (operator)"))
    rp = admin_parser(
        "report",
        "old vs new per route against the migration plan's success criteria "
        "(exit 3 when one fails, 4 when none fails but one lacks evidence, 1 on operator errors)",
    )
    rp.add_argument(
        "--prometheus",
        default=None,
        help="Prometheus URL (rates over --window); default: the admin API's /metrics since start",
    )
    rp.add_argument(
        "--window",
        default=None,
        help="with --prometheus: a range such as 10m, 1h, 1d (default: since the proxies started)",
    )
    rp.add_argument("--route", default=None, help="only this route")
    rp.add_argument("--json", action="store_true", help="JSON output")
    rp.set_defaults(func=cmd_report)


def _finish_line_parsers(admin_parser: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """sync and progress: routes.yaml kept in step with what runs, and the migration told to people."""
    sy = admin_parser("sync", "where routes.yaml and what runs differ; --write puts the running values in the file")
    sy.add_argument("--file", default=None, help="the routes file (default: the one the proxy serves)")
    sy.add_argument("--write", action="store_true", help="write the running percents and cohort members into it")
    sy.set_defaults(func=cmd_sync)
    pg = admin_parser("progress", "per route: state, timeline, new vs legacy at each step, incidents, a summary line")
    pg.add_argument("route", nargs="?", help="only this route")
    pg.add_argument("--format", choices=["text", "markdown", "json", "html"], default="text",
                    help="markdown pastes into a wiki or chat; html is one self-contained page")
    pg.add_argument("--prometheus", default=None, metavar="URL",
                    help="read the steps of routes without rollout records (moved by hand) from Prometheus")
    pg.add_argument("--since", default=None, metavar="AGE", help="with --prometheus: how far back, e.g. 30d (default)")
    pg.set_defaults(func=cmd_progress)


def _cohort_parser(co: argparse.ArgumentParser) -> None:
    co.add_argument("action", choices=["add", "remove", "list"], help="what to do")
    co.add_argument("route", metavar="ROUTE", help="route name")
    co.add_argument(
        "cohort", metavar="COHORT", nargs="?", help="cohort name (list: all the route's cohorts when omitted)"
    )
    co.add_argument("users", nargs="*", metavar="USER", help="add/remove: user ids")
    co.add_argument("--json", action="store_true", help="list: JSON output")
    co.add_argument("--reason", default=None, help="add/remove: why, for the history and notifications")
    co.set_defaults(func=cmd_cohort)


ROLLOUT_READING = """reading `status`:
  ✓ pass, ✗ fail, … wait (too little evidence either way). Each gate shows
  its estimate, then with `confidence` its interval [low .. high] at that
  confidence (∞: open above). Latencies in ms to 0.01 ms (the histogram
  itself is good to about 2 %).
  p= (max_p95_ratio): the Mann-Whitney p-value for "new is slower than
  legacy", the chance of data this lopsided if new were not slower. Small
  (below 1 - confidence, 0.01 at 0.99, shared out over the rollout's looks)
  means the data show new slower; the gate fails only when the p95 ratio and
  p95_tolerance_ms are shown breached as well.
exit codes of `wait`: 0 done, 3 rolled back or aborted, 4 timed out,
  5 awaiting approval."""


def _rollout_parser(ro: argparse.ArgumentParser) -> None:
    actions = ["status", "pause", "resume", "abort", "promote", "restart", "wait"]
    ro.add_argument("action", choices=actions, help="what to do")
    ro.add_argument("route", nargs="?", help="route name (status: all routes when omitted)")
    ro.add_argument("--full", action="store_true", help="promote: straight to the last step, and done")
    ro.add_argument(
        "--timeout", type=float, default=None, help="wait: give up after S seconds, exit 4 (default: until it ends)"
    )
    ro.add_argument("--watch", action="store_true", help="status: redraw every second, retrying through errors")
    ro.add_argument("--json", action="store_true", help="status: JSON (with --watch, one line per second)")
    ro.add_argument("--reason", default=None, help="a change: why, for the history and notifications")
    ro.set_defaults(func=cmd_rollout)


def _retire_parser(re_: argparse.ArgumentParser) -> None:
    re_.add_argument("route", help="route name")
    re_.add_argument("--file", default=None, help="the routes file to rewrite (default: the one the proxy serves)")
    re_.add_argument("--force", action="store_true", help="retire a route that is not ready (the reason says why not)")
    re_.add_argument("--dry-run", action="store_true", help="print the change to routes.yaml as a diff; change nothing")
    re_.add_argument("--reason", default=None, help="why, for the history and notifications")
    re_.set_defaults(func=cmd_retire)


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0
