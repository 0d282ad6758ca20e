"""Deterministic resume review. The legacy rubric lives in code, as it always has."""

from __future__ import annotations

import json
import re
import time
import uuid
from typing import Any

from ..models.database import Database
from ..models.entities import review_out
from .errors import ApiError

SECTION_POINTS = 12
SECTIONS = {
    "summary": ["summary", "profile", "objective"],
    "experience": ["experience", "employment", "work history"],
    "education": ["education", "degree", "university"],
    "skills": ["skills", "technologies"],
    "projects": ["projects", "portfolio"],
}
ACTION_VERBS = [
    "built",
    "designed",
    "developed",
    "improved",
    "increased",
    "launched",
    "led",
    "managed",
    "reduced",
    "shipped",
]
WORD_RE = re.compile(r"[a-z]+")
NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)?%?")


def score_resume(text: str) -> tuple[int, list[str], list[str]]:
    lowered = text.lower()
    words = WORD_RE.findall(lowered)
    word_set = set(words)
    score = 0
    strengths: list[str] = []
    weaknesses: list[str] = []
    for section, keywords in SECTIONS.items():
        if any(k in lowered for k in keywords):
            score += SECTION_POINTS
            strengths.append(f"has a {section} section")
        else:
            weaknesses.append(f"no {section} section")
    numbers = len(NUMBER_RE.findall(text))
    if numbers >= 3:
        score += 15
        strengths.append("quantifies achievements")
    elif numbers >= 1:
        score += 8
        weaknesses.append("few quantified achievements")
    else:
        weaknesses.append("no quantified achievements")
    verbs = [v for v in ACTION_VERBS if v in word_set]
    score += min(len(verbs), 5) * 3
    if len(verbs) >= 3:
        strengths.append("uses strong action verbs")
    else:
        weaknesses.append("few action verbs")
    if 150 <= len(words) <= 900:
        score += 10
        strengths.append("good length")
    elif len(words) < 150:
        score += 4 if len(words) >= 50 else 0
        weaknesses.append("too short")
    else:
        score += 4
        weaknesses.append("too long")
    return min(score, 100), strengths, weaknesses


class ReviewService:
    def __init__(self, db: Database) -> None:
        self.db = db

    def create(self, user_id: str, analysis_request_id: Any) -> dict[str, Any]:
        if not isinstance(analysis_request_id, str) or not analysis_request_id:
            raise ApiError(422, "analysis_request_id is required")
        with self.db.connect() as c:
            upload = c.one(
                "SELECT * FROM analysis_requests WHERE id = ? AND user_id = ?", (analysis_request_id, user_id)
            )
            if upload is None:
                raise ApiError(404, "analysis request not found")
            score, strengths, weaknesses = score_resume(upload["text"])
            row = {
                "id": str(uuid.uuid4()),
                "analysis_request_id": analysis_request_id,
                "user_id": user_id,
                "overall_score": score,
                "strengths": json.dumps(strengths),
                "weaknesses": json.dumps(weaknesses),
            }
            c.execute(
                "INSERT INTO reviews (id, analysis_request_id, user_id, overall_score, strengths, weaknesses, "
                "created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (row["id"], analysis_request_id, user_id, score, row["strengths"], row["weaknesses"], time.time()),
            )
        return review_out(row)

    def get(self, user_id: str, review_id: str) -> dict[str, Any]:
        with self.db.connect() as c:
            row = c.one("SELECT * FROM reviews WHERE id = ? AND user_id = ?", (review_id, user_id))
        if row is None:
            raise ApiError(404, "review not found")
        return review_out(row)
