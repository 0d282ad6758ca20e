"""Edits of routes.yaml that keep the file a person wrote: comments, order, quoting and flow style.

PyYAML (config.py) reads the file into plain values and cannot write it back without losing its
comments; ruamel.yaml's round-trip mode keeps them, so a command that rewrites a route (`splitter
sync --write`, `splitter retire`) loads it here, changes only the keys it names, and dumps the rest
as it was. A path into a route is a tuple of keys; in a list (a route's `cohorts`) a key picks the
item of that `name`. No I/O: text in, text out; the caller reads and writes the file.
"""

from __future__ import annotations

import difflib
import io
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

Key = str | int


def _yaml() -> YAML:
    y = YAML(typ="rt")
    y.preserve_quotes = True
    y.width = 4096  # a long flow mapping stays on its line
    y.indent(mapping=2, sequence=4, offset=2)  # routes.yaml's `routes:\n  - name: ...`
    return y


def load(text: str) -> Any:
    """The document, round-trip: mappings and lists that remember their comments and style; ValueError
    (one line) when the text is not YAML."""
    try:
        return _yaml().load(text)
    except YAMLError as exc:
        raise ValueError(" ".join(str(exc).split())[:300]) from None


def dump(doc: Any, original: str | None = None) -> str:
    """The document as text. Given the text it was loaded from, every line whose words did not change
    keeps its original spacing: ruamel.yaml re-spaces `new:    {url: ...}` (columns people align)."""
    out = io.StringIO()
    _yaml().dump(doc, out)
    return out.getvalue() if original is None else _keep_spacing(original, out.getvalue())


def _keep_spacing(old: str, new: str) -> str:
    before, after = old.splitlines(True), new.splitlines(True)
    sm = difflib.SequenceMatcher(None, [_words(x) for x in before], [_words(x) for x in after], autojunk=False)
    out: list[str] = []
    for tag, i1, i2, j1, j2 in sm.get_opcodes():
        out += before[i1:i2] if tag == "equal" else after[j1:j2]
    return "".join(out)


def _words(line: str) -> str:
    return " ".join(line.split())


def route(doc: Any, name: str) -> Any:
    """The route called `name` (a round-trip mapping) in the document's `routes:` list; KeyError when none."""
    for r in (doc or {}).get("routes") or []:
        if isinstance(r, dict) and r.get("name") == name:
            return r
    raise KeyError(name)


def _child(node: Any, key: Key) -> Any:
    if isinstance(node, list) and isinstance(key, str):
        for item in node:
            if isinstance(item, dict) and item.get("name") == key:
                return item
        raise KeyError(key)
    return node[key]


def get(doc: Any, name: str, path: tuple[Key, ...]) -> Any:
    """The value at `path` in route `name`; KeyError when a part of it is missing."""
    node: Any = route(doc, name)
    for key in path:
        node = _child(node, key)
    return node


def set_value(doc: Any, name: str, path: tuple[Key, ...], value: Any) -> None:
    """Set the value at `path` in route `name` (its parent must exist); a new key goes last."""
    parent = get(doc, name, path[:-1])
    parent[path[-1]] = value


def remove(doc: Any, name: str, path: tuple[Key, ...]) -> bool:
    """Remove the key at `path` in route `name`; False when it was not there."""
    try:
        parent = get(doc, name, path[:-1])
    except KeyError:
        return False
    if path[-1] not in parent:
        return False
    del parent[path[-1]]
    return True


def diff(old: str, new: str, path: str) -> str:
    """A unified diff of the file before and after, as `git diff` would show it ('' when equal)."""
    a, b = (path, path) if path.startswith("/") else (f"a/{path}", f"b/{path}")
    lines = difflib.unified_diff(old.splitlines(True), new.splitlines(True), a, b)
    return "".join(lines)
