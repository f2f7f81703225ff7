"""Reading answers out of model output: final numbers, final answers, embedded JSON objects.

Shared by the judge (verdict JSON), the moderator's agreement check and the benchmark scorers.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

_NUMBER_RE = re.compile(
    r"(?<![\w.,])(?P<sign>[-\u2212])?\$?(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
)
_ANSWER_MARKER_RE = re.compile(
    r"\b(?:final\s+answer|answer)\b\**\s*(?:is|was|will\s+be|would\s+be|=|:)", re.IGNORECASE
)
_BOXED_RE = re.compile(r"\\boxed\{([^{}]*)\}")


def normalize_number(text: str) -> str | None:
    """Canonical form of one number: no ``$`` or thousands commas, no trailing ``.0``.

    ``"1,234.50"`` -> ``"1234.5"``, ``"18.0"`` -> ``"18"``, ``"-$5"`` -> ``"-5"``; ``None`` when
    ``text`` holds no number.
    """
    match = _NUMBER_RE.search(text.strip())
    if match is None:
        return None
    value = Decimal(match["num"].replace(",", ""))
    if match["sign"]:
        value = -value
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def extract_number(text: str) -> str | None:
    """The final numeric answer in a model output, normalised (see :func:`normalize_number`).

    Rules, first match wins: the first number after the last ``####``; the first number inside
    the last ``\\boxed{...}``; the first number on the same line after the last "answer is" /
    "answer:" / "final answer =" marker; otherwise the last number in the text. Number words
    ("eighteen") and fractions ("3/4") are not interpreted.
    """
    if "####" in text:
        found = normalize_number(text.rsplit("####", 1)[1])
        if found is not None:
            return found
    boxed = _BOXED_RE.findall(text)
    if boxed:
        found = normalize_number(boxed[-1])
        if found is not None:
            return found
    markers = list(_ANSWER_MARKER_RE.finditer(text))
    if markers:
        found = normalize_number(text[markers[-1].end() :].split("\n", 1)[0])
        if found is not None:
            return found
    numbers = list(_NUMBER_RE.finditer(text))
    return normalize_number(numbers[-1].group()) if numbers else None


_FINAL_LINE_RE = re.compile(r"final answer\s*[:\uff1a]\s*(.+)", re.IGNORECASE)


def extract_final_answer(text: str) -> str | None:
    """The response's final answer, normalised for comparison.

    The last "Final answer: ..." line gives it (its number if it holds exactly one, else its
    lower-cased text); without such a line, :func:`extract_number` reads the text.
    """
    lines = _FINAL_LINE_RE.findall(text)
    if lines:
        line = lines[-1]
        numbers = _NUMBER_RE.findall(line)
        if len(numbers) == 1:
            return normalize_number(line)
        return line.strip().strip("*$. ").lower() or None
    return extract_number(text)


def json_objects(text: str) -> Iterator[dict[str, Any]]:
    """Every JSON object embedded in the text (e.g. inside prose or a code fence), in order."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            yield value
