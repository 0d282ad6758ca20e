"""The migration's record: the change history, its progress (progress/), and the runtime state as one
document to export or import."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import structlog
from starlette.requests import Request
from starlette.responses import Response

from .. import progress
from ..config import MAX_COHORT_MEMBERS
from ..refused import Refused
from ..store import TooMany
from ..store.transfer import export_state, import_state
from .common import Actor, JSONResponse, body, rollouts_of, route_or_404, routes_view, rt_of
from .judged import retire_fields

if TYPE_CHECKING:
    from ..rollout import Rollouts
    from ..runtime import Runtime

log = structlog.get_logger("splitter.admin")


async def history(request: Request) -> Response:
    """Changes, newest first: ?route=NAME (also a route since removed), ?limit=N (1..10000)."""
    raw = request.query_params.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
        raise Refused(400, "bad_request", f"limit must be an integer 1..10000, got {raw!r}")
    return JSONResponse(await rt_of(request).history.recent(int(raw), request.query_params.get("route") or None))


async def progress_view(request: Request) -> Response:
    """The migration's progress (progress/): per route its state, timeline, each step's evidence with
    intervals, incidents and summary line; ?route=NAME for one. `splitter progress` renders it."""
    rt = rt_of(request)
    name = request.query_params.get("route") or None
    if name is not None:
        route_or_404(rt, name)
    now = time.time()
    routes = []
    for v, r in zip(routes_view(rt), rt.snapshot.config.routes, strict=True):
        if name is None or v["name"] == name:
            await retire_fields(rt, v, r, now)  # "ready to retire" is the route's, not its rollout's status
            routes.append(v)
    rollouts = {v["route"]: v for v in await rollouts_of(request).view()}
    # every route's record, a rollout in routes.yaml or not: a retired route's steps outlive its rollout section
    steps = {v["name"]: await _steps(rt, rollouts_of(request), v["name"], now) for v in routes}
    events = await rt.history.recent(10_000)  # the kill switch's events name no route: filtered in progress/model.py
    doc = progress.build(rt.snapshot.config.environment, now, routes, rollouts, steps, events)
    return JSONResponse(doc)


async def _steps(rt: Runtime, rollouts: Rollouts, name: str, now: float) -> list[dict[str, Any]]:
    """A rollout's ended steps (with their counts) and, while it is on a step, that step so far."""
    state = await rt.overrides.get_rollout(name)
    if not state:
        return []
    past = [s for s in state.get("past_steps") or [] if isinstance(s, dict)]
    r = rt.snapshot.config.by_name[name]
    step = int(state["step"])
    if r.rollout is None or step < 0 or state["status"] not in ("running", "awaiting_approval", "paused", "baking"):
        return past
    new, legacy = await rollouts.evidence(r, state, now)
    counts = {"new": new.fields(), "legacy": legacy.fields()}
    current = {"percent": r.rollout.steps[step], "since": float(state["since"]), "until": None, "counts": counts,
               "bake": state["status"] == "baking"}
    return [*past, current]


async def state_export(request: Request) -> Response:
    """The runtime state as one document (`splitter state export`; store/transfer.py)."""
    rt = rt_of(request)
    return JSONResponse(await export_state(rt.overrides, rt.snapshot.config.by_name))


async def state_import(request: Request, who: Actor) -> Any:
    """Write an export into this proxy's store (`splitter state import`): how much of each part was written."""
    rt = rt_of(request)
    try:
        written = await import_state(rt.overrides, await body(request), MAX_COHORT_MEMBERS)
    except ValueError as exc:
        raise Refused(400, "bad_request", str(exc)) from None
    except TooMany as exc:
        raise Refused(400, "bad_request", f"members: {exc}; nothing more was imported") from None
    log.warning("state imported", who=who.name, store=rt.overrides.name, **written)
    return {"store": rt.overrides.name, "imported": written}
