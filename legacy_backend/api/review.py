from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .common import json_body


async def create(request: Request) -> Response:
    user = await run_in_threadpool(request.app.state.auth.authenticate, request.headers.get("authorization"))
    data = await json_body(request)
    return JSONResponse(
        await run_in_threadpool(request.app.state.reviews.create, user["id"], data.get("analysis_request_id"))
    )


async def get(request: Request) -> Response:
    user = await run_in_threadpool(request.app.state.auth.authenticate, request.headers.get("authorization"))
    return JSONResponse(
        await run_in_threadpool(request.app.state.reviews.get, user["id"], request.path_params["review_id"])
    )
