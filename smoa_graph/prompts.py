"""Prompt templates: one file per role in ``prompts/``, loaded once, rendered with explicit names.

Layout for prefix caching: what the calls of a layer share comes first (the instructions, the
request, the references), what differs per call last (which answer was a debater's own), so that
backends that reuse a cached prompt prefix (llama-server slots, vLLM/SGLang, hosted APIs) read the
shared part once; judge and moderator prompts also start with the request. Two measured
exceptions, on SmolLM2 and the arith tune items: a proposer's role leads its prompt, and the
aggregator's instructions lead its prompt (read last, the small model answered worse or continued
them; see ``nodes/proposer.py``), so proposers share a prefix only without role prompts.

Templates use ``string.Template`` placeholders (``$name``) so that JSON examples need no escaping.
The files are found inside an installed wheel (``smoa_graph/prompts``) and in a source checkout.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from string import Template

PROMPT_VARIABLES: dict[str, frozenset[str]] = {
    "proposer": frozenset(),
    "role": frozenset({"role"}),
    "references": frozenset({"prompt", "critique", "responses"}),
    "debate": frozenset({"prompt", "responses"}),
    "own": frozenset({"ordinal"}),
    "consistent": frozenset({"n", "nonce", "prompt", "responses", "format"}),
    "judge": frozenset({"n", "k", "nonce", "moderation", "prompt", "responses", "format"}),
    "moderator": frozenset({"layer", "max_layers", "nonce", "prompt", "responses", "format"}),
    "aggregator": frozenset({"prompt", "responses"}),
    "roles": frozenset({"n", "task_description", "task_requirement", "format"}),
}

_HERE = Path(__file__).resolve().parent
_SEARCH_PATH = (_HERE / "prompts", _HERE.parent / "prompts")


def prompts_dir() -> Path:
    """The folder holding the prompt files (wheel first, then source checkout)."""
    for folder in _SEARCH_PATH:
        if (folder / "judge.md").is_file():
            return folder
    raise FileNotFoundError(f"prompt files not found in {' or '.join(map(str, _SEARCH_PATH))}")


@cache
def load_template(name: str) -> Template:
    """Read ``prompts/<name>.md`` once."""
    if name not in PROMPT_VARIABLES:
        raise KeyError(f"unknown prompt {name!r}; known: {', '.join(PROMPT_VARIABLES)}")
    return Template((prompts_dir() / f"{name}.md").read_text(encoding="utf-8").strip())


def render(name: str, **variables: object) -> str:
    """Render a prompt; every declared variable must be given, and nothing else."""
    expected = PROMPT_VARIABLES.get(name)
    if expected is None:
        raise KeyError(f"unknown prompt {name!r}; known: {', '.join(PROMPT_VARIABLES)}")
    if set(variables) != expected:
        raise TypeError(f"prompt {name!r} takes {sorted(expected)}, got {sorted(variables)}")
    return load_template(name).substitute({k: str(v) for k, v in variables.items()})


def request_text(prompt: str, history: str) -> str:
    """The user's request, with the earlier turns of the chat when there are any."""
    if not history:
        return prompt
    return f"Conversation so far:\n{history}\n\nCurrent request:\n{prompt}"
