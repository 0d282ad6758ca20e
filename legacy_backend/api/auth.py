from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from .common import json_body


async def register(request: Request) -> Response:
    data = await json_body(request)
    user = await run_in_threadpool(request.app.state.auth.register, data.get("email"), data.get("password"))
    return JSONResponse(user, 201)


async def login(request: Request) -> Response:
    data = await json_body(request)
    return JSONResponse(await run_in_threadpool(request.app.state.auth.login, data.get("email"), data.get("password")))


async def me(request: Request) -> Response:
    user = await run_in_threadpool(request.app.state.auth.authenticate, request.headers.get("authorization"))
    return JSONResponse({"id": user["id"], "email": user["email"]})


async def logout(request: Request) -> Response:
    auth = request.app.state.auth
    user = await run_in_threadpool(auth.authenticate, request.headers.get("authorization"))
    await run_in_threadpool(auth.logout, user["_jti"])
    return Response(status_code=204)
