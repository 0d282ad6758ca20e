"""Cohorts: a route's cohorts, a `users` cohort's members in pages, and runtime changes to its members."""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple

import anyio.to_thread
import structlog
from starlette.requests import Request
from starlette.responses import Response

from ..config import MAX_COHORT_MEMBERS
from ..refused import Refused
from ..store import TooMany
from .common import Actor, JSONResponse, body, record, route_or_404, rt_of

if TYPE_CHECKING:
    from ..config import Cohort
    from ..runtime import Runtime

log = structlog.get_logger("splitter.admin")


MAX_MEMBER_ID = 256  # characters of one user id added at runtime


def cohort_or_404(rt: Runtime, route: str, name: str) -> Cohort:
    route_or_404(rt, route)
    cohorts = rt.snapshot.config.by_name[route].cohorts
    cohort = next((c for c in cohorts if c.name == name), None)
    if cohort is None:
        known = ", ".join(c.name for c in cohorts) or "none"
        raise Refused(404, "not_found", f"route {route!r} has no cohort {name!r} (cohorts: {known})")
    return cohort


def users_cohort(rt: Runtime, route: str, name: str) -> Cohort:
    """The cohort, if it is a `users` cohort: 404 unknown, 400 another matcher (it has no members)."""
    cohort = cohort_or_404(rt, route, name)
    if cohort.matcher != "users":
        raise Refused(400, "bad_request",
            f"cohort {name!r} of route {route!r} matches {cohort.matcher} {cohort.key}, not users: "
                            "it has no members to change or list")
    return cohort


def cohort_view(cohort: Cohort) -> dict[str, Any]:
    """A cohort as its listing shows it; a `users` cohort's members are added by `MemberPages.page`."""
    view: dict[str, Any] = {"name": cohort.name, "matcher": cohort.matcher, "to": cohort.to}
    if cohort.matcher != "users":
        return {**view, "key": cohort.key, "op": cohort.op, "values": list(cohort.values), "trusted": cohort.trusted}
    return view


DEFAULT_LIMIT, MAX_LIMIT = 1_000, 10_000  # members per page (SPEC "Framing": limit, default 1,000)


def page_args(request: Request) -> tuple[int, tuple[int, str] | None]:
    """`?limit=N&cursor=C`: the page size and where the page starts (None: at the beginning)."""
    raw = request.query_params.get("limit", str(DEFAULT_LIMIT))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
        raise Refused(400, "bad_request", f"limit must be an integer 1..{MAX_LIMIT}, got {raw[:40]!r}")
    cursor = request.query_params.get("cursor")
    if not cursor:
        return int(raw), None
    try:
        kind, after = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (ValueError, TypeError, UnicodeError, binascii.Error):
        kind = after = None
    if kind not in (0, 1) or not isinstance(after, str):
        raise Refused(400, "bad_request",
            f"cursor {cursor[:40]!r} is not one this API gave: use next_cursor from the last page")
    return int(raw), (kind, after)


def _cursor(kind: int, after: str) -> str:
    return base64.urlsafe_b64encode(json.dumps([kind, after]).encode()).decode("ascii")


class MemberPages:
    """A `users` cohort's members in pages: routes.yaml's (kind 0), then the runtime ones (kind 1), each
    sorted. A page is a bisect and a slice of lists sorted once per member set: the sets are replaced whole
    on every change (Snapshot.members), so a set's identity says whether its sorted list still holds.
    Why: the admin listener shares the proxy's event loop, and sorting and writing 99,000 members on
    every read (0.27 s each) pushed three readers' neighbours, the proxy's users, to a p50 of 465 ms.
    The sort runs in a thread, one at a time; a page costs about as much to write whatever the cohort's size.
    `answer` writes one page at a time and then pauses PAUSE times as long as the page took before the next:
    readers in a loop get at most about a fifth of the loop, the proxy's requests the rest (a page of 1,000
    ids of 200 characters takes ~0.5 ms; a whole 99,000-member listing still reads in about half a second)."""

    PAUSE = 4

    def __init__(self) -> None:
        self._sorted: dict[tuple[str, str], _Sorted] = {}
        self._lock = asyncio.Lock()
        self._turn = asyncio.Lock()

    async def answer(self, build: Callable[[], Awaitable[dict[str, Any]]]) -> Response:
        """The JSON answer `build` makes, written while no other page is; the next waits its pause."""
        async with self._turn:
            started = time.perf_counter()
            response = JSONResponse(await build())
            await asyncio.sleep(min((time.perf_counter() - started) * self.PAUSE, 0.1))  # the proxy's turn
        return response

    async def _lists(self, rt: Runtime, route: str, cohort: Cohort) -> _Sorted:
        key = (route, cohort.name)
        async with self._lock:
            runtime = rt.snapshot.members.get(key, frozenset())
            held = self._sorted.get(key)
            if held is None or held.files is not cohort.users or held.runtime is not runtime:
                held = self._sorted[key] = await anyio.to_thread.run_sync(_Sorted.of, cohort.users, runtime)
        return held

    async def page(
        self, rt: Runtime, route: str, cohort: Cohort, limit: int, start: tuple[int, str] | None
    ) -> dict[str, Any]:
        """`count`, this page's `file_members` and `runtime_members`, and `next_cursor` (null at the end)."""
        held = await self._lists(rt, route, cohort)
        files, runtime = held.sorted_files, held.sorted_runtime
        nf, total = len(files), len(files) + len(runtime)
        first = 0
        if start is not None:
            kind, after = start
            first = bisect.bisect_right(files, after) if kind == 0 else nf + bisect.bisect_right(runtime, after)
        end = min(first + limit, total)
        more = None
        if end < total:  # the cursor names the page's last member: a change between pages skips or repeats none
            more = _cursor(0, files[end - 1]) if end <= nf else _cursor(1, runtime[end - 1 - nf])
        return {
            "count": held.members,
            "file_members": files[first:end],
            "runtime_members": runtime[max(first - nf, 0) : max(end - nf, 0)],
            "next_cursor": more,
        }


