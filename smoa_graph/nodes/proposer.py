"""Proposers: n agents answer in parallel, each in its own role.

Layer 1 sees the question; a later layer sees the question plus the responses the judge selected
in the layer before (and its critique). A proposer that fails for good is recorded as a failed
candidate and the layer goes on.
"""

from __future__ import annotations

import uuid
from typing import Any, Literal

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from langgraph.errors import NodeError
from langgraph.runtime import Runtime
from langgraph.types import Command, Send

from smoa_graph.attempts import CallAttempts, failure_records
from smoa_graph.errors import UnusableResponseError
from smoa_graph.judging import format_answers, ordinal
from smoa_graph.models import stream_text
from smoa_graph.nodes.dispatch import dispatch_policy
from smoa_graph.nodes.kit import NodeKit, proposer_request
from smoa_graph.prompts import render, request_text
from smoa_graph.state import Candidate, LayerState, ProposerTask


def proposer_messages(task: ProposerTask) -> list[BaseMessage]:
    """What proposer ``task['index']`` is shown: its role (none when role prompts are off) and
    the instructions, then the request and the references, then, in a debate, which answer was
    its own. Without roles everything before that is the same for every proposer of a layer (a
    prefix a backend caches). With a role, the role comes first: read last, after the
    references, it cost SmolLM2 answers (moa on 13 arith tune items: a right answer among layer
    1's in 7 items instead of 11, a right final answer in 0 instead of 5)."""
    request = request_text(task["prompt"], task["history"])
    references = [c["text"] for c in task["references"]]
    if references and task["debate"]:
        request = render("debate", prompt=request, responses=format_answers(references))
    elif references:
        critique = f"\nJudge's notes on the previous round: {task['critique']}\n"
        request = render(
            "references",
            prompt=request,
            critique=critique if task["critique"] else "",
            responses=format_answers(references),
        )
    own = [render("own", ordinal=ordinal(task["own"]))] if task["own"] is not None else []
    role = [render("role", role=task["role"])] if task["role"] else []
    return [
        SystemMessage("\n".join([*role, render("proposer")])),
        HumanMessage("\n\n".join([request, *own])),
    ]


async def fan_out(kit: NodeKit, state: LayerState, runtime: Runtime[Any]) -> list[Send]:
    """One ``Send`` per proposer; all run in the same superstep, concurrently."""
    cfg = kit.config(runtime)
    dispatch_key = uuid.uuid4().hex  # this layer's proposers share one dispatch gate
    references = state.get("selected") or []
    debate = cfg.reads == "others"
    position = {c["index"]: number for number, c in enumerate(references, 1)}
    active = list(range(cfg.n_proposers))
    if cfg.activation == "selected" and references:
        active = sorted(position)  # a sparse mixture: only the selected proposers answer again
    return [
        Send(
            "propose",
            ProposerTask(
                index=i,
                role=state["roles"][i] if cfg.role_prompts else "",
                prompt=state["question"],
                history=state.get("history", ""),
                layer=state["layer"] + 1,
                references=references,
                critique=state.get("critique", "") if cfg.forward_critique else "",
                debate=debate,
                own=position.get(i) if debate else None,
                dispatch_key=dispatch_key,
            ),
        )
        for i in active
    ]


async def propose(kit: NodeKit, task: ProposerTask, runtime: Runtime[Any]) -> dict[str, Any]:
    """One proposer answers, in its role, with the previous layer's selection as references."""
    cfg = kit.config(runtime)
    layer, index = task["layer"], task["index"]
    request = proposer_request(cfg, index)
    model = kit.model(request)
    messages = proposer_messages(task)
    attempts = CallAttempts(
        cfg, "proposer", layer, index, request.spec, timeout_s=cfg.proposer_timeout_s
    )
    policy = dispatch_policy(cfg, bool(task["references"]))
    async with kit.dispatch_gate(task["dispatch_key"], policy).turn():
        text, record = await attempts.run(
            lambda: stream_text(
                model,
                messages,
                spec=request.spec,
                role="proposer",
                layer=layer,
                index=index,
                final=cfg.is_single,
            )
        )
    if not any(ch.isalnum() for ch in text):
        error = UnusableResponseError(f"no usable text in the response ({text[:40]!r})")
        attempts.reject(record, error)
    candidate = Candidate(
        index=index, role=task["role"], model=record["model"], text=text, ok=True, error=None
    )
    return {"candidates": [candidate], "calls": attempts.succeeded(record)}


def proposer_failed(
    kit: NodeKit, task: ProposerTask, error: NodeError, runtime: Runtime[Any]
) -> Command[Literal["judge"]]:
    """Error handler: record the failed proposer and its attempts; the layer goes on."""
    spec = kit.config(runtime).proposer_model(task["index"])
    calls = failure_records(
        error.error, role="proposer", layer=task["layer"], index=task["index"], spec=spec
    )
    candidate = Candidate(
        index=task["index"],
        role=task["role"],
        model=spec,
        text="",
        ok=False,
        error=calls[-1]["error"],
    )
    return Command(update={"candidates": [candidate], "calls": calls}, goto="judge")
