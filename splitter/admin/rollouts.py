"""The rollouts: their view, an operator's action on one, and retiring a route whose rollout is done."""

from __future__ import annotations

import time
from typing import Any

import structlog
from starlette.requests import Request
from starlette.responses import Response

from ..refused import Refused
from .common import Actor, JSONResponse, body, record, rollouts_of, route_or_404, rt_of

log = structlog.get_logger("splitter.admin")


async def rollouts_view(request: Request) -> Response:
    """Every rollout: status, step, gates with their evidence, what it waits for, the actions its status takes."""
    return JSONResponse(await rollouts_of(request).view())


async def retire_route(request: Request, who: Actor) -> Any:
    """`splitter retire`: refused (409) unless the route is ready to retire, or `force` (the reason then says
    what it overrode); records history `retire` and the event `retired`. The CLI rewrites routes.yaml: the
    file lives where the operator runs it. `dry_run`: the same check, nothing recorded."""
    rt = rt_of(request)
    name = request.path_params["name"]
    route_or_404(rt, name)
    data = await body(request)
    force, dry_run = data.get("force", False), data.get("dry_run", False)
    if not isinstance(force, bool) or not isinstance(dry_run, bool):
        raise Refused(400, "bad_request", "force and dry_run must be true or false")
    now = time.time()
    ready, why_not = await rollouts_of(request).retire_check(rt.snapshot.config.by_name[name], now)
    if not ready and not force:
        raise Refused(409, "conflict", f"route {name!r} is not ready to retire: {why_not} (--force retires it anyway)")
    overrode = f"forced: {why_not}" if not ready else ""
    answer = {"route": name, "ready_to_retire": ready, "forced": overrode or None, "dry_run": dry_run}
    if dry_run:
        return answer
    await rollouts_of(request).mark_retired(name, now)
    reason = "; ".join(x for x in (who.reason, overrode) if x)
    old = rt.snapshot.percent[name]
    log.warning("route retired", who=who.name, route=name, forced=bool(overrode), reason=reason)
    await rt.history.record(who.name, who.source, "retire", name, old, 100, reason, who.on_behalf)
    return answer


async def rollout_action(request: Request, who: Actor) -> Any:
    """pause, resume, abort, promote (`{"full": true}`: to the last step), restart: as the status allows, else 409."""
    rt = rt_of(request)
    name, action = request.path_params["name"], request.path_params["action"]
    route_or_404(rt, name)
    if rt.snapshot.config.by_name[name].rollout is None:
        raise Refused(404, "not_found", f"route {name!r} has no rollout section in routes.yaml")
    if action not in ("pause", "resume", "abort", "promote", "restart"):
        raise Refused(404, "not_found", "action must be pause, resume, abort, promote or restart")
    full = (await body(request)).get("full", False) if action == "promote" else False
    if not isinstance(full, bool):
        raise Refused(400, "bad_request", "full must be true or false")
    log.info("rollout action", who=who.name, route=name, action=action, full=full)
    old = rt.snapshot.percent[name]
    view = await rollouts_of(request).act(name, action, full)  # Refused (409) when the status does not take it
    await record(request, who, f"rollout_{action}", name, old, rt.snapshot.percent[name])
    return view
