"""Command line: argument parsing, environment reading, logging set-up.

    main.py     parse, run, map every ending to an exit code (EXIT_CODES)
    parser.py   every command and flag (scripts/gen_docs.py reads it), completion
    common.py   exit codes, the operator's mistakes, one-line output
    environ.py  the only reader of os.environ
    client.py   the admin API and Prometheus, as the commands ask them
    serve.py  check.py  status.py  rollout.py  cohort.py  report.py  finish.py  history.py: the commands

Operator mistakes end in one line on stderr and a non-zero exit, never a traceback.
"""

from .common import EXIT_CODES
from .main import main
from .parser import build_parser

__all__ = ["EXIT_CODES", "build_parser", "main"]
