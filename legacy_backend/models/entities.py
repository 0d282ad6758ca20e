"""Row shapes as the API returns them (key order is part of the contract)."""

from __future__ import annotations

import json
from typing import Any


def user_out(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "email": row["email"]}


def upload_out(row: dict[str, Any], with_length: bool) -> dict[str, Any]:
    out = {"id": row["id"], "status": row["status"], "original_filename": row["original_filename"]}
    if with_length:
        out["text_length"] = len(row["text"])
    return out


def review_out(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "analysis_request_id": row["analysis_request_id"],
        "overall_score": row["overall_score"],
        "strengths": json.loads(row["strengths"]),
        "weaknesses": json.loads(row["weaknesses"]),
    }
