"""Aggregator: end the run with the final answer.

``finish='aggregate'``: synthesise it from the last layer's selected responses (the call is
streamed and tagged ``FINAL_ANSWER_TAG``). ``finish='vote'``: the response giving the majority
answer is the answer, with no call (``consistency.majority_vote``); when no response has an
extractable answer, one call picks the most consistent response (Universal Self-Consistency).
``finish='agreement'``: when the last layer agrees, its agreed response stands with no call (a
small model's synthesis loses answers that its proposers agreed on); otherwise as 'aggregate'.
``finish='plurality'``: the same over all the run's responses, every layer's counted: the answer
most of them give stands when no other ties it; otherwise as 'aggregate'.
In the ``single`` preset the one proposer's answer is the answer.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.runtime import Runtime

from smoa_graph.answers import extract_final_answer
from smoa_graph.attempts import CallAttempts
from smoa_graph.config import SMoAConfig
from smoa_graph.consistency import majority_vote
from smoa_graph.judging import clean_answer, format_answers, format_candidates, validate_verdict
from smoa_graph.models import stream_text
from smoa_graph.nodes.kit import NodeKit, aggregator_request
from smoa_graph.nodes.moderator import plurality
from smoa_graph.prompts import render, request_text
from smoa_graph.schemas import judge_format, judge_schema
from smoa_graph.state import CallRecord, Candidate, SMoAState, VoteRecord
from smoa_graph.summary import usage_summary


async def synthesise(
    kit: NodeKit, cfg: SMoAConfig, state: SMoAState, selected: list[Candidate]
) -> tuple[str, list[CallRecord]]:
    """One streamed aggregator call over the selected responses: the answer and its calls."""
    layer = state["layer"]
    text = render(
        "aggregator",
        prompt=request_text(state["question"], state.get("history", "")),
        responses=format_answers([c["text"] for c in selected]),
    )
    request = aggregator_request(cfg)
    model = kit.model(request)
    attempts = CallAttempts(cfg, "aggregator", layer, None, request.spec)
    streamed, record = await attempts.run(
        lambda: stream_text(
            model,
            [HumanMessage(text)],
            spec=request.spec,
            role="aggregator",
            layer=layer,
            final=True,
        )
    )
    return clean_answer(streamed), attempts.succeeded(record)  # the stream is left as sent


async def vote(
    kit: NodeKit, cfg: SMoAConfig, state: SMoAState, selected: list[Candidate]
) -> tuple[str, VoteRecord, list[CallRecord]]:
    """The majority answer's response; without extractable answers, the most consistent one."""
    texts = [c["text"] for c in selected]
    result = majority_vote(texts)
    if result.winner_index is not None:
        record = VoteRecord(
            counts=result.counts,
            winner=result.winner,
            winner_index=selected[result.winner_index]["index"],
            tie=result.tie,
            method="majority",
        )
        return clean_answer(texts[result.winner_index]), record, []
    responses, nonce = format_candidates(texts)
    prompt = render(
        "consistent",
        n=len(texts),
        nonce=nonce,
        prompt=request_text(state["question"], state.get("history", "")),
        responses=responses,
        format=judge_format(1, False),
    )
    schema = judge_schema(len(texts), 1, False)
    data, calls = await kit.control_call(cfg, "aggregator", state["layer"], prompt, schema)
    picked = validate_verdict(data, texts, 1)
    method = "most consistent" + (f" (fallback: {picked.fallback})" if picked.fallback else "")
    winner = selected[picked.selected[0]]
    record = VoteRecord(counts={}, winner=None, winner_index=winner["index"], tie=[], method=method)
    return clean_answer(winner["text"]), record, calls


def agreed_response(cfg: SMoAConfig, state: SMoAState) -> Candidate | None:
    """The response that stands under ``finish='agreement'``, or None when the layer disagrees.

    The last layer agrees when every selected response has the same extracted answer, or when
    at least ``stop_share`` of all its answers are one answer. The first selected response
    giving that answer stands (else the first of the layer's).
    """
    selected = state.get("selected", [])
    answers = {extract_final_answer(c["text"]) for c in selected}
    agreed = answers.pop() if len(answers) == 1 else None
    candidates = state["layers"][-1]["candidates"] if state.get("layers") else []
    if agreed is None and (share := plurality(cfg, candidates)) is not None:
        agreed = share[0]
    if agreed is None:
        return None
    pool = [*selected, *(c for c in candidates if c["ok"])]
    return next(c for c in pool if extract_final_answer(c["text"]) == agreed)


def run_plurality(state: SMoAState) -> tuple[Candidate, int, int] | None:
    """Under ``finish='plurality'``: the latest response giving the answer that most of the run's
    responses give, with that count and the number of answers; None on a tie or no answer."""
    pool = [c for layer in reversed(state.get("layers", [])) for c in layer["candidates"]]
    pool = [c for c in pool if c["ok"]]
    result = majority_vote([c["text"] for c in pool])
    if result.winner is None or result.tie:
        return None
    winner = next(c for c in pool if extract_final_answer(c["text"]) == result.winner)
    return winner, result.counts[result.winner], sum(result.counts.values())


async def aggregate(kit: NodeKit, state: SMoAState, runtime: Runtime[Any]) -> dict[str, Any]:
    """End the run as ``finish`` says; write the answer and the summary."""
    cfg = kit.config(runtime)
    selected = state.get("selected", [])
    update: dict[str, Any] = {}
    calls: list[CallRecord] = []
    if cfg.is_single:
        answer, finished_by = clean_answer(selected[0]["text"]), "the single proposer's answer"
    elif cfg.finish == "vote":
        answer, update["vote"], calls = await vote(kit, cfg, state, selected)
        record = update["vote"]
        finished_by = f"vote ({record['method']}): proposer {record['winner_index']}"
    elif cfg.finish == "agreement" and (agreed := agreed_response(cfg, state)) is not None:
        answer = clean_answer(agreed["text"])
        finished_by = f"agreement: proposer {agreed['index']}'s response stands (no call)"
    elif cfg.finish == "plurality" and (top := run_plurality(state)) is not None:
        winner, votes, answers = top
        answer = clean_answer(winner["text"])
        finished_by = (
            f"plurality: {votes} of the run's {answers} answers agree, proposer"
            f" {winner['index']}'s response stands (no call)"
        )
    else:
        answer, calls = await synthesise(kit, cfg, state, selected)
        finished_by = f"aggregator over {len(selected)} response(s)"
    decision = state["decisions"][-1]
    summary = {
        **usage_summary([*state.get("calls", []), *calls]),
        "layers_run": state["layer"],
        "stopped_at_layer": decision["layer"],
        "stop_reason": decision["reason"],
        "finished_by": finished_by,
    }
    return {
        **update,
        "answer": answer,
        "messages": [AIMessage(answer, name="smoa")],
        "calls": calls,
        "summary": summary,
    }
