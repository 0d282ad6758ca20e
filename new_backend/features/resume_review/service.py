from __future__ import annotations

import uuid
from typing import Any

from ...infrastructure.web import HTTPProblem
from ..upload.repository import AnalysisRequestRepository
from .repository import Review, ReviewRepository
from .rubric import Rubric


class ReviewService:
    def __init__(self, reviews: ReviewRepository, requests: AnalysisRequestRepository, rubric: Rubric) -> None:
        self.reviews, self.requests, self.rubric = reviews, requests, rubric

    def review(self, user_id: str, payload: dict[str, Any]) -> dict[str, object]:
        request_id = payload.get("analysis_request_id")
        if not (isinstance(request_id, str) and request_id):
            raise HTTPProblem(422, "analysis_request_id is required")
        source = self.requests.owned(request_id, user_id)
        if source is None:
            raise HTTPProblem(404, "analysis request not found")
        verdict = self.rubric.assess(source.text)
        review = Review(
            str(uuid.uuid4()), request_id, user_id, verdict.overall_score, verdict.strengths, verdict.weaknesses
        )
        self.reviews.add(review)
        return review.as_json()

    def find(self, user_id: str, review_id: str) -> dict[str, object]:
        review = self.reviews.owned(review_id, user_id)
        if review is None:
            raise HTTPProblem(404, "review not found")
        return review.as_json()