class _Sorted(NamedTuple):
    """One cohort's member sets and what a page reads from them, made once per pair of sets."""

    files: frozenset[bytes]
    runtime: frozenset[bytes]
    sorted_files: list[str]
    sorted_runtime: list[str]
    members: int  # in either set

    @classmethod
    def of(cls, files: frozenset[bytes], runtime: frozenset[bytes]) -> _Sorted:
        def ids(members: frozenset[bytes]) -> list[str]:
            return sorted(u.decode("utf-8", "replace") for u in members)

        return cls(files, runtime, ids(files), ids(runtime), len(files | runtime))


def _pages(request: Request) -> MemberPages:
    pages: MemberPages = request.app.state.member_pages
    return pages


async def cohorts_view(request: Request) -> Response:
    """A route's cohorts; a `users` cohort with the first page of its members (`?limit=`) and the
    `next_cursor` to read the rest from its own listing."""
    rt = rt_of(request)
    name = request.path_params["name"]
    route_or_404(rt, name)
    limit, _ = page_args(request)
    pages = _pages(request)

    async def build() -> dict[str, Any]:
        views = []
        for c in rt.snapshot.config.by_name[name].cohorts:
            view = cohort_view(c)
            if c.matcher == "users":
                view |= await pages.page(rt, name, c, limit, None)
            views.append(view)
        return {"route": name, "cohorts": views}

    return await pages.answer(build)


async def cohort_members(request: Request) -> Response:
    """One `users` cohort's members, a page at a time: `?limit=` (default 1,000) and `?cursor=` (the
    last page's `next_cursor`)."""
    rt = rt_of(request)
    route, name = request.path_params["name"], request.path_params["cohort"]
    cohort = users_cohort(rt, route, name)
    limit, start = page_args(request)
    pages = _pages(request)

    async def build() -> dict[str, Any]:
        return {"route": route, **cohort_view(cohort), **await pages.page(rt, route, cohort, limit, start)}

    return await pages.answer(build)


def _member_ids(data: dict[str, Any], key: str) -> list[str]:
    """`add` or `remove`: a list of user ids, each a non-empty printable string; duplicates dropped."""
    raw = data.get(key, [])
    if not isinstance(raw, list):
        raise Refused(400, "bad_request", f"{key} must be a list of user ids, got {json.dumps(raw)[:80]}")
    for u in raw:
        if not isinstance(u, str) or not 0 < len(u) <= MAX_MEMBER_ID or not u.isprintable() or not _utf8(u):
            raise Refused(400, "bad_request",
                f"{key}: a user id must be a non-empty printable string of at most {MAX_MEMBER_ID} characters, "
                f"got {json.dumps(u)[:80]}"
            )
    return list(dict.fromkeys(raw))


async def change_cohort(request: Request, who: Actor) -> Any:
    """`{"add": [...], "remove": [...]}`: all or nothing. routes.yaml's own members cannot be
    removed at runtime (400); adding one is a no-op (it is a member already)."""
    rt = rt_of(request)
    route, name = request.path_params["name"], request.path_params["cohort"]
    cohort = users_cohort(rt, route, name)
    data = await body(request)
    extra = sorted(set(data) - {"add", "remove", "reason"})
    if extra:
        raise Refused(400, "bad_request",
            f'unknown key {extra[0]!r}: the body is {{"add": [ids], "remove": [ids], "reason": text}}')
    add, remove = _member_ids(data, "add"), _member_ids(data, "remove")
    if not add and not remove:
        raise Refused(400, "bad_request", 'nothing to change: give "add" and/or "remove", lists of user ids')
    both = set(add) & set(remove)
    if both:
        raise Refused(400, "bad_request", f"user id {min(both)!r} is both in add and in remove")
    in_file = [u for u in remove if u.encode() in cohort.users]
    if in_file:
        raise Refused(400, "bad_request",
            f"{in_file[0]!r} is one of routes.yaml's members of cohort {name!r}: remove it from "
                            "routes.yaml (runtime changes add and remove only runtime members); nothing was changed")
    add = [u for u in add if u.encode() not in cohort.users]
    limit = MAX_COHORT_MEMBERS - len(cohort.users)
    try:
        change = await rt.overrides.change_members((route, name), add, remove, limit)
    except TooMany as exc:
        raise Refused(400, "bad_request",
            f"cohort {name!r} of route {route!r} would have {len(cohort.users) + exc.after} members "
                            f"({len(cohort.users)} in routes.yaml, {exc.after} at runtime), more than "
                            f"{MAX_COHORT_MEMBERS}; nothing was changed") from None
    log.info("cohort members changed", who=who.name, route=route, cohort=name, added=change.added,
             removed=change.removed, runtime_members=change.after)
    old = {"cohort": name, "runtime_members": change.before}
    new = {"cohort": name, "runtime_members": change.after, "added": list(change.added_ids),
           "added_count": change.added, "removed": list(change.removed_ids), "removed_count": change.removed}
    await record(request, who, "cohort", route, old, new)
    count = len(cohort.users | rt.snapshot.members.get((route, name), frozenset()))
    return {"route": route, "cohort": name, "added": change.added, "removed": change.removed, "count": count,
            "file_members": len(cohort.users), "runtime_members": change.after}


def _utf8(text: str) -> bool:
    """Whether `text` has a UTF-8 form (JSON can carry a lone surrogate, a header cannot)."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
