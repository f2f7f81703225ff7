"""Aggregator: synthesise the final answer from the last layer's selected responses.

Its call is streamed and tagged ``FINAL_ANSWER_TAG``; in the ``single`` preset the one proposer's
answer is the answer and no aggregator call is made.
"""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage, HumanMessage
from langgraph.runtime import Runtime

from smoa_graph.attempts import CallAttempts
from smoa_graph.judging import format_candidates, strip_marker_echoes
from smoa_graph.models import stream_text
from smoa_graph.nodes.kit import NodeKit, aggregator_request
from smoa_graph.prompts import render, request_text
from smoa_graph.state import CallRecord, SMoAState
from smoa_graph.summary import usage_summary


async def aggregate(kit: NodeKit, state: SMoAState, runtime: Runtime[Any]) -> dict[str, Any]:
    """Synthesise the final answer from the selected responses (streamed, tagged final)."""
    cfg = kit.config(runtime)
    selected = state.get("selected", [])
    layer = state["layer"]
    calls: list[CallRecord] = []
    if cfg.is_single:
        answer = selected[0]["text"]
    else:
        responses, nonce = format_candidates([c["text"] for c in selected])
        text = render(
            "aggregator",
            prompt=request_text(state["question"], state.get("history", "")),
            responses=responses,
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
        answer = strip_marker_echoes(streamed, nonce)  # the stream itself is left as sent
        calls = attempts.succeeded(record)
    decision = state["decisions"][-1]
    summary = {
        **usage_summary([*state.get("calls", []), *calls]),
        "layers_run": layer,
        "stopped_at_layer": decision["layer"],
        "stop_reason": decision["reason"],
    }
    return {
        "answer": answer,
        "messages": [AIMessage(answer, name="smoa")],
        "calls": calls,
        "summary": summary,
    }
