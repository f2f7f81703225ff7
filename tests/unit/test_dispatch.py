"""Prompt layout for prefix caching, and how a layer's proposer calls reach the backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field

from smoa_graph import build_smoa_graph
from smoa_graph.nodes.dispatch import dispatch_policy
from smoa_graph.nodes.proposer import proposer_messages
from smoa_graph.prompts import render
from smoa_graph.state import Candidate, ProposerTask
from smoa_graph.testing import FakeChatModel, disagreeing_responder, every_role


def task(index: int, role: str, references: list[Candidate]) -> ProposerTask:
    return ProposerTask(
        index=index,
        role=role,
        prompt="What is 7 + 5?",
        history="User: hi\nAssistant: hello",
        layer=2,
        references=references,
        critique="check the sum",
        debate=False,
        own=None,
        dispatch_key="k",
    )


def rendered(messages: list[BaseMessage]) -> str:
    return "\n".join(m.text for m in messages)


def test_proposers_without_roles_share_their_whole_prompt_and_a_role_leads() -> None:
    refs = [
        Candidate(index=i, role="r", model="m", text=f"answer {i}", ok=True, error=None)
        for i in range(2)
    ]
    plain = {rendered(proposer_messages(task(i, "", refs))) for i in range(3)}
    assert len(plain) == 1  # one prompt for the layer: a backend caches all of it
    (text,) = plain
    assert "What is 7 + 5?" in text and text.endswith("answer 1\n\n--- end of the answers ---")
    roles = ["a careful accountant", "a patient teacher", "a skeptical engineer"]
    texts = [rendered(proposer_messages(task(i, role, refs))) for i, role in enumerate(roles)]
    for with_role, role in zip(texts, roles, strict=True):
        assert with_role == f"{render('role', role=role)}\n{text}"  # the role first, then the same


@pytest.mark.parametrize(
    ("fields", "policy"),
    [
        ({"model": "local"}, "sequential"),
        ({"model": "local", "max_layers": 1}, "sequential"),
        ({"model": "openai:gpt-4o-mini"}, "parallel"),
        ({"model": "local", "proposer_models": ["local", "m@http://h/v1"] * 2}, "parallel"),
        ({"model": "local", "proposer_dispatch": "parallel"}, "parallel"),
        ({"model": "fake", "proposer_dispatch": "prefix-first"}, "prefix-first"),
    ],
)
def test_auto_dispatch_is_sequential_only_on_the_local_model(
    fields: dict[str, Any], policy: str
) -> None:
    assert dispatch_policy(every_role(**fields), shared_references=True) == policy
    first_layer = dispatch_policy(every_role(**fields), shared_references=False)
    assert first_layer == ("parallel" if policy == "sequential" else policy)


class Overlap(FakeChatModel):
    """A fake that records when each proposer call starts and ends."""

    spans: list[tuple[int, float, float]] = Field(default_factory=list)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        started = time.monotonic()
        chunks = [c async for c in super()._astream(messages, stop, run_manager, **kwargs)]
        call, _ = self._call_info(messages)
        if call.role == "proposer" and call.index is not None:
            self.spans.append((call.index, started, time.monotonic()))
        for chunk in chunks:
            yield chunk


def most_in_flight(spans: list[tuple[int, float, float]]) -> int:
    return max(sum(s <= start < e for _, s, e in spans) for _, start, _ in spans)


@pytest.mark.parametrize(
    ("policy", "in_flight", "first_alone"),
    [("parallel", 4, False), ("sequential", 1, True), ("prefix-first", 3, True)],
)
@pytest.mark.parametrize("sync", [False, True], ids=["ainvoke", "invoke"])
async def test_dispatch_orders_the_calls_but_not_the_graph(
    policy: str, in_flight: int, first_alone: bool, sync: bool
) -> None:
    model = Overlap(responder=disagreeing_responder, latency_s=0.05, spans=[])
    config = every_role(model="fake", n_proposers=4, k=2, max_layers=2, proposer_dispatch=policy)
    graph = build_smoa_graph(config, model_factory=lambda request: model).compile()
    if sync:
        state = await asyncio.to_thread(graph.invoke, {"prompt": "q?"})
    else:
        state = await graph.ainvoke({"prompt": "q?"})
    assert [len(layer["candidates"]) for layer in state["layers"]] == [4, 4]
    for layer in (1, 2):
        spans = model.spans[(layer - 1) * 4 : layer * 4]
        assert most_in_flight(spans) == in_flight
        first_end = min(e for _, _, e in spans)
        assert (sum(s < first_end for _, s, _ in spans) == 1) is first_alone
