"""The admin listener: /metrics, /healthz, /readyz and /admin/*.

Reads are open (the listener binds to 127.0.0.1 by default); every mutation
needs `Authorization: Bearer $SPLITTER_ADMIN_TOKEN`. `HostGuard` wraps the whole
app: a `Host` that is not an IP literal, `localhost` or a name in
`--admin-allowed-hosts` gets 403, so a page on a rebound DNS name cannot read the
API from an operator's browser (Django's ALLOWED_HOSTS, Starlette's
TrustedHostMiddleware); every answer carries `X-Content-Type-Options: nosniff`.
Reads are open (the listener binds to 127.0.0.1 by default) unless routes.yaml says
`admin: {reads: token}` (then /admin/* reads need a viewer token; /metrics, /healthz,
/readyz and the console's static files stay open). Every mutation needs an operator's
`Authorization: Bearer <token>` (tokens.py); the token's name is who made the change, and
each change is one history event (history.py) with the body's optional `reason`.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import bisect
import dataclasses
import ipaddress
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote_to_bytes

import anyio.to_thread
import structlog
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import __version__, bucketing, judge, progress, strictjson
from .config import MAX_COHORT_MEMBERS, PERCENT_RULE, as_percent
from .console import console_routes
from .decide import Facts, decide
from .metrics import CONTENT_TYPE
from .rollout import Refused as RolloutRefused
from .rollout import retire_view
from .runtime import CONSOLE_SPAN_S
from .store import Conflict, TooMany, Unavailable
from .store.transfer import export_state, import_state
from .tokens import Identity

if TYPE_CHECKING:
    from .config import Cohort
    from .config import Route as RouteSpec
    from .rollout import Rollouts
    from .runtime import Runtime
    from .shadow import Shadow
    from .websocket import WebSockets

log = structlog.get_logger("splitter.admin")


class JSONResponse(_StarletteJSONResponse):
    """Every admin answer is written here: strict JSON (strictjson.dumps: no Infinity or NaN, a
    non-finite float is null), so no field can make a read fail the way Starlette's encoder does."""

    def render(self, content: Any) -> bytes:
        return strictjson.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


class _Refused(Exception):
    def __init__(self, status: int, message: str) -> None:
        self.status, self.message = status, message


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who makes a change: the token's name; how (cli, console, api); why; and whom the
    client says it acts for (X-Splitter-Actor: kept as on_behalf, never as the identity)."""

    name: str
    source: str
    reason: str
    on_behalf: str | None


HOW = "set SPLITTER_ADMIN_TOKEN or SPLITTER_ADMIN_TOKENS_FILE in the proxy's environment"
NO_TOKENS = f"admin changes are disabled: {HOW} and send a token as 'Authorization: Bearer <token>'"
WRONG_TOKEN = "wrong or missing admin token (Authorization: Bearer <SPLITTER_ADMIN_TOKEN or a tokens file token>)"
CLIENT_SOURCES = ("cli", "console")


def identify(rt: Runtime, headers: Headers) -> Identity | None:
    """The identity the request's bearer token proves; None without one; 401 for a wrong one."""
    value = headers.get("authorization", "")
    if not value:
        return None
    scheme, _, given = value.partition(" ")
    identity = rt.tokens.identify(given.strip()) if scheme.lower() == "bearer" else None
    if identity is None:
        raise _Refused(401, WRONG_TOKEN)
    return identity


