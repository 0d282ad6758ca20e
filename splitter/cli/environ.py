"""The one reader of os.environ (tests/unit/test_layout.py holds it to that): the rest of splitter is
handed the environment as values (Settings, arguments), so what a process was told is seen in one place."""

from __future__ import annotations

import os


def get(name: str) -> str | None:
    """The variable's value; None when it is unset or empty (every caller treats the two alike)."""
    return os.environ.get(name) or None
