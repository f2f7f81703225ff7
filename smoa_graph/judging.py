"""How candidates are shown to models, what of a model's text may reach an answer, and how the
judge's verdicts are validated.

Models that choose (judge, moderator, consistency pick) see candidates between numbered markers
carrying a nonce derived from their text; marker-like text inside a response is defused, so a
response cannot impersonate another one or the output format. Models that write free text from
candidates (later proposers, the aggregator, a debate) see them as plain blocks headed "--- first
answer ---", with no number or nonce a small model could copy into its answer as if it were part
of it. ``clean_answer`` removes what such a model still echoes (markers in any mangled form, block
headers, a run of one repeated line) from what becomes ``answer``; the stream is left as sent.

Judge fallback rule (deterministic, never random): valid indices are kept in the judge's order
(out-of-range, non-integer and repeated ones are dropped and reported); when fewer than k remain,
the rest is filled by ranking the other candidates: first those whose final answer matches the
most common final answer, then by proposer order.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

from smoa_graph.answers import extract_final_answer, json_objects
from smoa_graph.schemas import CRITIQUE_MAX_CHARS, REASONING_MAX_CHARS

_ORDINALS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")
_BLOCK_RULE = re.compile(r"^(\s*)-{3,}", re.M)
# A candidate marker as models echo it: "<<<RESPONSE 5 b5d12902>>", "< < <END RESPONSE 2 ...> > >",
# or without brackets but with its nonce; also the plain blocks' "--- second answer ---" headers.
_ECHO = re.compile(
    r"[< \t]*<[ \t]*(?:END[ \t]+)?RESPONSE[ \t]+\d+\b[^\n>]*>?[> \t]*"
    r"|\b(?:END[ \t]+)?RESPONSE[ \t]+\d+[ \t]+[0-9a-f]{8}\b[> \t]*"
    r"|^[ \t]*-{2,}[ \t]*(?:\w+[ \t]+answer|end[ \t]+of[ \t]+the[ \t]+answers)[ \t]*-{2,}[ \t]*$",
    re.IGNORECASE | re.MULTILINE,
)


def _defuse(text: str) -> str:
    text = text.replace("<<<", "< < <").replace(">>>", "> > >")
    return _BLOCK_RULE.sub(r"\1- - -", text)


def ordinal(number: int) -> str:
    """``first``, ``second``, ... (``9th`` on): block names that hold no digit to copy."""
    return _ORDINALS[number - 1] if number <= len(_ORDINALS) else f"{number}th"


def format_answers(texts: list[str]) -> str:
    """Texts as plain blocks for a model that writes free text from them (no numbers to copy)."""
    blocks = [f"--- {ordinal(i)} answer ---\n{_defuse(t.strip())}" for i, t in enumerate(texts, 1)]
    return "\n\n".join([*blocks, "--- end of the answers ---"])


def marker_echoes(text: str) -> list[str]:
    """The candidate markers and block headers echoed in ``text``."""
    return [m.group().strip() for m in _ECHO.finditer(text)]


def remove_markers(text: str) -> str:
    """``text`` with every echoed marker and block header removed (scorers read this)."""
    lines = (line.rstrip() for line in _ECHO.sub(" ", text).splitlines())
    return "\n".join(line for line in lines if line.strip()).strip()


def clean_answer(text: str) -> str:
    """What of a model's text may be the answer: up to the first echoed marker or block header
    when there is an answer before it (what follows is an imitated extra response), else the
    text without them; a line repeated over and over kept once. Never empties an answer."""
    first = _ECHO.search(text)
    if first is not None and any(ch.isalnum() for ch in text[: first.start()]):
        text = text[: first.start()]
    lines: list[str] = []
    for line in remove_markers(text).splitlines():
        if not lines or line.strip() != lines[-1].strip():
            lines.append(line)
    return "\n".join(lines).strip() or text.strip()


def format_candidates(texts: list[str], start: int = 1) -> tuple[str, str]:
    """Render texts as blocks numbered from ``start``, nonce-delimited. Returns (block, nonce)."""
    nonce = hashlib.sha256("\x00".join(texts).encode()).hexdigest()[:8]
    blocks = [
        f"<<<RESPONSE {i} {nonce}>>>\n{_defuse(t.strip())}\n<<<END RESPONSE {i} {nonce}>>>"
        for i, t in enumerate(texts, start)
    ]
    return "\n\n".join(blocks), nonce


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