class _ReadGate:
    """`admin: {reads: token}`: a read of /admin/* needs a viewer (or operator) token."""

    def __init__(self, app: Any, rt: Runtime) -> None:
        self.app, self.rt = app, rt

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        gated = self.rt.snapshot.config.admin_reads == "token" and scope["type"] == "http"
        if gated and scope["path"].startswith("/admin/") and scope["method"] in ("GET", "HEAD"):
            try:
                if not self.rt.tokens.configured:
                    raise _Refused(403, f"reads need a token (admin.reads: token) but none is configured: {HOW}")
                if identify(self.rt, Headers(scope=scope)) is None:
                    raise _Refused(401, "reads need a viewer token (admin.reads: token): Authorization: Bearer <token>")
            except _Refused as exc:
                await JSONResponse({"error": exc.message}, exc.status)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def create_admin(rt: Runtime, rollouts: Rollouts, shadow: Shadow, websockets: WebSockets) -> HostGuard:
    """The admin app: the endpoints below, which read what they act on from `app.state`
    (rt, rollouts, shadow, websockets), as Starlette's endpoints do."""
    admin = Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/admin/routes", list_routes),
            Route("/admin/routes/{name}", writer(set_route), methods=["PUT"]),
            Route("/admin/routes/{name}/override", writer(clear_route), methods=["DELETE"]),
            Route("/admin/routes/{name}/retire", writer(retire_route), methods=["POST"]),
            Route("/admin/rollback", writer(rollback), methods=["POST"]),
            Route("/admin/kill", get_kill, methods=["GET"]),
            Route("/admin/kill", writer(kill_on), methods=["PUT"]),
            Route("/admin/kill", writer(kill_off), methods=["DELETE"]),
            Route("/admin/bucket", bucket),
            Route("/admin/shadow/{name}", shadow_view),
            Route("/admin/rollouts", rollouts_view),
            Route("/admin/rollouts/{name}/{action}", writer(rollout_action), methods=["POST"]),
            Route("/admin/overview", overview),
            Route("/admin/history", history),
            Route("/admin/progress", progress_view),
            Route("/admin/whoami", whoami),
            Route("/admin/state", state_export),
            Route("/admin/state", writer(state_import), methods=["PUT"]),
            Route("/admin/routes/{name}/cohorts", cohorts_view),
            Route("/admin/routes/{name}/cohorts/{cohort}", cohort_members, methods=["GET"]),
            Route("/admin/routes/{name}/cohorts/{cohort}", writer(change_cohort), methods=["PUT"]),
            *console_routes(),
        ],
        exception_handlers=_ERRORS,
    )
    admin.state.rt, admin.state.rollouts = rt, rollouts
    admin.state.shadow, admin.state.websockets = shadow, websockets
    admin.state.member_pages = MemberPages()
    admin.add_middleware(_ReadGate, rt=rt)
    return HostGuard(admin, rt.settings.admin_allowed_hosts)


# --- what the endpoints share ------------------------------------------------------------------
def _rt(request: Request) -> Runtime:
    rt: Runtime = request.app.state.rt
    return rt


def _rollouts(request: Request) -> Rollouts:
    rollouts: Rollouts = request.app.state.rollouts
    return rollouts


def _shadow(request: Request) -> Shadow:
    shadow: Shadow = request.app.state.shadow
    return shadow


async def authorize(request: Request) -> Actor:
    """Who makes this change: 403 without tokens configured or for a viewer, 401 for none or a wrong one."""
    rt = _rt(request)
    if not rt.tokens.configured:
        raise _Refused(403, NO_TOKENS)
    identity = identify(rt, request.headers)
    if identity is None:
        raise _Refused(401, WRONG_TOKEN)
    if not identity.may_change:
        raise _Refused(403, f"token {identity.name!r} has the role {identity.role}: changes need an operator token")
    source = request.headers.get("x-splitter-source", "")
    try:
        data = _loads(await request.body() or b"{}")
    except UnicodeEncodeError:
        raise _Refused(400, _NOT_TEXT) from None
    except ValueError:
        data = {}  # the endpoint says what is wrong with its body
    reason = data.get("reason", "") if isinstance(data, dict) else ""
    if not isinstance(reason, str) or len(reason) > 500:
        raise _Refused(400, "reason must be a string of at most 500 characters")
    on_behalf = request.headers.get("x-splitter-actor", "")[:64] or None
    return Actor(identity.name, source if source in CLIENT_SOURCES else "api", reason, on_behalf)


async def record(request: Request, who: Actor, action: str, route: str | None, old: Any, new: Any) -> None:
    await _rt(request).history.record(who.name, who.source, action, route, old, new, who.reason, who.on_behalf)


_NOT_TEXT = "body must be JSON text (no lone surrogates such as \\ud800)"


def _loads(raw: bytes) -> Any:
    """A request body's JSON, which must be text: a lone UTF-16 surrogate (JSON's "\\ud800") would be
    stored, then fail every read that writes it out (a 500 for `GET /admin/history`); ValueError."""
    data = json.loads(raw)
    if b"\\u" in raw:
        json.dumps(data, ensure_ascii=False).encode()  # UnicodeEncodeError is a ValueError
    return data


