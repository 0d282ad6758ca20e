"""Request helpers shared by the legacy endpoints."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from ..services.errors import ApiError


async def json_body(request: Request) -> dict[str, Any]:
    try:
        data = json.loads(await request.body())
    except ValueError:
        raise ApiError(422, "request body must be a JSON object") from None
    if not isinstance(data, dict):
        raise ApiError(422, "request body must be a JSON object")
    return data


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse({"detail": exc.detail}, exc.status)
