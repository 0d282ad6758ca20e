from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...infrastructure.web import read_json
from .service import AuthService, Principal


async def current_principal(request: Request) -> Principal:
    service: AuthService = request.app.state.auth
    return await run_in_threadpool(service.principal, request.headers.get("authorization"))


async def register(request: Request) -> Response:
    payload = await read_json(request)
    return JSONResponse(await run_in_threadpool(request.app.state.auth.register, payload), 201)


async def login(request: Request) -> Response:
    payload = await read_json(request)
    return JSONResponse(await run_in_threadpool(request.app.state.auth.login, payload))


async def me(request: Request) -> Response:
    return JSONResponse((await current_principal(request)).user.public())


async def logout(request: Request) -> Response:
    principal = await current_principal(request)
    await run_in_threadpool(request.app.state.auth.logout, principal)
    return Response(status_code=204)


routes = [
    Route("/api/auth/register", register, methods=["POST"]),
    Route("/api/auth/login", login, methods=["POST"]),
    Route("/api/auth/me", me, methods=["GET"]),
    Route("/api/auth/logout", logout, methods=["POST"]),
]
