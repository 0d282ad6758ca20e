from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ...infrastructure.web import HTTPProblem
from ..auth.api import current_principal
from .service import UploadService

MULTIPART_SLACK = 64 * 1024


async def upload(request: Request) -> Response:
    principal = await current_principal(request)
    service: UploadService = request.app.state.uploads
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > service.max_bytes + MULTIPART_SLACK:
        raise HTTPProblem(413, f"file larger than {service.max_bytes} bytes")
    async with request.form(max_files=1, max_fields=10) as form:
        part = form.get("file")
        if not (isinstance(part, UploadFile) and part.filename):
            raise HTTPProblem(422, "multipart field 'file' is required")
        created = await run_in_threadpool(service.accept, principal.user.id, part.filename, part.file)
    return JSONResponse(created, 201)


async def status(request: Request) -> Response:
    principal = await current_principal(request)
    return JSONResponse(
        await run_in_threadpool(request.app.state.uploads.find, principal.user.id, request.path_params["request_id"])
    )


routes = [
    Route("/api/upload", upload, methods=["POST"]),
    Route("/api/upload/{request_id}", status, methods=["GET"]),
]
