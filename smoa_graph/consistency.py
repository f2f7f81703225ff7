"""Agreement between responses, measured without a model call.

Rule: when every response has an extractable final answer (``answers.extract_final_answer``),
they agree iff those answers are equal. Otherwise they agree when the mean pairwise
Jaccard similarity of their word sets reaches the threshold.

Majority vote (``finish='vote'``): the extracted answer given most often wins; a tie goes to the
answer given first (by the lowest proposer index); responses without an extractable answer do
not vote.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from itertools import combinations

from smoa_graph.answers import extract_final_answer

_WORD = re.compile(r"\w+")


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


@dataclass(frozen=True)
class Vote:
    """A majority vote over responses: the count per answer, the winner, a tie if there was one."""

    counts: dict[str, int]
    winner: str | None
    winner_index: int | None  # position of the first response giving the winner
    tie: list[str]


def majority_vote(texts: list[str]) -> Vote:
    """Vote over the responses' extracted final answers (see the module docstring)."""
    answers = [extract_final_answer(t) for t in texts]
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return Vote({}, None, None, [])
    top = max(counts.values())
    tied = [a for a in dict.fromkeys(a for a in answers if a is not None) if counts[a] == top]
    winner = tied[0]  # given first: dict.fromkeys keeps the order of the responses
    return Vote(dict(counts), winner, answers.index(winner), tied if len(tied) > 1 else [])
