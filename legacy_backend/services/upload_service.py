"""Resume uploads: streamed to disk, size-capped, text extracted from .txt/.md."""

from __future__ import annotations

import os
import shutil
import time
import uuid
from typing import Any

from ..models.database import Database
from ..models.entities import upload_out
from .errors import ApiError

ALLOWED = (".txt", ".md")


class UploadService:
    def __init__(self, db: Database, upload_dir: str, max_bytes: int) -> None:
        self.db, self.upload_dir, self.max_bytes = db, upload_dir, max_bytes
        os.makedirs(upload_dir, exist_ok=True)

    def store(self, user_id: str, filename: str, stream: Any) -> dict[str, Any]:
        ext = os.path.splitext(filename.lower())[1]
        if ext not in ALLOWED:
            raise ApiError(415, "only .txt and .md files are accepted")
        upload_id = str(uuid.uuid4())
        path = os.path.join(self.upload_dir, upload_id + ext)
        with open(path, "wb") as out:
            shutil.copyfileobj(stream, out, 64 * 1024)
        if os.path.getsize(path) > self.max_bytes:
            os.unlink(path)
            raise ApiError(413, f"file larger than {self.max_bytes} bytes")
        with open(path, "rb") as f:
            text = f.read().decode("utf-8", errors="replace")
        row = {
            "id": upload_id,
            "user_id": user_id,
            "original_filename": filename,
            "file_path": path,
            "status": "processed",
            "text": text,
        }
        with self.db.connect() as c:
            c.execute(
                "INSERT INTO analysis_requests (id, user_id, original_filename, file_path, status, text, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (upload_id, user_id, filename, path, "processed", text, time.time()),
            )
        return upload_out(row, with_length=False)

    def get(self, user_id: str, upload_id: str) -> dict[str, Any]:
        with self.db.connect() as c:
            row = c.one("SELECT * FROM analysis_requests WHERE id = ? AND user_id = ?", (upload_id, user_id))
        if row is None:
            raise ApiError(404, "upload not found")
        return upload_out(row, with_length=True)
