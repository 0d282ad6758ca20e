"""The legacy service: routes wired to api/, which call services/, which use models/."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from .api import auth, health, notifications, review, upload
from .api.common import error_response
from .faults import FaultInjection
from .models.database import Database
from .services.auth_service import AuthService
from .services.errors import ApiError
from .services.review_service import ReviewService
from .services.upload_service import UploadService
from .settings import Settings


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


_OURS = (b"x-request-id", b"x-served-by")  # set by EchoRequestId, never the app's own


class EchoRequestId:
    """Every HTTP answer carries the request's X-Request-ID, so a proxy checking it
    (splitter's check_request_id) can tell this answer from a stray or shifted one, and
    X-Served-By: the service's name, so a person can see which service answered."""

    def __init__(self, app: Any, name: str = "legacy_backend") -> None:
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


def create_app(settings: Settings) -> Any:
    db = Database(settings.database_url)
    app = Starlette(
        routes=[
            Route("/health", health.health),
            Route("/api/auth/register", auth.register, methods=["POST"]),
            Route("/api/auth/login", auth.login, methods=["POST"]),
            Route("/api/auth/me", auth.me, methods=["GET"]),
            Route("/api/auth/logout", auth.logout, methods=["POST"]),
            Route("/api/upload", upload.create, methods=["POST"]),
            Route("/api/upload/{upload_id}", upload.get, methods=["GET"]),
            Route("/api/resume/review", review.create, methods=["POST"]),
            Route("/api/resume/review/{review_id}", review.get, methods=["GET"]),
            WebSocketRoute("/api/notifications/ws", notifications.notifications),
        ],
        exception_handlers={ApiError: _api_error},
    )
    app.state.auth = AuthService(db, settings.jwt_secret)
    app.state.uploads = UploadService(db, settings.upload_dir, settings.upload_max_bytes)
    app.state.reviews = ReviewService(db)
    app.state.backend = "legacy"
    if settings.fault_error_rate or settings.fault_latency_ms:
        return EchoRequestId(FaultInjection(app, settings.fault_error_rate, settings.fault_latency_ms))
    return EchoRequestId(app)
