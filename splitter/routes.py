"""Route matching: the longest prefix on a segment boundary, found by path segments.

`/api/auth` matches `/api/auth` and `/api/auth/...`, never `/api/authx`; `/` matches every
path that starts with `/`; a path that matches no prefix is unmatched (None). The table is a
trie keyed by segment (the text between two `/`), built once when the config loads, so a
lookup walks the request path's segments (one dict lookup each) whatever the number of routes,
as a router's tree does (Go's httprouter), where a scan of every prefix grows with the routes.
The paths seen most recently are remembered with their answer (a dict of at most MAX_SEEN,
emptied when full; a table lives as long as its config), so a path asked again costs one lookup.

A prefix `Q` (no trailing `/`) matches a path iff the path's segments begin with Q's; a prefix
`Q/` (only `/` after config normalisation, but any is handled) matches iff they begin with Q's
and at least one more follows. The deepest match is the longest prefix.
"""

from __future__ import annotations

from typing import Generic, TypeVar

T = TypeVar("T")
MAX_SEEN = 4096
_UNSEEN = object()


class _Node(Generic[T]):
    __slots__ = ("below", "children", "deeper", "here")

    def __init__(self) -> None:
        self.children: dict[str, _Node[T]] = {}
        self.here: T | None = None  # prefix Q: matches a path ending here or going deeper
        self.below: T | None = None  # prefix Q/: matches only a path going deeper
        self.deeper: T | None = None  # what a path going deeper matches here: Q/ (the longer), else Q


class RouteTable(Generic[T]):
    """Prefixes to values; `match(path)` returns the value of the longest matching prefix."""

    __slots__ = ("_root", "_seen")

    def __init__(self, prefixes: list[tuple[str, T]] | tuple[tuple[str, T], ...]) -> None:
        self._root: _Node[T] = _Node()
        self._seen: dict[str, T | None] = {}
        for prefix, value in prefixes:
            if not prefix.startswith("/"):
                raise ValueError(f"a route prefix starts with /, got {prefix!r}")
            trailing = prefix.endswith("/")
            body = prefix[1:-1] if trailing else prefix[1:]
            node = self._root
            if trailing and prefix == "/":
                pass  # the root: Q is empty
            else:
                for seg in body.split("/"):
                    node = node.children.setdefault(seg, _Node())
            if trailing:
                if node.below is None:  # a duplicate: the first one wins, as in the config's order
                    node.below = value
            elif node.here is None:
                node.here = value
            node.deeper = node.below if node.below is not None else node.here

    def match(self, path: str) -> T | None:
        found = self._seen.get(path, _UNSEEN)
        if found is not _UNSEEN:
            return found  # type: ignore[return-value]  # a T or None, as stored below
        found = self._walk(path)
        if len(self._seen) >= MAX_SEEN:
            self._seen.clear()
        self._seen[path] = found
        return found

    def _walk(self, path: str) -> T | None:
        if not path.startswith("/"):
            return None
        node = self._root
        best = None
        for seg in path[1:].split("/"):
            if node.deeper is not None:  # one more segment follows this node
                best = node.deeper
            child = node.children.get(seg)
            if child is None:
                return best
            node = child
        return node.here if node.here is not None else best
