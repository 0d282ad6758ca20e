"""Whether the proxy lives and serves, its metrics, and whose token a request carries."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from ..metrics import CONTENT_TYPE
from ..refused import Refused
from .common import JSONResponse, rt_of
from .security import identify


async def healthz(request: Request) -> Response:
    """Alive, which store holds the runtime state (memory, sqlite PATH, redis URL, sentinel SERVICE), and the
    routes file it serves (`splitter sync` and `retire` edit that one by default)."""
    rt = rt_of(request)
    return JSONResponse({"status": "ok", "store": rt.overrides.name, "config": rt.snapshot.config.path})


async def readyz(request: Request) -> Response:
    """200 once the proxy serves (config loaded, store reachable), else 503 with the reason: the readiness probe."""
    ok, why = rt_of(request).ready
    return JSONResponse({"ready": ok, "reason": why}, 200 if ok else 503)


async def metrics(request: Request) -> Response:
    """Prometheus exposition: every `splitter_*` series (fleet-wide where the windows are)."""
    return Response(rt_of(request).metrics.render(), media_type=CONTENT_TYPE)


async def whoami(request: Request) -> Response:
    """Whose token this is (the console shows it): 401 for none or a wrong one."""
    identity = identify(rt_of(request), request.headers)
    if identity is None:
        raise Refused(401, "unauthorized", "no token: send 'Authorization: Bearer <token>'")
    return JSONResponse({"name": identity.name, "role": identity.role})