async def body(request: Request) -> dict[str, Any]:
    try:
        data = _loads(await request.body() or b"{}")
    except UnicodeEncodeError:
        raise _Refused(400, _NOT_TEXT) from None
    except ValueError:
        raise _Refused(400, "body must be JSON") from None
    if not isinstance(data, dict):
        raise _Refused(400, "body must be a JSON object")
    return data


def route_or_404(rt: Runtime, name: str) -> None:
    if name not in rt.snapshot.config.by_name:
        known = ", ".join(r.name for r in rt.snapshot.config.routes)
        raise _Refused(404, f"unknown route {name!r} (routes: {known})")


def routes_view(rt: Runtime) -> list[dict[str, Any]]:
    snap = rt.snapshot
    return [
        {
            "name": r.name,
            "prefix": r.prefix,
            "percent": 0 if snap.kill else snap.percent[r.name],
            "file_percent": r.percent,
            "source": "kill" if snap.kill else snap.sources[r.name],
        }
        for r in snap.config.routes
    ]


def route_view(rt: Runtime, name: str) -> dict[str, Any]:
    return next(r for r in routes_view(rt) if r["name"] == name)


Write = Callable[[Request, Actor], Awaitable[Any]]


def writer(impl: Write) -> Callable[[Request], Awaitable[Response]]:
    """One wrapper for every write: authorize, then answer JSON (errors: _ERRORS below)."""

    async def endpoint(request: Request) -> Response:
        result = await impl(request, await authorize(request))
        return result if isinstance(result, Response) else JSONResponse(result)

    return endpoint


# --- reads -------------------------------------------------------------------------------------
async def healthz(request: Request) -> Response:
    """Alive, which store holds the runtime state (memory, sqlite PATH, redis URL, sentinel SERVICE), and the
    routes file it serves (`splitter sync` and `retire` edit that one by default)."""
    rt = _rt(request)
    return JSONResponse({"status": "ok", "store": rt.overrides.name, "config": rt.snapshot.config.path})


async def readyz(request: Request) -> Response:
    """200 once the proxy serves (config loaded, store reachable), else 503 with the reason: the readiness probe."""
    ok, why = _rt(request).ready
    return JSONResponse({"ready": ok, "reason": why}, 200 if ok else 503)


async def metrics(request: Request) -> Response:
    """Prometheus exposition: every `splitter_*` series (fleet-wide where the windows are)."""
    return Response(_rt(request).metrics.render(), media_type=CONTENT_TYPE)


async def overview(request: Request) -> Response:
    """Everything the console shows, in one read: routes with their windows and the last five
    minutes, their cohorts' requests (apart: not in the comparison), rollouts, shadow mismatches,
    kill switch, Redis and reload state."""
    rt = _rt(request)
    now = time.time()
    snap = rt.snapshot
    views = routes_view(rt)
    rt.collect_cohorts(now)  # this process's cohort counts up to this moment, as its windows are
    for view, r in zip(views, snap.config.routes, strict=True):
        await _overview_route(rt, _rollouts(request), _shadow(request), view, r, now)
    try:
        rollout_views = await _rollouts(request).view()
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
            view["window"] = await _judged_window(rt, rollouts, r, now)
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
    await _retire_fields(rt, view, r, now)


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


async def list_routes(request: Request) -> Response:
    """The routes; for those a guard or a rollout judges, the window it judges (fleet or process)."""
    rt = _rt(request)
    views = routes_view(rt)
    now = time.time()
    for view, r in zip(views, rt.snapshot.config.routes, strict=True):
        await _retire_fields(rt, view, r, now)
        if r.guard is None and r.rollout is None:
            continue
        try:
            span, since = await rt.judged_span(r)
            view["window"] = await _judged_window(rt, _rollouts(request), r, now)
            judgement = await _judgement(rt, _rollouts(request), r, now, span, since)
            if judgement is not None:
                view["judgement"] = judgement
        except Unavailable as exc:
            view["window"] = {"scope": rt.windows.scope, "error": str(exc)}
    return JSONResponse(views)


