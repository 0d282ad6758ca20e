"""What every admin endpoint shares: strict JSON answers, the one place
admin errors become status codes (`ERRORS`), the app's state (runtime, rollouts, shadow), a request's JSON
body, who made a change (`Actor`) and its history record, and the routes as GET /admin/routes shows them."""

from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING, Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.responses import Response

from .. import strictjson
from ..refused import Refused
from ..store import Conflict, Unavailable

if TYPE_CHECKING:
    from ..rollout import Rollouts
    from ..runtime import Runtime
    from ..shadow import Shadow


class JSONResponse(_StarletteJSONResponse):
    """Every admin answer is written here: strict JSON (strictjson.dumps: no Infinity or NaN, a
    non-finite float is null), so no field can make a read fail the way Starlette's encoder does."""

    def render(self, content: Any) -> bytes:
        return strictjson.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()


@dataclasses.dataclass(frozen=True)
class Actor:
    """Who makes a change: the token's name; how (cli, console, api); why; and whom the
    client says it acts for (X-Splitter-Actor: kept as on_behalf, never as the identity)."""

    name: str
    source: str
    reason: str
    on_behalf: str | None


def rt_of(request: Request) -> Runtime:
    rt: Runtime = request.app.state.rt
    return rt


def rollouts_of(request: Request) -> Rollouts:
    rollouts: Rollouts = request.app.state.rollouts
    return rollouts


def shadow_of(request: Request) -> Shadow:
    shadow: Shadow = request.app.state.shadow
    return shadow


async def record(request: Request, who: Actor, action: str, route: str | None, old: Any, new: Any) -> None:
    await rt_of(request).history.record(who.name, who.source, action, route, old, new, who.reason, who.on_behalf)


NOT_TEXT = "body must be JSON text (no lone surrogates such as \\ud800)"


def loads(raw: bytes) -> Any:
    """A request body's JSON, which must be text: a lone UTF-16 surrogate (JSON's "\\ud800") would be
    stored, then fail every read that writes it out (a 500 for `GET /admin/history`); ValueError."""
    data = json.loads(raw)
    if b"\\u" in raw:
        json.dumps(data, ensure_ascii=False).encode()  # UnicodeEncodeError is a ValueError
    return data


async def body(request: Request) -> dict[str, Any]:
    try:
        data = loads(await request.body() or b"{}")
    except UnicodeEncodeError:
        raise Refused(400, "bad_request", NOT_TEXT) from None
    except ValueError:
        raise Refused(400, "bad_request", "body must be JSON") from None
    if not isinstance(data, dict):
        raise Refused(400, "bad_request", "body must be a JSON object")
    return data


def route_or_404(rt: Runtime, name: str) -> None:
    if name not in rt.snapshot.config.by_name:
        known = ", ".join(r.name for r in rt.snapshot.config.routes)
        raise Refused(404, "not_found", f"unknown route {name!r} (routes: {known})")


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


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return JSONResponse({"error": exc.message}, exc.status)


async def _unavailable(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, 503)  # Redis is down: no change only one replica would see


async def _conflict(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": str(exc)}, 409)  # several workers, no Redis


async def _http_error(request: Request, exc: Exception) -> Response:
    """Starlette's own: an unknown path (404), a method the path does not take (405, with its Allow header)."""
    assert isinstance(exc, HTTPException)
    return JSONResponse({"error": exc.detail}, exc.status_code, headers=exc.headers)


# The one place admin errors become status codes (Starlette maps them, like its own HTTPException).
ERRORS: dict[Any, Any] = {
    Refused: _refused, Unavailable: _unavailable, Conflict: _conflict, HTTPException: _http_error,
}  # fmt: skip
