from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...infrastructure.web import read_json
from ..auth.api import current_principal


async def create(request: Request) -> Response:
    principal = await current_principal(request)
    payload = await read_json(request)
    return JSONResponse(await run_in_threadpool(request.app.state.reviews.review, principal.user.id, payload))


async def fetch(request: Request) -> Response:
    principal = await current_principal(request)
    return JSONResponse(
        await run_in_threadpool(request.app.state.reviews.find, principal.user.id, request.path_params["review_id"])
    )


routes = [
    Route("/api/resume/review", create, methods=["POST"]),
    Route("/api/resume/review/{review_id}", fetch, methods=["GET"]),
]
