"""Graph state: the parent graph's state and the narrow input/output of a layer subgraph.

Records are plain JSON-like dicts so that they checkpoint, stream and serialise everywhere.
List fields with ``operator.add`` are append-only traces; a layer subgraph never receives them as
input, so it can only append its own records (no duplication across layers).
"""

from __future__ import annotations

import operator
from typing import Annotated, Any, NotRequired

from langchain_core.messages import AnyMessage
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict


class Candidate(TypedDict):
    """One proposer's response in one layer."""

    index: int
    role: str
    model: str
    text: str
    ok: bool
    error: str | None


class CallRecord(TypedDict):
    """Accounting for one model call."""

    role: str
    layer: int
    index: int | None
    model: str
    input_tokens: int
    cached_input_tokens: int
    output_tokens: int
    latency_s: float
    ttft_s: float | None
    ok: bool
    error: str | None


class JudgeRecord(TypedDict):
    """What the judge selected and how (``method``: judge, vote, all, rule, or kept:
    every proposer failed and the previous layer's selection stands)."""

    selected: list[int]
    method: str
    reasoning: str
    critique: str
    called: bool
    fallback: str | None
    stop_vote: bool | None


class LayerRecord(TypedDict):
    """Trace of one layer: every candidate, the judge's selection."""

    layer: int
    candidates: list[Candidate]
    judge: JudgeRecord


class ModeratorDecision(TypedDict):
    """The moderator's stop/continue decision after one layer."""

    layer: int
    stop: bool
    reason: str
    consistency: float | None
    agreed_answer: str | None
    model_vote: bool | None
    tokens_so_far: int


class VoteRecord(TypedDict):
    """How a vote ended the run (``finish='vote'``)."""

    counts: dict[str, int]
    winner: str | None
    winner_index: int
    tie: list[str]
    method: str


class SMoAInput(TypedDict, total=False):
    """What a caller passes: a prompt, or a chat history whose last human message is the prompt."""

    prompt: str
    messages: Annotated[list[AnyMessage], add_messages]


class SMoAState(SMoAInput, total=False):
    """Full state of one run."""

    question: str
    history: str
    roles: list[str]
    layer: int
    selected: list[Candidate]
    critique: str
    layers: Annotated[list[LayerRecord], operator.add]
    decisions: Annotated[list[ModeratorDecision], operator.add]
    calls: Annotated[list[CallRecord], operator.add]
    vote: VoteRecord
    answer: str
    summary: dict[str, Any]


class LayerInput(TypedDict):
    """What a layer reads from the parent state."""

    question: str
    history: NotRequired[str]
    roles: list[str]
    layer: int
    selected: NotRequired[list[Candidate]]
    critique: NotRequired[str]


class LayerOutput(TypedDict):
    """What a layer writes back: the new layer number, its selection and its own records only."""

    layer: int
    selected: list[Candidate]
    critique: str
    layers: list[LayerRecord]
    calls: list[CallRecord]


class LayerState(LayerInput):
    """Private state of a layer subgraph: its input, the candidates, and its records."""

    candidates: Annotated[list[Candidate], operator.add]
    layers: Annotated[list[LayerRecord], operator.add]
    calls: Annotated[list[CallRecord], operator.add]


class ProposerTask(TypedDict):
    """Payload of one ``Send`` to a proposer."""

    index: int
    role: str
    prompt: str
    history: str
    layer: int
    references: list[Candidate]
    critique: str
    debate: bool  # references are every agent's previous answer (``reads='others'``)
    own: int | None  # then: the number of this agent's own answer among them
    dispatch_key: str
