"""`splitter serve`: flags and environment -> Settings, routes.yaml and the state store checked, then
the listeners (splitter.server). A mistake stops the start with one line, before any worker forks."""

from __future__ import annotations

import argparse
import os
import sys

from .. import config as config_mod
from ..config import ConfigError
from ..logs import setup_logging
from ..runtime import Settings
from . import environ
from .common import fail, say, usage


def _settings(args: argparse.Namespace) -> Settings:
    env = environ
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
    from .. import listen as server

    try:
        return server.serve(settings, args.log_level, cfg.environment)
    except server.BindError as exc:
        fail(str(exc))


def _check_state(settings: Settings, cfg: config_mod.Config) -> None:
    """Without Redis the state lives in the embedded file: open it now, before the workers fork, so a
    corrupt, unwritable or locked file stops the start with one line (never a silent start from
    routes.yaml alone)."""
    from ..store import state_path

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
    from ..store.sqlite import check

    problem = check(path)
    if problem:
        fail(problem)


def _redis_credentials(settings: Settings, cfg: config_mod.Config) -> Settings:
    """Redis username and password from the variables routes.yaml names (redis.username_env, redis.password_env)."""
    from dataclasses import replace

    def read(name: str | None, what: str) -> str | None:
        value = environ.get(name) if name else None
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

    from ..runtime import single_token
    from ..tokens import Tokens, TokensError

    try:
        Tokens(single_token(settings, cfg), settings.tokens_file)
    except TokensError as exc:
        fail(str(exc))
    missing = [n for n in cfg.secret_names() if not environ.get(n)]
    if missing:
        fail(f"{cfg.path}: notify: url_env {missing[0]} is not set in the environment")
    return replace(settings, secrets={n: value for n in cfg.secret_names() if (value := environ.get(n))})
