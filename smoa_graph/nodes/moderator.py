"""Moderator: after every layer, stop (go to the aggregator) or continue (run another layer).

The decision weighs the round count, the token budget, the agreement of the selected responses
(measured without a model call) and, when they disagree and the mode asks for it, the moderator
model's vote. The decision is written to the state; ``route_after_moderator`` only reads it.
"""

from __future__ import annotations

from typing import Any, Literal

from langgraph.errors import NodeError
from langgraph.runtime import Runtime
from langgraph.types import Command

from smoa_graph.attempts import failure_records
from smoa_graph.config import SMoAConfig
from smoa_graph.consistency import majority_vote, measure_agreement
from smoa_graph.judging import format_candidates
from smoa_graph.nodes.kit import NodeKit
from smoa_graph.prompts import render, request_text
from smoa_graph.schemas import MODERATOR_FORMAT, MODERATOR_SCHEMA
from smoa_graph.state import CallRecord, Candidate, ModeratorDecision, SMoAState


def plurality(cfg: SMoAConfig, candidates: list[Candidate]) -> tuple[str, float] | None:
    """The answer and share when at least ``stop_share`` of a layer's successful responses give
    one extracted answer that no other answer ties; None otherwise (and when it is off)."""
    if cfg.stop_share is None:
        return None
    vote = majority_vote([c["text"] for c in candidates if c["ok"]])
    if vote.winner is None or vote.tie:
        return None
    share = vote.counts[vote.winner] / sum(c["ok"] for c in candidates)
    return (vote.winner, share) if share >= cfg.stop_share else None


def decide(cfg: SMoAConfig, state: SMoAState) -> tuple[ModeratorDecision, bool]:
    """The decision without a model call, and whether the model must vote on it."""
    layer = state["layer"]
    tokens = sum(c["input_tokens"] + c["output_tokens"] for c in state.get("calls", []))
    texts = [c["text"] for c in state.get("selected", [])]
    decision = ModeratorDecision(
        layer=layer,
        stop=True,
        reason="",
        consistency=None,
        agreed_answer=None,
        model_vote=None,
        tokens_so_far=tokens,
    )
    if layer >= cfg.max_layers:
        return {**decision, "reason": f"reached max_layers={cfg.max_layers}"}, False
    if cfg.token_budget is not None and tokens >= cfg.token_budget:
        reason = f"token budget spent ({tokens} >= {cfg.token_budget})"
        return {**decision, "reason": reason}, False
    if cfg.moderator == "never":
        return {**decision, "stop": False, "reason": "preset runs every layer"}, False
    if not cfg.early_stop:
        return {**decision, "stop": False, "reason": "early stop is off"}, False
    share = plurality(cfg, state["layers"][-1]["candidates"]) if state.get("layers") else None
    if share is not None:
        reason = f"{share[1]:.0%} of the layer's answers agree on {share[0]}"
        return {**decision, "agreed_answer": share[0], "reason": reason}, False
    agreement = measure_agreement(texts, cfg.consistency_threshold) if len(texts) > 1 else None
    if agreement is not None:
        decision["consistency"] = round(agreement.score, 4)
        decision["agreed_answer"] = agreement.answer
    if agreement is not None and agreement.agree and cfg.moderator != "model":
        return {**decision, "reason": f"selected responses agree ({agreement.method})"}, False
    if cfg.moderator == "consistency":
        return {**decision, "stop": False, "reason": "selected responses do not agree"}, False
    return decision, True


async def moderate(kit: NodeKit, state: SMoAState, runtime: Runtime[Any]) -> dict[str, Any]:
    """Decide stop/continue after a layer and record why."""
    cfg = kit.config(runtime)
    decision, vote_needed = decide(cfg, state)
    calls: list[CallRecord] = []
    if vote_needed:
        vote, reason, calls = await model_vote(kit, cfg, state)
        decision = {**decision, "stop": vote, "model_vote": vote, "reason": reason}
    return {"decisions": [decision], "calls": calls}


async def model_vote(
    kit: NodeKit, cfg: SMoAConfig, state: SMoAState
) -> tuple[bool, str, list[CallRecord]]:
    """The model's stop vote: from the judge's merged verdict, or one moderator call."""
    layer = state["layer"]
    judge = state["layers"][-1]["judge"]
    if cfg.merge_judge_moderator and judge["called"]:
        vote = bool(judge["stop_vote"])
        return vote, f"judge voted {'stop' if vote else 'continue'} (merged call)", []
    responses, nonce = format_candidates([c["text"] for c in state.get("selected", [])])
    text = render(
        "moderator",
        layer=layer,
        max_layers=cfg.max_layers,
        nonce=nonce,
        prompt=request_text(state["question"], state.get("history", "")),
        responses=responses,
        format=MODERATOR_FORMAT,
    )
    data, calls = await kit.control_call(cfg, "moderator", layer, text, MODERATOR_SCHEMA)
    if data is None or not isinstance(data.get("stop"), bool):
        return False, "moderator output unusable; continuing (fallback)", calls
    reason = str(data.get("reason", ""))[:200]
    return data["stop"], f"moderator (quality {data.get('quality')}): {reason}", calls


def moderator_failed(
    kit: NodeKit, state: SMoAState, error: NodeError, runtime: Runtime[Any]
) -> Command[Literal["layer"]]:
    """Error handler: the moderator's call failed for good, so the rounds continue."""
    cfg = kit.config(runtime)
    decision, _ = decide(cfg, state)
    calls = failure_records(
        error.error,
        role="moderator",
        layer=state["layer"],
        index=None,
        spec=cfg.model_for("moderator"),
    )
    reason = f"moderator call failed ({calls[-1]['error']}); continuing (fallback)"
    decision = {**decision, "stop": False, "reason": reason}
    return Command(update={"decisions": [decision], "calls": calls}, goto="layer")


async def route_after_moderator(state: SMoAState) -> Literal["layer", "aggregator"]:
    """Pure routing: the moderator's last decision picks the next node (async: no thread hop)."""
    return "aggregator" if state["decisions"][-1]["stop"] else "layer"
