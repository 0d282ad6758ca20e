from __future__ import annotations

import time
from dataclasses import dataclass

from ...infrastructure.persistence import Persistence


@dataclass(frozen=True)
class AnalysisRequest:
    id: str
    user_id: str
    original_filename: str
    file_path: str
    status: str
    text: str

    def summary(self) -> dict[str, str]:
        return {"id": self.id, "status": self.status, "original_filename": self.original_filename}

    def detail(self) -> dict[str, object]:
        return {**self.summary(), "text_length": len(self.text)}


class AnalysisRequestRepository:
    def __init__(self, db: Persistence) -> None:
        self.db = db

    def add(self, req: AnalysisRequest) -> None:
        self.db.run(
            "INSERT INTO analysis_requests (id, user_id, original_filename, file_path, status, text, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            req.id,
            req.user_id,
            req.original_filename,
            req.file_path,
            req.status,
            req.text,
            time.time(),
        )

    def owned(self, request_id: str, user_id: str) -> AnalysisRequest | None:
        row = self.db.fetch(
            "SELECT id, user_id, original_filename, file_path, status, text FROM analysis_requests "
            "WHERE id = ? AND user_id = ?",
            request_id,
            user_id,
        )
        return AnalysisRequest(**row) if row else None
