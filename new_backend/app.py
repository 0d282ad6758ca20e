"""Composition root: each feature brings its routes; infrastructure is wired once here."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .features.auth import api as auth_api
from .features.auth.repository import SessionRepository, UserRepository
from .features.auth.service import AuthService
from .features.notifications import api as notifications_api
from .features.resume_review import api as review_api
from .features.resume_review.repository import ReviewRepository
from .features.resume_review.rubric import Rubric
from .features.resume_review.service import ReviewService
from .features.upload import api as upload_api
from .features.upload.repository import AnalysisRequestRepository
from .features.upload.service import UploadService
from .infrastructure.persistence import Persistence
from .infrastructure.security import TokenService
from .infrastructure.web import EchoRequestId, Faults, HTTPProblem, problem_handler
from .settings import Settings


async def health(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(settings: Settings, name: str = "new_backend") -> Any:
    db = Persistence(settings.database_url)
    requests = AnalysisRequestRepository(db)
    app = Starlette(
        routes=[
            Route("/health", health),
            *auth_api.routes,
            *upload_api.routes,
            *review_api.routes,
            *notifications_api.routes,
        ],
        exception_handlers={HTTPProblem: problem_handler},
    )
    app.state.auth = AuthService(UserRepository(db), SessionRepository(db), TokenService(settings.jwt_secret))
    app.state.uploads = UploadService(requests, Path(settings.upload_dir), settings.upload_max_bytes)
    app.state.reviews = ReviewService(ReviewRepository(db), requests, Rubric.load())
    if settings.fault_error_rate or settings.fault_latency_ms:
        return EchoRequestId(Faults(app, settings.fault_error_rate, settings.fault_latency_ms), name)
    return EchoRequestId(app, name)
