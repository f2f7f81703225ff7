"""How candidates are shown to the judge and moderator, and how their verdicts are validated.

Candidates stand between markers carrying a nonce derived from their text; marker-like text inside
a response is defused, so a response cannot impersonate another one or the output format.

Judge fallback rule (deterministic, never random): valid indices are kept in the judge's order
(out-of-range, non-integer and repeated ones are dropped and reported); when fewer than k remain,
the rest is filled by ranking the other candidates: first those whose final answer matches the
most common final answer, then by proposer order.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

from smoa_graph.answers import extract_final_answer, json_objects
from smoa_graph.schemas import CRITIQUE_MAX_CHARS, REASONING_MAX_CHARS


def _defuse(text: str) -> str:
    return text.replace("<<<", "< < <").replace(">>>", "> > >")


def format_candidates(texts: list[str], start: int = 1) -> tuple[str, str]:
    """Render texts as blocks numbered from ``start``, nonce-delimited. Returns (block, nonce)."""
    nonce = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:8]
    blocks = [
        f"<<<RESPONSE {i} {nonce}>>>\n{_defuse(t.strip())}\n<<<END RESPONSE {i} {nonce}>>>"
        for i, t in enumerate(texts, start)
    ]
    return "\n\n".join(blocks), nonce


def strip_marker_echoes(text: str, nonce: str) -> str:
    """``text`` without the lines that echo a candidate marker (they carry the prompt's nonce).

    Small models copy the markers of the responses they were shown into their own answer.
    """
    kept = "\n".join(line for line in text.splitlines() if nonce not in line).strip()
    return kept or text.strip()


def parse_json_object(parsed: Any, text: str) -> dict[str, Any] | None:
    """The verdict as a dict: the structured result, else the first JSON object in the text."""
    if isinstance(parsed, dict):
        return parsed
    return next(json_objects(text), None)


@dataclass(frozen=True)
class Verdict:
    """A validated judge verdict; ``selected`` are 0-based positions in the shown list."""

    selected: list[int]
    reasoning: str
    critique: str
    fallback: str | None
    stop_vote: bool | None


def _fallback_order(texts: list[str]) -> list[int]:
    answers = [extract_final_answer(t) for t in texts]
    counts = Counter(a for a in answers if a is not None)
    majority = counts.most_common(1)[0][0] if counts else None
    return sorted(range(len(texts)), key=lambda i: (answers[i] != majority or majority is None, i))


def validate_verdict(
    data: dict[str, Any] | None, texts: list[str], k: int, base: int = 1
) -> Verdict:
    """Apply the module's rule to a raw verdict for ``texts`` (shown numbered from ``base``);
    always returns exactly k picks."""
    m = len(texts)
    problems: list[str] = []
    chosen: list[int] = []
    raw = data.get("chosen") if data else None
    if data is None:
        problems.append("no JSON verdict")
    elif not isinstance(raw, list):
        problems.append("'chosen' missing or not a list")
    else:
        for item in raw:
            number = item if isinstance(item, int) and not isinstance(item, bool) else None
            if number is None and isinstance(item, str) and item.strip().isdigit():
                number = int(item.strip())
            if number is None or not base <= number < base + m:
                problems.append(f"invalid index {item!r}")
            elif number - base in chosen:
                problems.append(f"duplicate index {number}")
            else:
                chosen.append(number - base)
    if len(chosen) > k:
        problems.append(f"{len(chosen)} chosen, expected {k}")
        chosen = chosen[:k]
    if len(chosen) < k:
        if data is not None and isinstance(raw, list):
            problems.append(f"{len(chosen)} valid of {k} needed")
        chosen += [i for i in _fallback_order(texts) if i not in chosen][: k - len(chosen)]
    stop = data.get("stop") if data else None
    return Verdict(
        selected=chosen,
        reasoning=str(data.get("reasoning", ""))[:REASONING_MAX_CHARS] if data else "",
        critique=str(data.get("critique", ""))[:CRITIQUE_MAX_CHARS] if data else "",
        fallback="; ".join(problems) or None,
        stop_vote=stop if isinstance(stop, bool) else None,
    )
