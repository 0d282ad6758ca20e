"""A YAML document as plain data plus the line of every key path, and the checks every section shares.

Every problem is reported as ``file:line: key.path: message`` so an operator can jump straight to
it; a key without a line of its own is reported at its closest parent's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import yaml


class _Doc:
    """Plain data from YAML plus the line of every key path."""

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.lines: dict[str, int] = {}
        self.errors: list[str] = []

    def error(self, path: str, message: str) -> None:
        line = self.lines.get(path)
        if line is None:  # report at the closest parent that has a line
            parent = path
            while line is None and parent:
                parent = re.sub(r"(\.[^.\[]+|\[\d+\])$", "", parent)
                if parent == path:
                    break
                line = self.lines.get(parent)
        self.errors.append(f"{self.filename}:{line or 1}: {path or '(top)'}: {message}")

    def plain(self, loader: yaml.SafeLoader, node: yaml.Node, path: str) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for knode, vnode in node.value:
                key = str(loader.construct_object(knode))
                sub = f"{path}.{key}" if path else key
                if key in out:
                    self.lines[sub] = knode.start_mark.line + 1
                    self.error(sub, "duplicate key")
                    continue
                self.lines[sub] = knode.start_mark.line + 1
                out[key] = self.plain(loader, vnode, sub)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.plain(loader, item, f"{path}[{i}]") for i, item in enumerate(node.value)]
        return loader.construct_object(node)


def _unknown(doc: _Doc, data: dict[str, Any], allowed: set[str], path: str) -> None:
    for key in data:
        if key not in allowed:
            sub = f"{path}.{key}" if path else key
            doc.error(sub, f"unknown key (allowed: {', '.join(sorted(allowed))})")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _mapping(doc: _Doc, value: Any, path: str) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        doc.error(path, f"must be a mapping, got {_show(value)}")
        return None
    return value


def _entries(doc: _Doc, raw: Any, path: str, example: str, allowed: set[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Each mapping of a list of mappings (notify targets, gates, hooks, cohorts) with its key path, its
    unknown keys reported; not a list: one error that shows `example`, and no entries."""
    if not isinstance(raw, list):
        doc.error(path, f"must be a list like [{example}], got {_show(raw)}")
        return
    for i, item in enumerate(raw):
        at = f"{path}[{i}]"
        entry = _mapping(doc, item, at)
        if entry is not None:
            _unknown(doc, entry, allowed, at)
            yield at, entry


def _show(v: Any) -> str:
    if v is None:
        return "nothing"
    return repr(v) if isinstance(v, str) else str(v)


def _number(
    doc: _Doc,
    d: dict[str, Any],
    key: str,
    path: str,
    default: float | None,
    *,
    positive: bool = True,
    integer: bool = False,
    upper: float | None = None,
) -> Any:
    if key not in d:
        return default
    v = d[key]
    ok = _is_int(v) if integer else _is_num(v)
    kind = "an integer" if integer else "a number"
    if not ok or (positive and v <= 0 and not integer) or (integer and v < 0) or (upper is not None and v > upper):
        rng = (
            f" 0..{upper:g}"
            if upper is not None
            else (" > 0" if positive and not integer else " >= 0" if integer else "")
        )
        doc.error(f"{path}.{key}", f"must be {kind}{rng}, got {_show(v)}")
        return default
    return v
