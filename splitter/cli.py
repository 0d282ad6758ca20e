"""Command line: argument parsing, environment reading, logging set-up.

This is the only module that reads os.environ. Operator mistakes end in one
line on stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from . import __version__
from . import config as config_mod
from .config import ConfigError
from .logs import setup_logging
from .runtime import Settings
from .text import terminal

DEFAULT_ADMIN = "http://127.0.0.1:8081"

# The one exit-code table: every command ends with one of these, the top-level help prints it, README quotes
# it, and tests/integration/test_cli_exits.py holds every command's error paths to it.
EXIT_CODES: dict[int, str] = {
    0: "ok (report: every criterion passes; rollout wait: done)",
    1: "failed: bad routes.yaml, admin API unreachable or refusing, unknown route, no token",
    2: "usage: a bad flag, argument or value (a URL without http:// too); nothing sent",
    3: "report: a criterion fails; rollout wait: rolled back or aborted",
    4: "rollout wait: timed out (--timeout)",
    5: "rollout wait: awaiting approval (splitter rollout promote ROUTE)",
    130: "interrupted (Ctrl-C)",
    141: "stdout closed early (| head): nothing more is written, as with SIGPIPE",
}


class OperatorError(Exception):
    """A mistake the operator can fix; printed as one line."""


class Transient(OperatorError):
    """The admin API cannot answer now (unreachable, 5xx): `--watch` and `rollout wait` retry."""


def say(line: str, **kwargs: Any) -> None:
    """print() for a line that holds values from outside (names, reasons, members, errors the admin
    API quotes): each control character shows as escape text, so one line stays one line (text.py)."""
    print(terminal(line), **kwargs)


def fail(message: str) -> NoReturn:
    raise OperatorError(message)


class UsageError(OperatorError):
    """A command line that argparse cannot reject by itself; exit 2 like argparse's own usage errors."""


def usage(message: str) -> NoReturn:
    raise UsageError(message)


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


def admin_url(args: argparse.Namespace) -> str:
    """--admin, else $SPLITTER_ADMIN_URL, else the default."""
    base = getattr(args, "admin", None) or os.environ.get("SPLITTER_ADMIN_URL") or DEFAULT_ADMIN
    return http_url(base, "--admin" if getattr(args, "admin", None) else "SPLITTER_ADMIN_URL")


def http_url(value: str, source: str) -> str:
    """A URL without http:// or without a host is a usage error (exit 2), before anything is sent:
    `localhost:8081` could be a scheme or a host, so it is never guessed."""
    from urllib.parse import urlsplit

    if not value.startswith(("http://", "https://")):
        usage(f"{source} {value!r} needs http:// (for example http://{value.split('://')[-1]})")
    base = value.rstrip("/")
    try:
        host = urlsplit(base).hostname
    except ValueError:
        host = None
    if not host:
        usage(f"{source} {base!r} names no host (for example {DEFAULT_ADMIN})")
    return base


def _config_path(path: str, flag: str) -> str:
    """The default routes.yaml missing from the current directory says where to look, not file:0."""
    if path == "routes.yaml" and not os.path.exists(path):
        fail(f"routes.yaml not found in the current directory ({os.getcwd()}); {flag}")
    return path


# --- serve -------------------------------------------------------------------


