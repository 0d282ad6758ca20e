"""The console's one read (GET /admin/overview): every route with its windows, series, shadow, cohorts and
retire fields; rollouts, kill switch, store and reload state, recent history."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response

from .. import __version__
from ..runtime import CONSOLE_SPAN_S
from ..store import Unavailable
from .common import JSONResponse, rollouts_of, routes_view, rt_of, shadow_of
from .judged import judged_window, retire_fields

if TYPE_CHECKING:
    from ..config import Route as RouteSpec
    from ..rollout import Rollouts
    from ..runtime import Runtime
    from ..shadow import Shadow


async def overview(request: Request) -> Response:
    """Everything the console shows, in one read: routes with their windows and the last five
    minutes, their cohorts' requests (apart: not in the comparison), rollouts, shadow mismatches,
    kill switch, Redis and reload state."""
    rt = rt_of(request)
    now = time.time()
    snap = rt.snapshot
    views = routes_view(rt)
    rt.collect_cohorts(now)  # this process's cohort counts up to this moment, as its windows are
    for view, r in zip(views, snap.config.routes, strict=True):
        await _overview_route(rt, rollouts_of(request), shadow_of(request), view, r, now)
    try:
        rollout_views = await rollouts_of(request).view()
    except Unavailable as exc:
        rollout_views = [{"error": str(exc)}]
    return JSONResponse(
        {
            "version": __version__,
            "environment": snap.config.environment,
            "kill": snap.kill,
            "redis": {"configured": rt.redis_url is not None, "up": rt.overrides.up, "scope": rt.windows.scope},
            "reloads": {"failures": rt.reload_failures, "last_error": rt.last_reload_error},
            "routes": views,
            "rollouts": rollout_views,
            "history": await _recent_history(rt),
            "time": now,
        }
    )


async def _overview_route(
    rt: Runtime, rollouts: Rollouts, shadow: Shadow, view: dict[str, Any], r: RouteSpec, now: float
) -> None:
    """One route's part of the overview: its window, the last five minutes of each side, shadow."""
    snap = rt.snapshot
    try:
        if r.guard or r.rollout:
            view["window"] = await judged_window(rt, rollouts, r, now)
        else:
            view["window"] = await rt.windows.view(r.name, now, 60.0)
        series = rt.windows.series
        view["series"] = {b: await series(r.name, b, now, CONSOLE_SPAN_S, 10) for b in ("new", "legacy")}
        view["shadow"] = (await shadow.recent(r.name))[:5] if r.shadow is not None else None
    except Unavailable as exc:
        view["error"] = str(exc)
    view["guard"] = dataclasses.asdict(r.guard) if r.guard is not None else None
    # for the console: what routes it under the kill switch, this process's last guard trip, and when the
    # window last restarted (a change of percent), so the evidence before it stays on screen, labelled
    view["source_under_kill"] = snap.sources[r.name] if snap.kill else None
    view["guard_trip"] = rt.guard_trips.get(r.name) if snap.sources[r.name] == "guard" else None
    outcomes = rt.windows.get(r.name)
    if "window" in view and outcomes is not None and "step_since" not in view["window"]:
        view["window"]["since"] = outcomes.since or None
    view["cohorts"] = await _overview_cohorts(rt, r, now, view.get("window")) if r.cohorts else None
    await retire_fields(rt, view, r, now)


async def _overview_cohorts(rt: Runtime, r: RouteSpec, now: float, window: dict[str, Any] | None) -> dict[str, Any]:
    """A route's cohorts for the console, apart from the comparison: what each matches, to which side,
    and how many requests it sent over the window's span (same scope; `requests` null when unknown)."""
    sent: dict[str, int] = {}
    span = window["span_s"] if window is not None else None
    if span is not None:
        try:
            sent = await rt.windows.cohort_requests(r.name, [c.name for c in r.cohorts], now, span)
        except Unavailable:
            span = None
    rows = []
    for c in r.cohorts:
        row: dict[str, Any] = {"name": c.name, "to": c.to, "matcher": c.matcher, "requests": sent.get(c.name)}
        if c.matcher == "users":  # counts, not the lists (up to 100,000 ids, read every second)
            runtime = rt.snapshot.members.get((r.name, c.name), frozenset())
            row |= {"file_members": len(c.users), "runtime_members": len(runtime)}
        else:
            row |= {"key": c.key, "op": c.op, "values": list(c.values), "trusted": c.trusted}
        rows.append(row)
    total = sum(sent.values()) if span is not None else None
    return {"scope": rt.windows.scope, "span_s": span, "requests": total, "by_cohort": rows}


async def _recent_history(rt: Runtime) -> list[dict[str, Any]] | dict[str, str]:
    try:
        return await rt.history.recent(100)
    except Unavailable as exc:
        return {"error": str(exc)}
