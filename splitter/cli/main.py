"""`splitter`: parse, run the command, and end every way with an exit code from EXIT_CODES: an
operator's mistake is one line on stderr, never a traceback."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .common import OperatorError, UsageError, _ConfigFailure, say
from .parser import build_parser


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
