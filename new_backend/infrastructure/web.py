"""HTTP plumbing for every feature: errors, JSON bodies, fault injection, the echoed X-Request-ID."""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response


class HTTPProblem(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


async def problem_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPProblem)
    return JSONResponse({"detail": exc.detail}, exc.status)


async def read_json(request: Request) -> dict[str, Any]:
    raw = await request.body()
    try:
        parsed = json.loads(raw)
    except ValueError:
        parsed = None
    if not isinstance(parsed, dict):
        raise HTTPProblem(422, "request body must be a JSON object")
    return parsed


class Faults:
    """FAULT_ERROR_RATE share of requests answered 500, FAULT_LATENCY_MS added; /health exempt."""

    def __init__(self, app: Any, error_rate: float, latency_ms: float) -> None:
        self.app = app
        self.error_rate = error_rate
        self.delay = latency_ms / 1000

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] == "/health":
            return await self.app(scope, receive, send)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error_rate and random.random() < self.error_rate:
            return await JSONResponse({"detail": "injected fault"}, 500)(scope, receive, send)
        return await self.app(scope, receive, send)


_OURS = (b"x-request-id", b"x-served-by")  # set by EchoRequestId, never the app's own


class EchoRequestId:
    """Every HTTP answer carries the request's X-Request-ID, so a proxy checking it
    (splitter's check_request_id) can tell this answer from a stray or shifted one, and
    X-Served-By: the service's name, so a person can see which service answered."""

    def __init__(self, app: Any, name: str = "new_backend") -> None:
        self.app = app
        self.served_by = (b"x-served-by", name.encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = next((v for n, v in scope["headers"] if n == b"x-request-id"), None)
        mine = [self.served_by] if rid is None else [self.served_by, (b"x-request-id", rid)]

        async def echo(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = [(n, v) for n, v in message.get("headers", []) if n.lower() not in _OURS]
                message = {**message, "headers": [*headers, *mine]}
            await send(message)

        return await self.app(scope, receive, echo)