def _settings(args: argparse.Namespace) -> Settings:
    env = os.environ
    return Settings(
        config_path=args.config,
        host=args.host,
        port=args.port,
        admin_host=args.admin_host,
        admin_port=args.admin_port,
        workers=args.workers,
        environment=env.get("SPLITTER_ENV") or None,
        redis_url=args.redis_url or env.get("SPLITTER_REDIS_URL") or None,
        state_path=os.path.abspath(args.state) if args.state and args.state != ":memory:" else args.state,
        prometheus_url=args.prometheus or env.get("SPLITTER_PROMETHEUS_URL") or None,
        admin_token=env.get("SPLITTER_ADMIN_TOKEN") or None,
        admin_allowed_hosts=args.admin_allowed_hosts,
        tokens_file=env.get("SPLITTER_ADMIN_TOKENS_FILE") or None,
        force_token=env.get("SPLITTER_FORCE_TOKEN") or None,
        multiprocess_dir=(env.get("PROMETHEUS_MULTIPROC_DIR") or None) if args.workers > 1 else None,
        graceful_timeout=args.graceful_timeout,
        keepalive_timeout=args.keepalive_timeout,
        header_timeout=args.header_timeout,
        body_timeout=args.body_timeout,
        send_timeout=args.send_timeout,
        access_log=not args.no_access_log,
        access_log_path=args.access_log,
        backend_urls=tuple(args.backend_url or ()),
    )


def _host_names(text: str) -> tuple[str, ...]:
    """--admin-allowed-hosts: `a,b.example` -> ("a", "b.example"); names only, compared without the port."""
    names = tuple(n.strip().lower().removesuffix(".") for n in text.split(",") if n.strip())
    for n in names:
        if n != "*" and not all(part and part.replace("-", "").replace("_", "").isalnum() for part in n.split(".")):
            example = "a name like splitter-admin or admin.example.com, without port or scheme; * for any"
            raise argparse.ArgumentTypeError(f"{n!r} is not a host name ({example})")
    return names


