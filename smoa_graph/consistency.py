"""Agreement between responses, measured without a model call.

Rule: when every response has an extractable final answer ("Final answer: ..." line, else the last
number), they agree iff those answers are equal. Otherwise they agree when the mean pairwise
Jaccard similarity of their word sets reaches the threshold.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from itertools import combinations

_FINAL_LINE = re.compile(r"final answer\s*[:\uff1a]\s*(.+)", re.IGNORECASE)
_NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?")
_WORD = re.compile(r"\w+")


def normalize_number(token: str) -> str:
    """'1,234.50' -> '1234.5'; '18.0' -> '18'."""
    value = token.replace(",", "").rstrip(".")
    if "." in value:
        value = value.rstrip("0").rstrip(".")
    return value or "0"


def extract_final_answer(text: str) -> str | None:
    """The response's final answer: the last 'Final answer:' line, else the last number."""
    lines = _FINAL_LINE.findall(text)
    if lines:
        answer = lines[-1].strip().strip("*$. ").lower()
        numbers = _NUMBER.findall(answer)
        return normalize_number(numbers[-1]) if len(numbers) == 1 else answer or None
    numbers = _NUMBER.findall(text)
    return normalize_number(numbers[-1]) if numbers else None


def lexical_similarity(texts: list[str]) -> float:
    """Mean pairwise Jaccard similarity of the texts' lower-case word sets (1.0 for < 2 texts)."""
    sets = [set(_WORD.findall(t.lower())) for t in texts]
    pairs = list(combinations(sets, 2))
    if not pairs:
        return 1.0
    return sum(len(a & b) / len(a | b) if a | b else 1.0 for a, b in pairs) / len(pairs)


@dataclass(frozen=True)
class Agreement:
    """Outcome of a consistency check."""

    agree: bool
    score: float
    answer: str | None
    method: str


def measure_agreement(texts: list[str], threshold: float) -> Agreement:
    """Do these responses agree? See the module docstring for the rule."""
    answers = [extract_final_answer(t) for t in texts]
    if all(a is not None for a in answers):
        answer, count = Counter(answers).most_common(1)[0]
        return Agreement(count == len(answers), count / len(answers), answer, "final answers")
    score = lexical_similarity(texts)
    return Agreement(score >= threshold, score, None, "lexical similarity")
