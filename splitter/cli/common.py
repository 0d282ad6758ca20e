"""What every command shares: the exit-code table, the operator's mistakes as exceptions that main()
turns into one line on stderr (never a traceback), and one-line output that stays one line."""

from __future__ import annotations

import os
from typing import Any, NoReturn

from .. import config as config_mod
from ..config import ConfigError
from ..text import terminal

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


def _config_path(path: str, flag: str) -> str:
    """The default routes.yaml missing from the current directory says where to look, not file:0."""
    if path == "routes.yaml" and not os.path.exists(path):
        fail(f"routes.yaml not found in the current directory ({os.getcwd()}); {flag}")
    return path


def _load_or_fail(path: str, env: str | None) -> config_mod.Config:
    try:
        return config_mod.load(path, env)
    except ConfigError as exc:
        raise _ConfigFailure(exc.errors) from None


class _ConfigFailure(Exception):
    def __init__(self, errors: list[str]) -> None:
        self.errors = errors


def plural(n: int, word: str) -> str:
    """`1 member`, `2 members`."""
    return f"{n} {word}{'' if n == 1 else 's'}"
