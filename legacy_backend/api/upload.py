from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..services.errors import ApiError

FORM_OVERHEAD = 64 * 1024


async def create(request: Request) -> Response:
    user = await run_in_threadpool(request.app.state.auth.authenticate, request.headers.get("authorization"))
    service = request.app.state.uploads
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > service.max_bytes + FORM_OVERHEAD:
        raise ApiError(413, f"file larger than {service.max_bytes} bytes")
    form = await request.form(max_files=1, max_fields=10)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile) or not upload.filename:
            raise ApiError(422, "multipart field 'file' is required")
        result = await run_in_threadpool(service.store, user["id"], upload.filename, upload.file)
    finally:
        await form.close()
    return JSONResponse(result, 201)


async def get(request: Request) -> Response:
    user = await run_in_threadpool(request.app.state.auth.authenticate, request.headers.get("authorization"))
    return JSONResponse(
        await run_in_threadpool(request.app.state.uploads.get, user["id"], request.path_params["upload_id"])
    )
