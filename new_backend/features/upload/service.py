from __future__ import annotations

import uuid
from pathlib import Path
from typing import BinaryIO

from ...infrastructure.web import HTTPProblem
from .repository import AnalysisRequest, AnalysisRequestRepository

TEXT_TYPES = {".txt", ".md"}
CHUNK = 64 * 1024


class UploadService:
    def __init__(self, repo: AnalysisRequestRepository, storage: Path, max_bytes: int) -> None:
        self.repo, self.storage, self.max_bytes = repo, storage, max_bytes
        storage.mkdir(parents=True, exist_ok=True)

    def accept(self, user_id: str, filename: str, stream: BinaryIO) -> dict[str, str]:
        suffix = Path(filename.lower()).suffix
        if suffix not in TEXT_TYPES:
            raise HTTPProblem(415, "only .txt and .md files are accepted")
        request_id = str(uuid.uuid4())
        target = self.storage / f"{request_id}{suffix}"
        written = 0
        with target.open("wb") as out:
            while chunk := stream.read(CHUNK):
                written += len(chunk)
                if written > self.max_bytes:
                    break
                out.write(chunk)
        if written > self.max_bytes:
            target.unlink()
            raise HTTPProblem(413, f"file larger than {self.max_bytes} bytes")
        text = target.read_bytes().decode("utf-8", errors="replace")
        req = AnalysisRequest(request_id, user_id, filename, str(target), "processed", text)
        self.repo.add(req)
        return req.summary()

    def find(self, user_id: str, request_id: str) -> dict[str, object]:
        req = self.repo.owned(request_id, user_id)
        if req is None:
            raise HTTPProblem(404, "upload not found")
        return req.detail()
