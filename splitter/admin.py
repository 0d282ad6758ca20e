"""The admin listener: /metrics, /healthz, /readyz and /admin/*.

Reads are open (the listener binds to 127.0.0.1 by default); every mutation
needs `Authorization: Bearer $SPLITTER_ADMIN_TOKEN`.
"""

from __future__ import annotations

import dataclasses
import hmac
import json
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote_to_bytes

import structlog
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.responses import Response
from starlette.routing import Route

from . import __version__, bucketing, judge, strictjson
from .console import console_routes
from .metrics import CONTENT_TYPE
from .overrides import Conflict, Unavailable
from .rollout import Refused as RolloutRefused
from .runtime import CONSOLE_SPAN_S

if TYPE_CHECKING:
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


def create_admin(rt: Runtime, rollouts: Rollouts, shadow: Shadow, websockets: WebSockets) -> Starlette:
    token = rt.settings.admin_token.encode() if rt.settings.admin_token else None

    def authorize(request: Request) -> str:
        if token is None:
            raise _Refused(403, "admin changes are disabled: set SPLITTER_ADMIN_TOKEN in the proxy's environment and send it as 'Authorization: Bearer <token>'")
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token):
            raise _Refused(401, "wrong or missing admin token (Authorization: Bearer <SPLITTER_ADMIN_TOKEN>)")
        actor = request.headers.get("x-splitter-actor", "")[:64]
        peer = request.client.host if request.client else "?"
        return f"{actor}@{peer}" if actor else peer

    async def body(request: Request) -> dict[str, Any]:
        try:
            data = json.loads(await request.body() or b"{}")
        except ValueError:
            raise _Refused(400, "body must be JSON") from None
        if not isinstance(data, dict):
            raise _Refused(400, "body must be a JSON object")
        return data

    def route_or_404(name: str) -> None:
        if name not in rt.snapshot.config.by_name:
            known = ", ".join(r.name for r in rt.snapshot.config.routes)
            raise _Refused(404, f"unknown route {name!r} (routes: {known})")

    def routes_view() -> list[dict[str, Any]]:
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

    def writer(impl: Any) -> Any:
        """One wrapper for every write: authorize, then answer JSON (errors: the handlers below)."""

        async def endpoint(request: Request) -> Response:
            return JSONResponse(await impl(request, authorize(request)))

        return endpoint

    async def overview(request: Request) -> Response:
        """Everything the console shows, in one read: routes with their windows and the last five
        minutes, rollouts, shadow mismatches, kill switch, Redis and reload state."""
        now = time.time()
        snap = rt.snapshot
        views = routes_view()
        for view, r in zip(views, snap.config.routes, strict=True):
            try:
                span, since = await rt.judged_span(r) if (r.guard or r.rollout) else (60.0, None)
                view["window"] = await rt.windows.view(r.name, now, span, since)
                view["series"] = {b: await rt.windows.series(r.name, b, now, CONSOLE_SPAN_S, 10) for b in ("new", "legacy")}
                view["shadow"] = (await shadow.recent(r.name))[:5] if r.shadow is not None else None
            except Unavailable as exc:
                view["error"] = str(exc)
            view["guard"] = dataclasses.asdict(r.guard) if r.guard is not None else None
            # for the console: what routes it under the kill switch, this process's last guard trip, and when the
            # window last restarted (a change of percent), so the evidence before it stays on screen, labelled
            view["source_under_kill"] = snap.sources[r.name] if snap.kill else None
            view["guard_trip"] = rt.guard_trips.get(r.name) if snap.sources[r.name] == "guard" else None
            outcomes = rt.windows.get(r.name)
            if "window" in view and outcomes is not None:
                view["window"]["since"] = outcomes.since or None
        try:
            rollout_views = await rollouts.view()
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
                "time": now,
            }
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        ok, why = rt.ready
        return JSONResponse({"ready": ok, "reason": why}, 200 if ok else 503)

    async def metrics(request: Request) -> Response:
        return Response(rt.metrics.render(), media_type=CONTENT_TYPE)

    async def list_routes(request: Request) -> Response:
        """The routes; for those a guard or a rollout judges, the window it judges (fleet or process)."""
        views = routes_view()
        now = time.time()
        for view, r in zip(views, rt.snapshot.config.routes, strict=True):
            if r.guard is None and r.rollout is None:
                continue
            try:
                span, since = await rt.judged_span(r)
                view["window"] = await rt.windows.view(r.name, now, span, since)
                gates = r.guard if r.guard is not None and r.guard.confidence is not None else (r.rollout.gates if r.rollout is not None else None)
                if gates is not None and gates.confidence is not None:
                    # the judge's evidence on this window: estimate, interval, p-value, verdict per gate
                    rollout_gates = r.rollout is not None and gates is r.rollout.gates
                    state = await rt.overrides.get_rollout(r.name) if rollout_gates else None
                    if state and int(state["step"]) >= 0:
                        new, legacy = await rollouts.evidence(r, state, now)  # at 100 %: legacy of the step before
                    else:
                        new = await rt.windows.counts(r.name, "new", now, span, since)
                        legacy = await rt.windows.counts(r.name, "legacy", now, span, since)
                    checks = judge.judge(gates, new, legacy, 1 - gates.confidence)
                    enough = new.n >= gates.min_requests
                    view["judgement"] = {"confidence": gates.confidence, "verdict": judge.verdict(checks) if enough else judge.WAIT, "checks": [c.view() for c in checks]}
            except Unavailable as exc:
                view["window"] = {"scope": rt.windows.scope, "error": str(exc)}
        return JSONResponse(views)

    async def set_route(request: Request, who: str) -> Any:
        name = request.path_params["name"]
        route_or_404(name)
        data = await body(request)
        pct = data.get("percent")
        if not isinstance(pct, int) or isinstance(pct, bool) or not 0 <= pct <= 100:
            raise _Refused(400, f"percent must be an integer 0..100, got {json.dumps(pct)}")
        old = rt.snapshot.percent[name]
        await rt.overrides.set_percent(name, pct)
        log.info("override set", who=who, route=name, old=old, new=pct)
        return next(r for r in routes_view() if r["name"] == name)

    async def clear_route(request: Request, who: str) -> Any:
        name = request.path_params["name"]
        route_or_404(name)
        old = rt.snapshot.percent[name]
        await rt.overrides.clear(name)
        log.info("override cleared", who=who, route=name, old=old, new=rt.snapshot.percent[name])
        return next(r for r in routes_view() if r["name"] == name)

    async def rollback(request: Request, who: str) -> Any:
        data = await body(request)
        if data.get("all") is True:
            names = [r.name for r in rt.snapshot.config.routes]
        elif isinstance(data.get("route"), str):
            route_or_404(data["route"])
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
            for n in names:
                closed += await websockets.close_route(n, "new", 1012, "rolled back: reconnect")
        log.warning("rollback", who=who, routes=names, old=old, new=0, websockets_closed=closed)
        return routes_view()

    async def get_kill(request: Request) -> Response:
        return JSONResponse({"on": rt.snapshot.kill})

    async def kill_on(request: Request, who: str) -> Any:
        old = rt.snapshot.kill
        await rt.overrides.set_kill(True)
        log.warning("kill switch", who=who, old=old, new=True)
        return {"on": True}

    async def kill_off(request: Request, who: str) -> Any:
        old = rt.snapshot.kill
        await rt.overrides.set_kill(False)
        log.warning("kill switch", who=who, old=old, new=False)
        return {"on": False}

    async def bucket(request: Request) -> Response:
        uid = _raw_query_param(request.scope.get("query_string", b""), b"user_id")
        if not uid:
            raise _Refused(400, "query parameter user_id is required")
        return JSONResponse(bucket_view(rt.snapshot, uid))

    async def shadow_view(request: Request) -> Response:
        name = request.path_params["name"]
        route_or_404(name)
        if rt.snapshot.config.by_name[name].shadow is None:
            raise _Refused(404, f"route {name!r} has no shadow: in routes.yaml")
        return JSONResponse({"route": name, "mismatches": await shadow.recent(name)})

    async def rollouts_view(request: Request) -> Response:
        return JSONResponse(await rollouts.view())

    async def rollout_action(request: Request, who: str) -> Any:
        name, action = request.path_params["name"], request.path_params["action"]
        route_or_404(name)
        if rt.snapshot.config.by_name[name].rollout is None:
            raise _Refused(404, f"route {name!r} has no rollout: in routes.yaml")
        if action not in ("pause", "resume", "abort", "promote"):
            raise _Refused(404, "action must be pause, resume, abort or promote")
        full = (await body(request)).get("full", False) if action == "promote" else False
        if not isinstance(full, bool):
            raise _Refused(400, "full must be true or false")
        log.info("rollout action", who=who, route=name, action=action, full=full)
        try:
            return await rollouts.act(name, action, full)
        except RolloutRefused as exc:
            raise _Refused(409, str(exc)) from None

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/readyz", readyz),
            Route("/metrics", metrics),
            Route("/admin/routes", list_routes),
            Route("/admin/routes/{name}", writer(set_route), methods=["PUT"]),
            Route("/admin/routes/{name}/override", writer(clear_route), methods=["DELETE"]),
            Route("/admin/rollback", writer(rollback), methods=["POST"]),
            Route("/admin/kill", get_kill, methods=["GET"]),
            Route("/admin/kill", writer(kill_on), methods=["PUT"]),
            Route("/admin/kill", writer(kill_off), methods=["DELETE"]),
            Route("/admin/bucket", bucket),
            Route("/admin/shadow/{name}", shadow_view),
            Route("/admin/rollouts", rollouts_view),
            Route("/admin/rollouts/{name}/{action}", writer(rollout_action), methods=["POST"]),
            Route("/admin/overview", overview),
            *console_routes(),
        ],
        exception_handlers=_ERRORS,
    )


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, _Refused)
    return JSONResponse({"error": exc.message}, exc.status)


async def _unavailable(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, 503)  # Redis is down: no change only one replica would see


async def _conflict(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, 409)  # several workers, no Redis


# The one place admin errors become status codes (Starlette maps them, like its own HTTPException).
_ERRORS: dict[Any, Any] = {_Refused: _refused, Unavailable: _unavailable, Conflict: _conflict}


def _raw_query_param(query: bytes, name: bytes) -> bytes | None:
    """The percent-decoded bytes of a query parameter: the id's exact bytes, as the proxy hashes them."""
    for part in query.split(b"&"):
        k, _, v = part.partition(b"=")
        if unquote_to_bytes(k.replace(b"+", b" ")) == name:
            return unquote_to_bytes(v.replace(b"+", b" "))
    return None


def bucket_view(snap: Any, user_id: bytes) -> dict[str, Any]:
    routes = []
    for r in snap.config.routes:
        b = bucketing.bucket(user_id, r.salt)
        pct = snap.percent[r.name]
        backend = "legacy" if snap.kill else bucketing.backend_for(b, pct)
        routes.append({"route": r.name, "bucket": b, "percent": pct, "backend": backend})
    return {"user_id": user_id.decode("utf-8", "replace"), "kill": snap.kill, "routes": routes}
