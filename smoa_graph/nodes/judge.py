"""Judge: after every layer, keep the best k of the layer's n responses; only they flow on.

The judge is the proposers' fan-in. With k or fewer successful responses it keeps them all
without a call; with none, the previous layer's selection stands, and in the first layer the run
ends with ``AllProposersFailedError``. When its call fails for
good or its verdict is unusable, the deterministic rule of ``judging.validate_verdict`` selects.
With ``selection='vote'`` the extracted answers select, and the judge is called only for a tie
at the cut (or responses without an answer) that matters: not when the layer's plurality ends
the run and its agreed response stands.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

from langgraph.errors import NodeError
from langgraph.runtime import Runtime

from smoa_graph.answers import extract_final_answer
from smoa_graph.attempts import failure_records
from smoa_graph.config import SMoAConfig
from smoa_graph.errors import AllProposersFailedError
from smoa_graph.judging import Verdict, format_candidates, validate_verdict
from smoa_graph.nodes.kit import NodeKit
from smoa_graph.nodes.moderator import plurality
from smoa_graph.prompts import render, request_text
from smoa_graph.schemas import judge_format, judge_schema
from smoa_graph.state import CallRecord, Candidate, JudgeRecord, LayerState


def survivors(
    state: LayerState, cfg: SMoAConfig
) -> tuple[int, list[Candidate], list[Candidate], int]:
    """(layer, all candidates by index, the successful ones, k for them).

    With no successful candidate and no earlier selection (``previous_selection_stands``) the
    run cannot go on: ``AllProposersFailedError``.
    """
    candidates = sorted(state["candidates"], key=lambda c: c["index"])
    ok = [c for c in candidates if c["ok"]]
    if not ok:
        errors = "; ".join(f"proposer {c['index']}: {c['error']}" for c in candidates)
        raise AllProposersFailedError(
            f"all {len(candidates)} proposers of layer {state['layer'] + 1} failed: {errors}",
            state.get("calls", []),
        )
    return state["layer"] + 1, candidates, ok, min(cfg.k, len(ok))


def previous_selection_stands(state: LayerState) -> dict[str, Any] | None:
    """The judge's update when every proposer of a later layer failed: the previous layer's
    selection flows on unchanged (the record says so). None when a proposer succeeded or there
    is no earlier selection."""
    candidates = sorted(state["candidates"], key=lambda c: c["index"])
    kept = state.get("selected", [])
    if any(c["ok"] for c in candidates) or not kept:
        return None
    fallback = (
        f"all {len(candidates)} proposers failed; layer {state['layer']}'s selection"
        f" {[c['index'] for c in kept]} stands"
    )
    record = JudgeRecord(
        selected=[],
        method="kept",
        reasoning="",
        critique="",
        called=False,
        fallback=fallback,
        stop_vote=None,
    )
    return {
        "layer": state["layer"] + 1,
        "selected": kept,
        "critique": state.get("critique", ""),
        "layers": [{"layer": state["layer"] + 1, "candidates": candidates, "judge": record}],
        "calls": [],
    }


def vote_selection(texts: list[str], k: int) -> list[int] | None:
    """Positions of one response for each of the k most-supported extracted answers (all the
    responses of the top answers when fewer than k differ); ``None`` when a vote cannot decide:
    a response without an extractable answer, or a tie at the cut."""
    answers = [extract_final_answer(t) for t in texts]
    if any(a is None for a in answers):
        return None
    counts = Counter(answers)
    ranked = sorted(dict.fromkeys(answers), key=lambda a: -counts[a])  # stable: first given first
    if len(ranked) >= k:
        if len(ranked) > k and counts[ranked[k - 1]] == counts[ranked[k]]:
            return None
        return [answers.index(a) for a in ranked[:k]]
    order = sorted(range(len(texts)), key=lambda i: (ranked.index(answers[i]), i))
    return order[:k]


def plurality_selection(texts: list[str], k: int) -> list[int]:
    """Positions of one response per extracted answer, the most supported first (ties: the
    answer given first; responses without an answer last), topped up to k in order."""
    answers = [extract_final_answer(t) for t in texts]
    counts = Counter(a for a in answers if a is not None)
    first: dict[str | None, int] = {}
    for i, answer in enumerate(answers):
        first.setdefault(answer, i)

    def support(item: tuple[str | None, int]) -> tuple[bool, int, int]:
        answer, position = item
        return answer is None, -(counts[answer] if answer is not None else 0), position

    picks = [i for _, i in sorted(first.items(), key=support)][:k]
    return picks + [i for i in range(len(texts)) if i not in picks][: k - len(picks)]


def plurality_ends_run(cfg: SMoAConfig, candidates: list[Candidate]) -> bool:
    """Whether the moderator will stop on this layer's plurality and an agreed response will
    stand: what the judge selects then changes nothing (``finish='agreement'``), or is read only
    when the run-wide vote ties (``finish='plurality'``; the plurality selection then serves)."""
    if cfg.finish not in ("agreement", "plurality") or not cfg.early_stop:
        return False
    return cfg.moderator != "never" and plurality(cfg, candidates) is not None


def judged(
    layer: int,
    candidates: list[Candidate],
    ok: list[Candidate],
    verdict: Verdict,
    calls: list[CallRecord],
    method: str,
) -> dict[str, Any]:
    """The judge's update: the selection flows on, the layer's record is appended."""
    selected = [ok[i] for i in verdict.selected]
    record = JudgeRecord(
        selected=[c["index"] for c in selected],
        method=method,
        reasoning=verdict.reasoning,
        critique=verdict.critique,
        called=method == "judge",
        fallback=verdict.fallback,
        stop_vote=verdict.stop_vote,
    )
    return {
        "layer": layer,
        "selected": selected,
        "critique": verdict.critique,
        "layers": [{"layer": layer, "candidates": candidates, "judge": record}],
        "calls": calls,
    }


def bounded_view(text: str, chars: int) -> str:
    """``text`` cut to ``chars`` characters, its final-answer line kept (a bounded judge view)."""
    text = text.strip()
    if len(text) <= chars:
        return text
    final = [line for line in text.splitlines() if "final answer" in line.lower()][-1:]
    return "\n".join([text[:chars].rstrip() + " [...]", *final])


def judge_prompt(
    state: LayerState, cfg: SMoAConfig, texts: list[str], k: int, layer: int, with_stop: bool
) -> str:
    """The judge's prompt for these candidate texts (and the stop question when merged)."""
    if cfg.judge_view_chars is not None:
        texts = [bounded_view(t, cfg.judge_view_chars) for t in texts]
    responses, nonce = format_candidates(texts, cfg.judge_index_base)
    moderation = (
        "\nAlso say whether the selected responses are good and consistent enough to stop "
        f"the rounds (this is round {layer} of at most {cfg.max_layers}).\n"
        if with_stop
        else ""
    )
    return render(
        "judge",
        n=len(texts),
        k=k,
        nonce=nonce,
        moderation=moderation,
        prompt=request_text(state["question"], state.get("history", "")),
        responses=responses,
        format=judge_format(k, with_stop),
    )


