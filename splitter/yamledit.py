"""routes.yaml edited in place: a route's keys set or removed, every other byte of the file kept.

`splitter retire` pins a route to new and `splitter sync --write` writes the live percents, both into the
file the operator commits to git, so the file keeps saying what runs. A plain YAML dump drops every comment;
ruamel.yaml's round-trip dump keeps them but still rewrites lines nobody asked to change (quotes dropped,
`new:    {url: ...}` re-spaced, indentation guessed), which makes a noisy diff in review. So ruamel.yaml's
round-trip parser only says where each key and value is (line, column), and the edit is spliced into the
text: the lines of a removed key, the scalar of a changed value. What is not edited stays byte for byte,
comments included; a comment on a removed key's own lines (its line, or inside its block) goes with it.
The result is parsed again and checked to hold what was asked, else EditError: the file is never written
half right. This module does no I/O: text in, text out.
"""

from __future__ import annotations

import difflib
import io
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError

Key = str | int
_SCALAR = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^']|'')*'|[^\s,}\]#]+")
_QUIET = re.compile(r"\s*(#.*)?$")  # a blank or comment-only line


class EditError(Exception):
    """The file cannot be edited as asked (not YAML, no such route, a layout it cannot splice): one line."""


def edit_route(text: str, route: str, set_keys: Mapping[str, Any], remove: Iterable[str] = ()) -> str:
    """routes.yaml's text with route `route`'s `set_keys` set and `remove` removed. Setting a key that holds
    a per-environment mapping: a plain value goes to every environment (`percent: 100` pins each), a mapping
    sets the environments it names."""
    doc = _load(text)
    routes = doc.get("routes") if isinstance(doc, CommentedMap) else None
    if not isinstance(routes, CommentedSeq):
        raise EditError("the file has no routes: list")
    index = next((i for i, r in enumerate(routes) if isinstance(r, CommentedMap) and r.get("name") == route), None)
    if index is None:
        known = ", ".join(str(r.get("name")) for r in routes if isinstance(r, CommentedMap))
        raise EditError(f"no route {route!r} in the file (routes: {known or 'none'})")
    entry = routes[index]
    if entry.fa.flow_style():
        raise EditError(f"route {route!r} is written on one line ({{name: ...}}): edit it by hand")
    lines = text.splitlines(True)
    ends = _ends(doc, routes, index, lines)
    edits: list[tuple[int, int, int, int, str]] = []  # (line, col, end line, end col, new text), 0-based
    for key, value in set_keys.items():
        edits += _set(entry, key, value, ends, lines)
    for key in remove:
        if key in entry:
            line, _ = entry.lc.key(key)
            edits.append((line, 0, ends[key] + 1, 0, ""))
    new = _splice(lines, edits)
    _check(new, route, set_keys, remove)
    return new


def _load(text: str) -> Any:
    try:
        return YAML().load(text)
    except YAMLError as exc:
        raise EditError(f"not YAML ({str(exc).splitlines()[0]})") from None


def _ends(doc: CommentedMap, routes: CommentedSeq, index: int, lines: list[str]) -> dict[str, int]:
    """The last line of each key's value in the route (0-based): up to the next key, the next route or the
    next top-level key, less the blank and comment-only lines before it (they belong to what follows)."""
    entry = routes[index]
    keys = list(entry)
    after = routes.lc.item(index + 1)[0] if index + 1 < len(routes) else _next_top(doc, "routes", len(lines))
    out = {}
    for i, key in enumerate(keys):
        stop = entry.lc.key(keys[i + 1])[0] if i + 1 < len(keys) else after
        last = stop - 1
        while last > entry.lc.key(key)[0] and _QUIET.match(lines[last]):
            last -= 1
        out[key] = last
    return out


def _next_top(doc: CommentedMap, key: str, eof: int) -> int:
    keys = list(doc)
    at = keys.index(key)
    return doc.lc.key(keys[at + 1])[0] if at + 1 < len(keys) else eof


def _set(entry: CommentedMap, key: str, value: Any, ends: dict[str, int], lines: list[str]) -> list[Any]:
    """The edits that set `key` to `value`: each environment's scalar, the scalar, or a new line."""
    old = entry.get(key)
    if key not in entry:
        col = entry.lc.key(next(iter(entry)))[1]
        last = max(ends.values())
        return [(last + 1, 0, last + 1, 0, f"{' ' * col}{key}: {_flow(value)}\n")]
    if isinstance(old, CommentedMap):
        envs = value if isinstance(value, Mapping) else dict.fromkeys(old, value)
        missing = [e for e in envs if e not in old]
        if missing:
            raise EditError(f"{key} names no environment {missing[0]!r}: add it by hand")
        return [_scalar_edit(old, env, v, lines) for env, v in envs.items()]
    if isinstance(value, Mapping) or isinstance(old, (CommentedSeq, list, dict)):
        raise EditError(f"{key}: cannot replace {type(old).__name__} with {type(value).__name__}: edit it by hand")
    return [_scalar_edit(entry, key, value, lines)]


def _scalar_edit(parent: CommentedMap, key: str, value: Any, lines: list[str]) -> tuple[int, int, int, int, str]:
    line, col = parent.lc.value(key)
    m = _SCALAR.match(lines[line], col)
    if m is None:
        raise EditError(f"{key}: no value found at line {line + 1}: edit it by hand")
    new, end = _flow(value), m.end()
    rest = lines[line][end:]
    gap = len(rest) - len(rest.lstrip(" "))
    if rest.lstrip(" ").startswith("#"):  # a comment after the value keeps its column (one space at least)
        grow = len(new) - (end - col)
        if grow > 0:
            end += min(grow, gap - 1)
        else:
            new += " " * -grow
    return (line, col, line, end, new)


def _flow(value: Any) -> str:
    """A value as YAML flow text; JSON is YAML, and a percent is a plain number."""
    return json.dumps(value)


def _splice(lines: list[str], edits: list[tuple[int, int, int, int, str]]) -> str:
    """Apply the edits from the bottom of the file up, so each one's positions are still the parser's."""
    text = list(lines)
    for line, col, end_line, end_col, new in sorted(edits, reverse=True):
        head = text[line][:col] if line < len(text) else ""
        tail = text[end_line][end_col:] if end_line < len(text) else ""
        text[line : end_line + 1] = [head + new + tail]
    return "".join(text)


def _check(text: str, route: str, set_keys: Mapping[str, Any], remove: Iterable[str]) -> None:
    """The edited text parses and holds what was asked; anything else is a bug, never a written file."""
    entry = next(r for r in _load(text)["routes"] if r.get("name") == route)
    for key, value in set_keys.items():
        got = entry.get(key)
        if isinstance(value, Mapping):
            ok = isinstance(got, dict) and all(got.get(e) == v for e, v in value.items())
        else:
            ok = all(v == value for v in got.values()) if isinstance(got, dict) else got == value
        if not ok:
            raise EditError(f"{key}: the edit did not read back as {value!r}; file left alone")
    if any(key in entry for key in remove):
        raise EditError("a removed key is still there after the edit; file left alone")


# --- the round-trip document (splitter sync): a list extended in place, a value set by its path -------------
# A path into a route is a tuple of keys; in a list (a route's `cohorts`) a key picks the item of that `name`.


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


unified_diff = diff