async def _retire_fields(rt: Runtime, view: dict[str, Any], r: RouteSpec, now: float) -> None:
    """A rollout's route: ready to retire (the rollout done, legacy unused for retire_after_s), and when legacy
    last served it (fleet-wide; null: not seen), with the operator's sentence ("legacy last served ... ago").
    Other routes have no rollout to finish: their view stays as it was (the gauge has legacy's last request)."""
    if r.rollout is None:
        return
    last = rt.legacy_last.get(r.name)
    view.update(ready_to_retire=False, legacy_last_request=last, retire_says=None)
    try:
        state = await rt.overrides.get_rollout(r.name)
    except Unavailable:
        return
    said = retire_view(r.rollout, state, last, now)
    view.update(ready_to_retire=said["ready_to_retire"], retire_says=said["says"], ready_in_s=said["ready_in_s"])
    view["retired"] = state.get("retired") if state else None


async def _judged_window(rt: Runtime, rollouts: Rollouts, r: RouteSpec, now: float) -> dict[str, Any]:
    """The window a guard judges, or everything a rollout's current step is judged on (since it
    began, not its last interval): the span shown is the span judged."""
    span, since = await rt.judged_span(r)
    state = await rt.overrides.get_rollout(r.name) if r.guard is None and r.rollout is not None else None
    if not state or int(state["step"]) < 0 or state.get("since") is None:
        return await rt.windows.view(r.name, now, span, since)
    new, legacy = await rollouts.evidence(r, state, now)
    step_since = float(state["since"])
    return {
        "scope": rt.windows.scope,
        "span_s": round(max(0.0, now - step_since), 1),
        "since": step_since,
        "step_since": step_since,
        "new": new.totals().view(),
        "legacy": legacy.totals().view(),
    }


async def _judgement(
    rt: Runtime, rollouts: Rollouts, r: RouteSpec, now: float, span: float, since: float | None
) -> dict[str, Any] | None:
    """The judge's evidence on the window a guard or rollout with `confidence` judges: estimate,
    interval, p-value, verdict per gate; None for threshold-only gates."""
    if r.guard is not None and r.guard.confidence is not None:
        gates: Any = r.guard
    else:
        gates = r.rollout.gates if r.rollout is not None else None
    if gates is None or gates.confidence is None:
        return None
    rollout_gates = r.rollout is not None and gates is r.rollout.gates
    state = await rt.overrides.get_rollout(r.name) if rollout_gates else None
    if state and int(state["step"]) >= 0:
        new, legacy = await rollouts.evidence(r, state, now)  # at 100 %: legacy of the step before
    else:
        new, legacy = await rt.windows.pair(r.name, now, span, since)
    checks, verdict = judge.at_confidence(gates, new, legacy)
    return {"confidence": gates.confidence, "verdict": verdict, "checks": [c.view() for c in checks]}


async def get_kill(request: Request) -> Response:
    """`{"on": bool}`: whether the kill switch sends every route to legacy."""
    return JSONResponse({"on": _rt(request).snapshot.kill})


async def bucket(request: Request) -> Response:
    """?user_id=ID: the bucket and the backend each route would pick for that user, live (cohorts, overrides, kill)."""
    uid = _raw_query_param(request.scope.get("query_string", b""), b"user_id")
    if not uid:
        raise _Refused(400, "query parameter user_id is required")
    return JSONResponse(bucket_view(_rt(request).snapshot, uid))


async def shadow_view(request: Request) -> Response:
    """The route's last shadow mismatches (status, headers and JSON fields that differ), newest first."""
    rt = _rt(request)
    name = request.path_params["name"]
    route_or_404(rt, name)
    if rt.snapshot.config.by_name[name].shadow is None:
        raise _Refused(404, f"route {name!r} has no shadow section in routes.yaml")
    return JSONResponse({"route": name, "mismatches": await _shadow(request).recent(name)})


async def rollouts_view(request: Request) -> Response:
    """Every rollout: status, step, gates with their evidence, what it waits for, the actions its status takes."""
    return JSONResponse(await _rollouts(request).view())


async def history(request: Request) -> Response:
    """Changes, newest first: ?route=NAME (also a route since removed), ?limit=N (1..10000)."""
    raw = request.query_params.get("limit", "100")
    if not raw.isdigit() or not 1 <= int(raw) <= 10_000:
        raise _Refused(400, f"limit must be an integer 1..10000, got {raw!r}")
    return JSONResponse(await _rt(request).history.recent(int(raw), request.query_params.get("route") or None))


