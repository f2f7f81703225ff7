"""Prepare: validate the input, build every model (no call), settle the roles."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage
from langgraph.runtime import Runtime
from langgraph.types import Overwrite
from pydantic import ValidationError

from smoa_graph.config import SMoAConfig, config_problems
from smoa_graph.errors import InvalidInputError
from smoa_graph.nodes.kit import NodeKit
from smoa_graph.nodes.roles import settle_roles
from smoa_graph.state import SMoAState

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def history_text(messages: Sequence[BaseMessage]) -> str:
    """Earlier turns of the chat as plain text, one line per message."""
    names = {"human": "User", "ai": "Assistant", "system": "System"}
    return "\n".join(f"{names.get(m.type, m.type)}: {m.text}" for m in messages)


def read_input(
    state: SMoAState, max_chars: int
) -> tuple[str, list[BaseMessage], list[BaseMessage]]:
    """(question, earlier messages, messages to add) from a run's input; ``InvalidInputError``
    naming the fix when it cannot be answered.

    A ``prompt`` is a new question (earlier messages are the history); without one, the last
    message must be the user's.
    """
    messages: list[BaseMessage] = list(state.get("messages") or [])
    new_messages: list[BaseMessage] = []
    if state.get("prompt"):
        question = state["prompt"]
        new_messages.append(HumanMessage(question))
    elif messages and messages[-1].type == "human":
        question = messages.pop().text
    else:
        raise InvalidInputError(
            "prompt: empty; pass {'prompt': 'your question'} or messages ending with the "
            "user's message"
        )
    question = _CONTROL_CHARS.sub("", question).strip()
    if not question:
        raise InvalidInputError("prompt: empty or only whitespace; ask a question")
    try:
        question.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(
            f"prompt: not valid Unicode text (character {exc.start}); pass UTF-8 text"
        ) from None
    if len(question) > max_chars:
        raise InvalidInputError(
            f"prompt: {len(question)} characters is over max_prompt_chars={max_chars}; "
            "shorten it or raise the limit"
        )
    return question, messages, new_messages


def run_config(kit: NodeKit, runtime: Runtime[Any]) -> SMoAConfig:
    """This run's config; a context that does not validate is an input error."""
    try:
        return kit.config(runtime)
    except ValidationError as exc:
        raise InvalidInputError(f"context: {config_problems(exc)}") from None


async def prepare(kit: NodeKit, state: SMoAState, runtime: Runtime[Any]) -> dict[str, Any]:
    """Validate the input, build every model (no call), and settle the roles."""
    cfg = run_config(kit, runtime)
    question, history, new_messages = read_input(state, cfg.max_prompt_chars)
    await kit.preflight(cfg)
    roles, calls = await settle_roles(kit, cfg, runtime)
    return {
        "prompt": "",  # consumed: the next run on this thread reads only new input
        "question": question,
        "messages": new_messages,
        "history": history_text(history),
        "roles": roles,
        "layer": 0,
        "selected": [],
        "critique": "",
        "layers": Overwrite([]),
        "decisions": Overwrite([]),
        "calls": Overwrite(calls),
    }
