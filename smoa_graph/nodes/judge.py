"""Judge: after every layer, keep the best k of the layer's n responses; only they flow on.

The judge is the proposers' fan-in. With k or fewer successful responses it keeps them all
without a call; with none, the run ends with ``AllProposersFailedError``. When its call fails for
good or its verdict is unusable, the deterministic rule of ``judging.validate_verdict`` selects.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from langgraph.errors import NodeError
from langgraph.runtime import Runtime

from smoa_graph.attempts import failure_records
from smoa_graph.config import SMoAConfig
from smoa_graph.errors import AllProposersFailedError
from smoa_graph.judging import Verdict, format_candidates, validate_verdict
from smoa_graph.nodes.kit import NodeKit
from smoa_graph.prompts import render, request_text
from smoa_graph.schemas import judge_format, judge_schema
from smoa_graph.state import CallRecord, Candidate, JudgeRecord, LayerState


def survivors(
    state: LayerState, cfg: SMoAConfig
) -> tuple[int, list[Candidate], list[Candidate], int]:
    """(layer, all candidates by index, the successful ones, k for them).

    With no successful candidate the run cannot go on: ``AllProposersFailedError``.
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


def judged(
    layer: int,
    candidates: list[Candidate],
    ok: list[Candidate],
    verdict: Verdict,
    calls: list[CallRecord],
    called: bool,
) -> dict[str, Any]:
    """The judge's update: the selection flows on, the layer's record is appended."""
    selected = [ok[i] for i in verdict.selected]
    record = JudgeRecord(
        selected=[c["index"] for c in selected],
        reasoning=verdict.reasoning,
        critique=verdict.critique,
        called=called,
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


def judge_prompt(
    state: LayerState, cfg: SMoAConfig, texts: list[str], k: int, layer: int, with_stop: bool
) -> str:
    """The judge's prompt for these candidate texts (and the stop question when merged)."""
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
    layer, candidates, ok, k = survivors(state, cfg)
    if cfg.selection == "all" or len(ok) <= k:
        verdict = Verdict(list(range(len(ok))), "", "", None, None)
        return judged(layer, candidates, ok, verdict, [], called=False)
    with_stop = cfg.merge_judge_moderator and cfg.moderator in ("model", "hybrid")
    texts = [c["text"] for c in ok]
    text = judge_prompt(state, cfg, texts, k, layer, with_stop)
    base = cfg.judge_index_base
    schema = judge_schema(len(ok), k, with_stop, base)
    data, calls = await kit.control_call(cfg, "judge", layer, text, schema)
    verdict = validate_verdict(data, texts, k, base)
    return judged(layer, candidates, ok, verdict, calls, called=True)


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
    return judged(layer, candidates, ok, verdict, calls, called=False)
