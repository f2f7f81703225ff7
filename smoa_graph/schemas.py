"""The bounded JSON schemas of the control roles' answers (judge, moderator, role generator).

Every list and string is bounded (``maxItems``, ``maxLength``, ``enum``): constrained decoding on
llama-server runs away on unbounded schemas. Each ``*_FORMAT`` / ``*_format`` is the same shape as
shown in the prompt, for models that answer in plain text.
"""

from __future__ import annotations

from typing import Any

REASONING_MAX_CHARS = 300
CRITIQUE_MAX_CHARS = 300
ROLE_MAX_CHARS = 300


def judge_schema(m: int, k: int, with_stop: bool, base: int = 1) -> dict[str, Any]:
    """Bounded JSON schema of a verdict choosing k of m candidates numbered from ``base``."""
    properties: dict[str, Any] = {
        "reasoning": {"type": "string", "maxLength": REASONING_MAX_CHARS},
        "chosen": {
            "type": "array",
            "items": {"type": "integer", "enum": list(range(base, base + m))},
            "minItems": k,
            "maxItems": k,
        },
        "critique": {"type": "string", "maxLength": CRITIQUE_MAX_CHARS},
    }
    if with_stop:
        properties["stop"] = {"type": "boolean"}
    return {
        "title": "judge_verdict",
        "description": f"The {k} best of {m} responses, by number.",
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def judge_format(k: int, with_stop: bool) -> str:
    """The JSON shape shown in the judge prompt."""
    numbers = ", ".join(f"<response number {j}>" for j in range(1, k + 1))
    stop = ', "stop": <true if these are good and consistent enough to stop>' if with_stop else ""
    return (
        f'{{"reasoning": "<one or two sentences>", "chosen": [{numbers}], '
        f'"critique": "<what the next round should fix>"{stop}}}'
    )


MODERATOR_SCHEMA: dict[str, Any] = {
    "title": "moderator_verdict",
    "description": "Whether to stop the rounds now.",
    "type": "object",
    "properties": {
        "reason": {"type": "string", "maxLength": 200},
        "quality": {"type": "integer", "enum": list(range(1, 11))},
        "stop": {"type": "boolean"},
    },
    "required": ["reason", "quality", "stop"],
    "additionalProperties": False,
}
MODERATOR_FORMAT = '{"reason": "<one sentence>", "quality": <1-10>, "stop": <true or false>}'


def roles_schema(n: int) -> dict[str, Any]:
    """Exactly n role descriptions of bounded length."""
    return {
        "title": "roles",
        "description": f"{n} role descriptions.",
        "type": "object",
        "properties": {
            "roles": {
                "type": "array",
                "items": {"type": "string", "minLength": 8, "maxLength": ROLE_MAX_CHARS},
                "minItems": n,
                "maxItems": n,
            }
        },
        "required": ["roles"],
        "additionalProperties": False,
    }


def roles_format(n: int) -> str:
    """The JSON shape shown in the role-generation prompt."""
    return f'{{"roles": [{n} strings]}}'