async def progress_view(request: Request) -> Response:
    """The migration's progress (progress.py): per route its state, timeline, each step's evidence with
    intervals, incidents and summary line; ?route=NAME for one. `splitter progress` renders it."""
    rt = _rt(request)
    name = request.query_params.get("route") or None
    if name is not None:
        route_or_404(rt, name)
    now = time.time()
    routes = []
    for v, r in zip(routes_view(rt), rt.snapshot.config.routes, strict=True):
        if name is None or v["name"] == name:
            await _retire_fields(rt, v, r, now)  # "ready to retire" is the route's, not its rollout's status
            routes.append(v)
    rollouts = {v["route"]: v for v in await _rollouts(request).view()}
    # every route's record, a rollout in routes.yaml or not: a retired route's steps outlive its rollout section
    steps = {v["name"]: await _steps(rt, _rollouts(request), v["name"], now) for v in routes}
    events = await rt.history.recent(10_000)  # the kill switch's events name no route: filtered in progress.py
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
    rt = _rt(request)
    return JSONResponse(await export_state(rt.overrides, rt.snapshot.config.by_name))


async def state_import(request: Request, who: Actor) -> Any:
    """Write an export into this proxy's store (`splitter state import`): how much of each part was written."""
    rt = _rt(request)
    try:
        written = await import_state(rt.overrides, await body(request), MAX_COHORT_MEMBERS)
    except ValueError as exc:
        raise _Refused(400, str(exc)) from None
    except TooMany as exc:
        raise _Refused(400, f"members: {exc}; nothing more was imported") from None
    log.warning("state imported", who=who.name, store=rt.overrides.name, **written)
    return {"store": rt.overrides.name, "imported": written}


async def whoami(request: Request) -> Response:
    """Whose token this is (the console shows it): 401 for none or a wrong one."""
    identity = identify(_rt(request), request.headers)
    if identity is None:
        raise _Refused(401, "no token: send 'Authorization: Bearer <token>'")
    return JSONResponse({"name": identity.name, "role": identity.role})


# --- writes (each behind writer(): an operator's token) ----------------------------------------
async def set_route(request: Request, who: Actor) -> Any:
    """`{"percent": P, "reason"?}`: the route's percent now, fleet-wide (an override; pauses a rollout)."""
    rt = _rt(request)
    name = request.path_params["name"]
    route_or_404(rt, name)
    data = await body(request)
    pct = as_percent(data.get("percent"))
    if pct is None:
        raise _Refused(400, f"percent must be {PERCENT_RULE}, got {json.dumps(data.get('percent'))}")
    old = rt.snapshot.percent[name]
    await rt.overrides.set_percent(name, pct)
    log.info("override set", who=who.name, on_behalf=who.on_behalf, route=name, old=old, new=pct)
    await record(request, who, "set", name, old, pct)
    return route_view(rt, name)


async def clear_route(request: Request, who: Actor) -> Any:
    """Drop the route's override: back to routes.yaml's percent."""
    rt = _rt(request)
    name = request.path_params["name"]
    route_or_404(rt, name)
    old = rt.snapshot.percent[name]
    await rt.overrides.clear(name)
    log.info("override cleared", who=who.name, route=name, old=old, new=rt.snapshot.percent[name])
    await record(request, who, "clear", name, old, rt.snapshot.percent[name])
    return route_view(rt, name)


async def rollback(request: Request, who: Actor) -> Any:
    """`{"route": NAME}` or `{"all": true}`: percent 0 (an override), at once."""
    rt = _rt(request)
    data = await body(request)
    if data.get("all") is True:
        names = [r.name for r in rt.snapshot.config.routes]
    elif isinstance(data.get("route"), str):
        route_or_404(rt, data["route"])
        names = [data["route"]]
    else:
        raise _Refused(400, 'body must be {"route": NAME} or {"all": true}')
    close = data.get("close_websockets", False)
    if not isinstance(close, bool):
        raise _Refused(400, "close_websockets must be true or false")
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
    rt = _rt(request)
    old = rt.snapshot.kill
    await rt.overrides.set_kill(on)
    log.warning("kill switch", who=who.name, old=old, new=on)
    await record(request, who, "kill", None, old, on)
    return {"on": on}