async def judge(kit: NodeKit, state: LayerState, runtime: Runtime[Any]) -> dict[str, Any]:
    """Keep the best k of this layer's successful responses (all of them when <= k, or when
    ``selection='all'``)."""
    cfg = kit.config(runtime)
    if (kept := previous_selection_stands(state)) is not None:
        return kept
    layer, candidates, ok, k = survivors(state, cfg)
    last_unjudged = not cfg.final_layer_judge and layer >= cfg.max_layers
    if cfg.selection == "all" or len(ok) <= k or last_unjudged:
        verdict = Verdict(list(range(len(ok))), "", "", None, None)
        return judged(layer, candidates, ok, verdict, [], "all")
    texts = [c["text"] for c in ok]
    picks = vote_selection(texts, k) if cfg.selection == "vote" else None
    if picks is not None:
        verdict = Verdict(picks, "the most-supported extracted answers", "", None, None)
        return judged(layer, candidates, ok, verdict, [], "vote")
    if cfg.selection == "vote" and plurality_ends_run(cfg, candidates):
        reason = "the layer's plurality ends the run: no judge call for the tie"
        verdict = Verdict(plurality_selection(texts, k), reason, "", None, None)
        return judged(layer, candidates, ok, verdict, [], "vote")
    with_stop = cfg.merge_judge_moderator and cfg.moderator in ("model", "hybrid")
    text = judge_prompt(state, cfg, texts, k, layer, with_stop)
    base = cfg.judge_index_base
    schema = judge_schema(len(ok), k, with_stop, base)
    data, calls = await kit.control_call(cfg, "judge", layer, text, schema)
    verdict = validate_verdict(data, texts, k, base)
    return judged(layer, candidates, ok, verdict, calls, "judge")


def judge_failed(
    kit: NodeKit, state: LayerState, error: NodeError, runtime: Runtime[Any]
) -> dict[str, Any]:
    """Error handler: the judge's call failed for good, so its deterministic rule selects."""
    cfg = kit.config(runtime)
    layer, candidates, ok, k = survivors(state, cfg)  # re-raises when no proposer survived
    calls = failure_records(
        error.error, role="judge", layer=layer, index=None, spec=cfg.model_for("judge")
    )
    verdict = validate_verdict(None, [c["text"] for c in ok], k)
    verdict = replace(verdict, fallback=f"judge call failed ({calls[-1]['error']})")
    return judged(layer, candidates, ok, verdict, calls, "rule")
