"""The rubric loaded from prompts/resume/rubric_v1.yaml and applied to a resume text."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

RUBRIC_FILE = Path(__file__).resolve().parents[2] / "prompts" / "resume" / "rubric_v1.yaml"
_WORDS = re.compile(r"[a-z]+")
_NUMBERS = re.compile(r"\d+(?:[.,]\d+)?%?")


@dataclass(frozen=True)
class Assessment:
    overall_score: int
    strengths: list[str]
    weaknesses: list[str]


class Rubric:
    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec

    @classmethod
    def load(cls, path: Path = RUBRIC_FILE) -> Rubric:
        return cls(yaml.safe_load(path.read_text(encoding="utf-8")))

    def assess(self, text: str) -> Assessment:
        s = self.spec
        lowered = text.lower()
        words = _WORDS.findall(lowered)
        strengths: list[str] = []
        weaknesses: list[str] = []
        total = 0

        for name, keywords in s["sections"]["keywords"].items():
            present = any(k in lowered for k in keywords)
            total += s["sections"]["points"] if present else 0
            (strengths if present else weaknesses).append(f"has a {name} section" if present else f"no {name} section")

        count = len(_NUMBERS.findall(text))
        strong, weak = s["quantified"]["strong"], s["quantified"]["weak"]
        if count >= strong["min_numbers"]:
            total += strong["points"]
            strengths.append("quantifies achievements")
        elif count >= weak["min_numbers"]:
            total += weak["points"]
            weaknesses.append("few quantified achievements")
        else:
            weaknesses.append("no quantified achievements")

        verbs = s["action_verbs"]
        used = sum(1 for v in verbs["words"] if v in set(words))
        total += min(used, verbs["max_counted"]) * verbs["points_each"]
        if used >= verbs["strong_at"]:
            strengths.append("uses strong action verbs")
        else:
            weaknesses.append("few action verbs")

        ln = s["length"]
        n = len(words)
        if ln["min_words"] <= n <= ln["max_words"]:
            total += ln["points_good"]
            strengths.append("good length")
        elif n < ln["min_words"]:
            total += ln["points_short"] if n >= ln["short_floor"] else 0
            weaknesses.append("too short")
        else:
            total += ln["points_long"]
            weaknesses.append("too long")
        return Assessment(min(total, 100), strengths, weaknesses)
