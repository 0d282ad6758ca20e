"""The routes and what routes a request: the percents (overrides, rollback), the kill switch, a user's bucket,
a route's shadow mismatches."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

import structlog
from starlette.requests import Request
from starlette.responses import Response

from .. import bucketing
from ..config import PERCENT_RULE, as_percent
from ..decide import Facts, decide
from ..refused import Refused
from ..store import Unavailable
from .common import (
    Actor,
    JSONResponse,
    body,
    record,
    rollouts_of,
    route_or_404,
    route_view,
    routes_view,
    rt_of,
    shadow_of,
)
from .judged import judged_window, judgement_of, retire_fields

if TYPE_CHECKING:
    from ..websocket import WebSockets

log = structlog.get_logger("splitter.admin")


async def list_routes(request: Request) -> Response:
    """The routes; for those a guard or a rollout judges, the window it judges (fleet or process)."""
    rt = rt_of(request)
    views = routes_view(rt)
    now = time.time()
    for view, r in zip(views, rt.snapshot.config.routes, strict=True):
        await retire_fields(rt, view, r, now)
        if r.guard is None and r.rollout is None:
            continue
        try:
            span, since = await rt.judged_span(r)
            view["window"] = await judged_window(rt, rollouts_of(request), r, now)
            judgement = await judgement_of(rt, rollouts_of(request), r, now, span, since)
            if judgement is not None:
                view["judgement"] = judgement
        except Unavailable as exc:
            view["window"] = {"scope": rt.windows.scope, "error": str(exc)}
    return JSONResponse(views)


async def get_kill(request: Request) -> Response:
    """`{"on": bool}`: whether the kill switch sends every route to legacy."""
    return JSONResponse({"on": rt_of(request).snapshot.kill})


async def bucket(request: Request) -> Response:
    """?user_id=ID: the bucket and the backend each route would pick for that user, live (cohorts, overrides, kill)."""
    uid = _raw_query_param(request.scope.get("query_string", b""), b"user_id")
    if not uid:
        raise Refused(400, "bad_request", "query parameter user_id is required")
    return JSONResponse(bucket_view(rt_of(request).snapshot, uid))


async def shadow_view(request: Request) -> Response:
    """The route's last shadow mismatches (status, headers and JSON fields that differ), newest first."""
    rt = rt_of(request)
    name = request.path_params["name"]
    route_or_404(rt, name)
    if rt.snapshot.config.by_name[name].shadow is None:
        raise Refused(404, "not_found", f"route {name!r} has no shadow section in routes.yaml")
    return JSONResponse({"route": name, "mismatches": await shadow_of(request).recent(name)})


# --- writes (each behind writer(): an operator's token) ----------------------------------------
async def set_route(request: Request, who: Actor) -> Any:
    """`{"percent": P, "reason"?}`: the route's percent now, fleet-wide (an override; pauses a rollout)."""
    rt = rt_of(request)
    name = request.path_params["name"]
    route_or_404(rt, name)
    data = await body(request)
    pct = as_percent(data.get("percent"))
    if pct is None:
        raise Refused(400, "bad_request", f"percent must be {PERCENT_RULE}, got {json.dumps(data.get('percent'))}")
    old = rt.snapshot.percent[name]
    await rt.overrides.set_percent(name, pct)
    log.info("override set", who=who.name, on_behalf=who.on_behalf, route=name, old=old, new=pct)
    await record(request, who, "set", name, old, pct)
    return route_view(rt, name)


async def clear_route(request: Request, who: Actor) -> Any:
    """Drop the route's override: back to routes.yaml's percent."""
    rt = rt_of(request)
    name = request.path_params["name"]
    route_or_404(rt, name)
    old = rt.snapshot.percent[name]
    await rt.overrides.clear(name)
    log.info("override cleared", who=who.name, route=name, old=old, new=rt.snapshot.percent[name])
    await record(request, who, "clear", name, old, rt.snapshot.percent[name])
    return route_view(rt, name)


async def rollback(request: Request, who: Actor) -> Any:
    """`{"route": NAME}` or `{"all": true}`: percent 0 (an override), at once."""
    rt = rt_of(request)
    data = await body(request)
    if data.get("all") is True:
        names = [r.name for r in rt.snapshot.config.routes]
    elif isinstance(data.get("route"), str):
        route_or_404(rt, data["route"])
        names = [data["route"]]
    else:
        raise Refused(400, "bad_request", 'body must be {"route": NAME} or {"all": true}')
    close = data.get("close_websockets", False)
    if not isinstance(close, bool):
        raise Refused(400, "bad_request", "close_websockets must be true or false")
    old = {n: rt.snapshot.percent[n] for n in names}
    if names:
        await rt.overrides.set_many(dict.fromkeys(names, 0))
    closed = 0
    if close:  # open connections to new reconnect, and land on legacy now
        websockets: WebSockets = request.app.state.websockets
        for n in names:
            closed += await websockets.close_route(n, "new", 1012, "rolled back: reconnect")
    log.warning("rollback", who=who.name, routes=names, old=old, new=0, websockets_closed=closed)
    for n in names:
        await record(request, who, "rollback", n, old[n], 0)
    return JSONResponse(routes_view(rt), headers={"X-Splitter-Websockets-Closed": str(closed)} if close else None)


async def kill_on(request: Request, who: Actor) -> Any:
    """The kill switch on: every request of every route goes to legacy."""
    return await _set_kill(request, who, True)


async def kill_off(request: Request, who: Actor) -> Any:
    """The kill switch off: routing by percent again."""
    return await _set_kill(request, who, False)


async def _set_kill(request: Request, who: Actor, on: bool) -> Any:
    rt = rt_of(request)
    old = rt.snapshot.kill
    await rt.overrides.set_kill(on)
    log.warning("kill switch", who=who.name, old=old, new=on)
    await record(request, who, "kill", None, old, on)
    return {"on": on}


def _raw_query_param(query: bytes, name: bytes) -> bytes | None:
    """The percent-decoded bytes of a query parameter: the id's exact bytes, as the proxy hashes them."""
    for part in query.split(b"&"):
        k, _, v = part.partition(b"=")
        if unquote_to_bytes(k.replace(b"+", b" ")) == name:
            return unquote_to_bytes(v.replace(b"+", b" "))
    return None


def bucket_view(snap: Any, user_id: bytes) -> dict[str, Any]:
    """Per route, the user's bucket and sub-bucket (which splits a bucket for a fractional percent)
    and the proxy's decision for a request with this id (`backend` is the role, `upstream` the backend
    that serves it; `reason` says what decided). Only the id is known here: `users` cohorts (routes.yaml's
    and runtime members) show; header, cookie and jwt_claim cohorts cannot match (nor can a `trusted` one:
    there is no peer)."""
    routes = []
    for r in snap.config.routes:
        d = decide(snap, r, Facts(None, user_id))
        assert d is not None  # the user id is known
        digest = bucketing.digest(user_id, r.salt)
        b, sub = bucketing.bucket_of(digest), bucketing.sub_bucket(digest)
        pct = snap.percent[r.name]
        row = {"route": r.name, "bucket": b, "sub_bucket": sub, "percent": pct, "backend": d.role, "reason": d.reason}
        routes.append(row | {"upstream": d.backend})
    return {"user_id": user_id.decode("utf-8", "replace"), "kill": snap.kill, "routes": routes}