def _backend_url(text: str) -> tuple[str, str]:
    """--backend-url legacy=http://127.0.0.1:9001 -> ("legacy", "http://127.0.0.1:9001"); the URL itself is
    checked like routes.yaml's own."""
    name, sep, url = text.partition("=")
    if not sep or not name or not url:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=URL (for example legacy=http://127.0.0.1:9001)")
    return name, url


def cmd_serve(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if args.access_log and args.no_access_log:
        usage("--access-log PATH and --no-access-log: choose one")
    try:
        setup_logging(args.log_level, settings.access_log_path)
    except OSError as exc:
        fail(f"--access-log {args.access_log}: cannot open it: {exc.strerror}")
    if settings.workers < 1:
        usage("--workers must be at least 1")
    if not settings.send_timeout > 0:
        usage(f"--send-timeout must be more than 0 seconds, got {settings.send_timeout:g}")
    try:
        cfg = config_mod.load(settings.config_path, settings.environment, settings.backend_urls)
    except ConfigError as exc:
        for line in exc.errors:
            say(line, file=sys.stderr)
        return 1
    settings = _redis_credentials(settings, cfg)
    settings = _identity_and_secrets(settings, cfg)
    if (settings.host, settings.port) == (settings.admin_host, settings.admin_port) or (
        settings.port == settings.admin_port and settings.port != 0
    ):
        usage("--port and --admin-port must differ")
    if not (settings.redis_url or cfg.redis_url or cfg.redis_ha.sentinels):
        _check_state(settings, cfg)
    from . import listen as server

    try:
        return server.serve(settings, args.log_level, cfg.environment)
    except server.BindError as exc:
        fail(str(exc))


def _check_state(settings: Settings, cfg: config_mod.Config) -> None:
    """Without Redis the state lives in the embedded file: open it now, before the workers fork, so a
    corrupt, unwritable or locked file stops the start with one line (never a silent start from
    routes.yaml alone)."""
    from .store import state_path

    path = state_path(settings.config_path, settings.state_path or cfg.state_path)
    if path == ":memory:":
        judged = [r.name for r in cfg.routes if r.guard or r.rollout]
        names = ", ".join(judged)
        if settings.workers > 1 and judged:
            fail(
                f"--workers {settings.workers} with guard/rollout on {names} needs a shared store: "
                'state.path is ":memory:", so each worker would judge only its own share of traffic; '
                "remove it (the embedded file is the default) or set redis.url"
            )
        return
    from .store.sqlite import check

    problem = check(path)
    if problem:
        fail(problem)


def _redis_credentials(settings: Settings, cfg: config_mod.Config) -> Settings:
    """Redis username and password from the variables routes.yaml names (redis.username_env, redis.password_env)."""
    from dataclasses import replace

    def read(name: str | None, what: str) -> str | None:
        value = os.environ.get(name) if name else None
        if name and not value:
            fail(f"redis.{what}_env names {name}, which is not set: export the Redis {what} in {name}")
        return value

    ha = cfg.redis_ha
    return replace(
        settings, redis_username=read(ha.username_env, "username"), redis_password=read(ha.password_env, "password")
    )


def _identity_and_secrets(settings: Settings, cfg: config_mod.Config) -> Settings:
    """Refuse a bad tokens file or a notify url_env that is not set; hand the secrets on."""
    from dataclasses import replace

    from .runtime import single_token
    from .tokens import Tokens, TokensError

    try:
        Tokens(single_token(settings, cfg), settings.tokens_file)
    except TokensError as exc:
        fail(str(exc))
    missing = [n for n in cfg.secret_names() if not os.environ.get(n)]
    if missing:
        fail(f"{cfg.path}: notify: url_env {missing[0]} is not set in the environment")
    return replace(settings, secrets={n: os.environ[n] for n in cfg.secret_names()})


# --- check / bucket --------------------------------------------------------------


def _load_or_fail(path: str, env: str | None) -> config_mod.Config:
    try:
        return config_mod.load(path, env)
    except ConfigError as exc:
        raise _ConfigFailure(exc.errors) from None


class _ConfigFailure(Exception):
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors


def cmd_check(args: argparse.Namespace) -> int:
    env = args.env or os.environ.get("SPLITTER_ENV") or None
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
        env = os.environ.get("SPLITTER_ENV") or None
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
    from . import bucketing
    from .decide import Facts, decide
    from .runtime import Snapshot

    snap = Snapshot(cfg, {r.name: r.percent for r in cfg.routes}, dict.fromkeys(cfg.by_name, "file"), False)
    uid = user_id.encode("utf-8", "surrogatepass")
    rows = []
    for r in cfg.routes:
        d = decide(snap, r, Facts(None, uid))
        assert d is not None  # the user id is known
        digest = bucketing.digest(uid, r.salt)
        rows.append((r.name, bucketing.bucket_of(digest), bucketing.sub_bucket(digest), r.percent, d.role, d.reason))
    return rows


# --- admin API clients --------------------------------------------------------------


def _admin(
    args: argparse.Namespace,
    method: str,
    path: str,
    body: Any = None,
    write: bool = False,
    answer_headers: dict[str, str] | None = None,
) -> Any:
    import httpx

    base = admin_url(args)
    # who makes a change is the token's name (the proxy decides), never $USER
    headers = {"X-Splitter-Source": "cli"}
    token = os.environ.get("SPLITTER_ADMIN_TOKEN")
    if write and not token:
        fail("SPLITTER_ADMIN_TOKEN is not set: export your admin token (an operator's, for changes)")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if write and getattr(args, "reason", None):
        body = {**(body or {}), "reason": args.reason}
    try:
        resp = httpx.request(method, base + path, json=body, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        why = f"cannot reach the admin API at {base} ({type(exc).__name__}); is the proxy running? (--admin URL)"
        raise Transient(why) from None
    try:
        data = resp.json()
    except ValueError:
        data = None
    if resp.status_code >= 400:
        msg = data.get("error") if isinstance(data, dict) else None
        said = f"admin API answered {resp.status_code}: {msg or resp.text.strip()[:200]}"
        raise Transient(said) if resp.status_code >= 500 else OperatorError(said)
    if answer_headers is not None:
        answer_headers.update(resp.headers)
    return data


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


def _served_file(args: argparse.Namespace) -> str:
    """--file, else the routes file the proxy serves (its /healthz says; `ROUTES=examples/rollout.yaml make run`
    serves another than ./routes.yaml) when it is on this machine, else routes.yaml here."""
    if args.file:
        return str(args.file)
    served = _admin(args, "GET", "/healthz").get("config")
    return served if isinstance(served, str) and os.path.isfile(served) else "routes.yaml"


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


def cmd_sync(args: argparse.Namespace) -> int:
    """routes.yaml against what runs; `--write` puts the live values into the file (comments kept), checked
    before it replaces the file. Exit 0 in step (or written), 3 when they differ and nothing was written."""
    from . import sync, yamledit

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

    from . import yamledit

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


def cmd_progress(args: argparse.Namespace) -> int:
    """GET /admin/progress rendered for people: text, markdown (a wiki, a chat), json, html (one page)."""
    from urllib.parse import quote

    from . import progress, strictjson

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
    from . import progress, report

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


def _prometheus(base: str, queries: dict[str, str], at: float | None = None) -> dict[str, list[dict[str, Any]]]:
    """Each query's instant result (at `at`, else now); an unreachable or refusing Prometheus is one line."""
    import httpx

    results = {}
    for key, query in queries.items():
        params = {"query": query} if at is None else {"query": query, "time": f"{at:.3f}"}
        try:
            resp = httpx.get(base + "/api/v1/query", params=params, timeout=10)
            body = resp.json()
        except (httpx.HTTPError, ValueError) as exc:
            fail(f"cannot query Prometheus at {base} ({type(exc).__name__})")
        if body.get("status") != "success":
            fail(f"Prometheus answered {resp.status_code}: {body.get('error', resp.text[:200])}")
        results[key] = body["data"]["result"]
    return results


def _admin_base(args: argparse.Namespace) -> str:
    return admin_url(args)


def _known_route(args: argparse.Namespace, name: str) -> None:
    """Exit 1 naming the routes the proxy knows when `name` is none of them: for the commands whose
    admin answer would not say so by itself (an empty history, a listing without the route)."""
    known = [r["name"] for r in _admin(args, "GET", "/admin/routes")]
    if name not in known:
        fail(f"unknown route {name!r} (routes: {', '.join(known)})")


def plural(n: int, word: str) -> str:
    """`1 member`, `2 members`."""
    return f"{n} {word}{'' if n == 1 else 's'}"


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

    from . import strictjson

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


def cmd_report(args: argparse.Namespace) -> int:
    import httpx

    from . import report, strictjson

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


# --- parser ---------------------------------------------------------------------


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


RETIRED = {"percent": 100}  # pinned to new, in every environment of a per-environment percent
RETIRED_GONE = ("rollout", "guard", "shadow")


def cmd_retire(args: argparse.Namespace) -> int:
    """`retire ROUTE`: the proxy checks the route is ready (or --force) and records it; then routes.yaml here is
    rewritten with the route pinned to new, comments and order kept (yamledit.py); the proxy reloads it."""
    from urllib.parse import quote

    from . import yamledit

    if not os.environ.get("SPLITTER_ADMIN_TOKEN"):  # a change: said before anything is read or asked
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
        config_mod.parse(new, path, os.environ.get("SPLITTER_ENV") or None)
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


def cmd_schema(args: argparse.Namespace) -> int:
    print(json.dumps(config_mod.json_schema(), indent=2))
    return 0


def cmd_completion(args: argparse.Namespace) -> int:
    import shtab

    print(shtab.complete(build_parser(), shell=args.shell))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()  # here, so a reader gone away (| head) is caught below, not at exit
        return code
    except BrokenPipeError:
        # quiet, like cat: stdout goes to /dev/null so the interpreter's own flush at exit cannot raise again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except _ConfigFailure as exc:
        for line in exc.errors:
            say(line, file=sys.stderr)
        return 1
    except UsageError as exc:
        say(f"splitter {args.command}: {exc}", file=sys.stderr)
        return 2
    except OperatorError as exc:
        say(f"splitter: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