async def retire_route(request: Request, who: Actor) -> Any:
    """`splitter retire`: refused (409) unless the route is ready to retire, or `force` (the reason then says
    what it overrode); records history `retire` and the event `retired`. The CLI rewrites routes.yaml: the
    file lives where the operator runs it. `dry_run`: the same check, nothing recorded."""
    rt = _rt(request)
    name = request.path_params["name"]
    route_or_404(rt, name)
    data = await body(request)
    force, dry_run = data.get("force", False), data.get("dry_run", False)
    if not isinstance(force, bool) or not isinstance(dry_run, bool):
        raise _Refused(400, "force and dry_run must be true or false")
    now = time.time()
    ready, why_not = await _rollouts(request).retire_check(rt.snapshot.config.by_name[name], now)
    if not ready and not force:
        raise _Refused(409, f"route {name!r} is not ready to retire: {why_not} (--force retires it anyway)")
    overrode = f"forced: {why_not}" if not ready else ""
    answer = {"route": name, "ready_to_retire": ready, "forced": overrode or None, "dry_run": dry_run}
    if dry_run:
        return answer
    await _rollouts(request).mark_retired(name, now)
    reason = "; ".join(x for x in (who.reason, overrode) if x)
    old = rt.snapshot.percent[name]
    log.warning("route retired", who=who.name, route=name, forced=bool(overrode), reason=reason)
    await rt.history.record(who.name, who.source, "retire", name, old, 100, reason, who.on_behalf)
    return answer


async def rollout_action(request: Request, who: Actor) -> Any:
    """pause, resume, abort, promote (`{"full": true}`: to the last step), restart: as the status allows, else 409."""
    rt = _rt(request)
    name, action = request.path_params["name"], request.path_params["action"]
    route_or_404(rt, name)
    if rt.snapshot.config.by_name[name].rollout is None:
        raise _Refused(404, f"route {name!r} has no rollout section in routes.yaml")
    if action not in ("pause", "resume", "abort", "promote", "restart"):
        raise _Refused(404, "action must be pause, resume, abort, promote or restart")
    full = (await body(request)).get("full", False) if action == "promote" else False
    if not isinstance(full, bool):
        raise _Refused(400, "full must be true or false")
    log.info("rollout action", who=who.name, route=name, action=action, full=full)
    old = rt.snapshot.percent[name]
    try:
        view = await _rollouts(request).act(name, action, full)
    except RolloutRefused as exc:
        raise _Refused(409, str(exc)) from None
    await record(request, who, f"rollout_{action}", name, old, rt.snapshot.percent[name])
    return view


# --- cohorts: runtime members of `users` cohorts --------------------------------------------------
MAX_MEMBER_ID = 256  # characters of one user id added at runtime


def cohort_or_404(rt: Runtime, route: str, name: str) -> Cohort:
    route_or_404(rt, route)
    cohorts = rt.snapshot.config.by_name[route].cohorts
    cohort = next((c for c in cohorts if c.name == name), None)
    if cohort is None:
        known = ", ".join(c.name for c in cohorts) or "none"
        raise _Refused(404, f"route {route!r} has no cohort {name!r} (cohorts: {known})")
    return cohort


