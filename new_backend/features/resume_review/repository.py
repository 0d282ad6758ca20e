from __future__ import annotations

import json
import time
from dataclasses import dataclass

from ...infrastructure.persistence import Persistence


@dataclass(frozen=True)
class Review:
    id: str
    analysis_request_id: str
    user_id: str
    overall_score: int
    strengths: list[str]
    weaknesses: list[str]

    def as_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "analysis_request_id": self.analysis_request_id,
            "overall_score": self.overall_score,
            "strengths": self.strengths,
            "weaknesses": self.weaknesses,
        }


class ReviewRepository:
    def __init__(self, db: Persistence) -> None:
        self.db = db

    def add(self, r: Review) -> None:
        self.db.run(
            "INSERT INTO reviews (id, analysis_request_id, user_id, overall_score, strengths, weaknesses, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            r.id,
            r.analysis_request_id,
            r.user_id,
            r.overall_score,
            json.dumps(r.strengths),
            json.dumps(r.weaknesses),
            time.time(),
        )

    def owned(self, review_id: str, user_id: str) -> Review | None:
        row = self.db.fetch(
            "SELECT id, analysis_request_id, user_id, overall_score, strengths, weaknesses FROM reviews "
            "WHERE id = ? AND user_id = ?",
            review_id,
            user_id,
        )
        if row is None:
            return None
        return Review(
            row["id"],
            row["analysis_request_id"],
            row["user_id"],
            row["overall_score"],
            json.loads(row["strengths"]),
            json.loads(row["weaknesses"]),
        )