def users_cohort(rt: Runtime, route: str, name: str) -> Cohort:
    """The cohort, if it is a `users` cohort: 404 unknown, 400 another matcher (it has no members)."""
    cohort = cohort_or_404(rt, route, name)
    if cohort.matcher != "users":
        raise _Refused(400, f"cohort {name!r} of route {route!r} matches {cohort.matcher} {cohort.key}, not users: "
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
        raise _Refused(400, f"limit must be an integer 1..{MAX_LIMIT}, got {raw[:40]!r}")
    cursor = request.query_params.get("cursor")
    if not cursor:
        return int(raw), None
    try:
        kind, after = json.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (ValueError, TypeError, UnicodeError, binascii.Error):
        kind = after = None
    if kind not in (0, 1) or not isinstance(after, str):
        raise _Refused(400, f"cursor {cursor[:40]!r} is not one this API gave: use next_cursor from the last page")
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
    rt = _rt(request)
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
    rt = _rt(request)
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
        raise _Refused(400, f"{key} must be a list of user ids, got {json.dumps(raw)[:80]}")
    for u in raw:
        if not isinstance(u, str) or not 0 < len(u) <= MAX_MEMBER_ID or not u.isprintable() or not _utf8(u):
            raise _Refused(
                400, f"{key}: a user id must be a non-empty printable string of at most {MAX_MEMBER_ID} characters, "
                f"got {json.dumps(u)[:80]}"
            )
    return list(dict.fromkeys(raw))


async def change_cohort(request: Request, who: Actor) -> Any:
    """`{"add": [...], "remove": [...]}`: all or nothing. routes.yaml's own members cannot be
    removed at runtime (400); adding one is a no-op (it is a member already)."""
    rt = _rt(request)
    route, name = request.path_params["name"], request.path_params["cohort"]
    cohort = users_cohort(rt, route, name)
    data = await body(request)
    extra = sorted(set(data) - {"add", "remove", "reason"})
    if extra:
        raise _Refused(400, f'unknown key {extra[0]!r}: the body is {{"add": [ids], "remove": [ids], "reason": text}}')
    add, remove = _member_ids(data, "add"), _member_ids(data, "remove")
    if not add and not remove:
        raise _Refused(400, 'nothing to change: give "add" and/or "remove", lists of user ids')
    both = set(add) & set(remove)
    if both:
        raise _Refused(400, f"user id {min(both)!r} is both in add and in remove")
    in_file = [u for u in remove if u.encode() in cohort.users]
    if in_file:
        raise _Refused(400, f"{in_file[0]!r} is one of routes.yaml's members of cohort {name!r}: remove it from "
                            "routes.yaml (runtime changes add and remove only runtime members); nothing was changed")
    add = [u for u in add if u.encode() not in cohort.users]
    limit = MAX_COHORT_MEMBERS - len(cohort.users)
    try:
        change = await rt.overrides.change_members((route, name), add, remove, limit)
    except TooMany as exc:
        raise _Refused(400, f"cohort {name!r} of route {route!r} would have {len(cohort.users) + exc.after} members "
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


NOSNIFF = (b"x-content-type-options", b"nosniff")


def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """A `Host` header value (`name`, `name:port`, `1.2.3.4:port`, `[::1]:port`) the admin listener answers."""
    if "*" in allowed:
        return True
    name = host.strip().lower()
    if name.startswith("["):
        name = name[1 : name.find("]")]  # an IPv6 literal
    elif name.count(":") == 1:
        name = name.partition(":")[0]
    name = name.removesuffix(".")
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return name == "localhost" or name in allowed
    return True  # an IP literal: a browser sends one only to that address, no DNS name to rebind


class HostGuard:
    """Pure ASGI around the admin app: the Host check, and nosniff on every answer (also
    Starlette's own 404s and 500s). A request without a Host header (HTTP/1.0) is answered:
    a browser always sends one."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app, self.allowed = app, allowed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        host = next((v for k, v in scope["headers"] if k == b"host"), None)
        if host is not None and not host_allowed(host.decode("latin-1"), self.allowed):
            why = f"Host {host.decode('latin-1')!r} is not allowed on the admin listener (DNS rebinding)"
            fix = "use an IP address or localhost, or list the name in --admin-allowed-hosts"
            body = json.dumps({"error": f"{why}: {fix}"}).encode()
            headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), NOSNIFF]
            await send({"type": "http.response.start", "status": 403, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return

        async def send_nosniff(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                if not any(k == NOSNIFF[0] for k, _ in headers):  # the console's pages set it themselves
                    message["headers"] = [*headers, NOSNIFF]
            await send(message)

        await self.app(scope, receive, send_nosniff)


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Refused)
    return JSONResponse({"error": exc.message}, exc.status)


async def _unavailable(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, 503)  # Redis is down: no change only one replica would see


async def _conflict(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, 409)  # several workers, no Redis


# The one place admin errors become status codes (Starlette maps them, like its own HTTPException).
_ERRORS: dict[Any, Any] = {_Refused: _refused, Unavailable: _unavailable, Conflict: _conflict}


async def _recent_history(rt: Runtime) -> list[dict[str, Any]] | dict[str, str]:
    try:
        return await rt.history.recent(100)
    except Unavailable as exc:
        return {"error": str(exc)}


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
