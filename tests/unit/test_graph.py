"""The SMoA graph end to end with fake models: fan-out, judge, moderator, presets, accounting."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.store.memory import InMemoryStore
from pydantic import Field

from smoa_graph import (
    AllProposersFailedError,
    InvalidInputError,
    SMoAConfig,
    build_smoa_graph,
)
from smoa_graph.testing import (
    FakeCall,
    FakeChatModel,
    default_responder,
    disagreeing_responder,
    every_role,
    fake_factory,
)


def run_graph(
    config: SMoAConfig, responder: Any = default_responder, **fake: Any
) -> tuple[dict, Any]:
    factory = fake_factory(responder=responder, **fake)
    graph = build_smoa_graph(config, model_factory=factory).compile()
    return graph, factory


def n_responses(prompt: str) -> int:
    """How many candidate responses a prompt shows (marked for the judge, plain elsewhere)."""
    return len(re.findall(r"<<<RESPONSE \d+ [0-9a-f]{8}>>>|^--- \w+ answer ---$", prompt, re.M))


def calls_of(factory: Any, role: str) -> list[FakeCall]:
    return [c for c in factory.models["fake"].calls if c.role == role]


class GatedModel(FakeChatModel):
    """Holds each of the first ``hold`` calls until all of them have started, for up to 10 s.

    Calls made one after another never all start, so the first one times out and fails.
    """

    hold: int = 0
    started: int = 0
    all_started: asyncio.Event = Field(default_factory=asyncio.Event)

    async def _wait_for_the_others(self) -> None:
        self.started += 1
        if self.started == self.hold:
            self.all_started.set()
        if self.started <= self.hold:
            await asyncio.wait_for(self.all_started.wait(), timeout=10)

    async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
        await self._wait_for_the_others()
        return await super()._agenerate(*args, **kwargs)

    async def _astream(self, *args: Any, **kwargs: Any) -> Any:
        await self._wait_for_the_others()
        async for chunk in super()._astream(*args, **kwargs):
            yield chunk


@pytest.mark.parametrize("sync", [False, True], ids=["ainvoke", "invoke"])
async def test_proposers_run_concurrently(sync: bool) -> None:
    """Also in sync runs, whose async nodes run on the background loop."""
    n = 6
    model = GatedModel(hold=n)  # the layer's n proposer calls come first
    config = every_role(n_proposers=n, k=2, max_layers=1, model="fake", max_attempts=1)
    graph = build_smoa_graph(config, model_factory=lambda request: model).compile()
    out = graph.invoke({"prompt": "q"}) if sync else await graph.ainvoke({"prompt": "q"})
    assert model.started > n  # the judge and the aggregator came after
    proposers = [c for c in out["calls"] if c["role"] == "proposer"]
    assert len(proposers) == n and all(c["ok"] for c in proposers)


async def test_exactly_k_responses_flow_to_next_layer() -> None:
    config = every_role(n_proposers=4, k=2, max_layers=2, model="fake", moderator="consistency")
    graph, factory = run_graph(config, disagreeing_responder)
    out = await graph.ainvoke({"prompt": "q"})
    assert [len(layer["candidates"]) for layer in out["layers"]] == [4, 4]
    assert len(out["selected"]) == 2
    second = [c for c in calls_of(factory, "proposer") if c.layer == 2]
    assert len(second) == 4
    for call in second:
        assert n_responses(call.prompt) == 2
    # the judge chose [1, 2] (1-based) in layer 1: proposers 0 and 1 flow on
    assert out["layers"][0]["judge"]["selected"] == [0, 1]
    assert "Final answer: 10" in second[0].prompt and "Final answer: 11" in second[0].prompt


async def test_moderator_stops_early_when_selected_responses_agree() -> None:
    config = every_role(n_proposers=4, k=2, max_layers=3, model="fake")
    graph, factory = run_graph(config)
    out = await graph.ainvoke({"prompt": "q"})
    assert len(out["layers"]) == 1
    decision = out["decisions"][-1]
    assert decision["stop"] and "agree" in decision["reason"]
    assert decision["agreed_answer"] == "42"
    assert calls_of(factory, "moderator") == []  # consistency needed no model call
    assert out["summary"]["stopped_at_layer"] == 1


async def test_moderator_runs_to_max_layers_when_responses_disagree() -> None:
    config = every_role(n_proposers=4, k=2, max_layers=3, model="fake", moderator="hybrid")
    graph, factory = run_graph(config, disagreeing_responder)
    out = await graph.ainvoke({"prompt": "q"})
    assert len(out["layers"]) == 3
    assert [d["stop"] for d in out["decisions"]] == [False, False, True]
    assert out["decisions"][-1]["reason"] == "reached max_layers=3"
    assert len(calls_of(factory, "moderator")) == 2  # no model call at max_layers


async def test_moderator_model_vote_can_stop() -> None:
    config = every_role(n_proposers=3, k=2, max_layers=3, model="fake", moderator="model")
    graph, factory = run_graph(config)  # default moderator responder votes stop
    out = await graph.ainvoke({"prompt": "q"})
    assert len(out["layers"]) == 1
    assert out["decisions"][0]["model_vote"] is True
    assert len(calls_of(factory, "moderator")) == 1


async def test_merged_judge_moderator_saves_the_moderator_call() -> None:
    def merged(call: FakeCall) -> str:
        if call.role == "judge":
            stop = call.layer >= 2
            return json.dumps({"reasoning": "r", "chosen": [2, 3], "critique": "c", "stop": stop})
        return disagreeing_responder(call)

    config = every_role(n_proposers=4, k=2, max_layers=4, model="fake", merge_judge_moderator=True)
    graph, factory = run_graph(config, merged)
    out = await graph.ainvoke({"prompt": "q"})
    assert len(out["layers"]) == 2
    assert calls_of(factory, "moderator") == []
    assert [d["model_vote"] for d in out["decisions"]] == [False, True]
    assert '"stop"' in calls_of(factory, "judge")[0].prompt


async def test_token_budget_stops_the_run() -> None:
    config = every_role(
        n_proposers=4, k=2, max_layers=5, model="fake", token_budget=10, moderator="consistency"
    )
    graph, _ = run_graph(config, disagreeing_responder)
    out = await graph.ainvoke({"prompt": "q"})
    assert len(out["layers"]) == 1
    assert "token budget" in out["decisions"][0]["reason"]


async def test_moa_preset_passes_all_n_and_never_stops_early() -> None:
    config = SMoAConfig(preset="moa", max_layers=3, model="fake")
    graph, factory = run_graph(config)  # responses agree, yet MoA runs every layer
    out = await graph.ainvoke({"prompt": "q"})
    assert len(out["layers"]) == 3
    assert all(not d["stop"] for d in out["decisions"][:-1])
    assert calls_of(factory, "judge") == [] and calls_of(factory, "moderator") == []
    assert all(len(layer["judge"]["selected"]) == 4 for layer in out["layers"])
    for call in calls_of(factory, "proposer"):
        assert n_responses(call.prompt) == (0 if call.layer == 1 else 4)
    assert n_responses(calls_of(factory, "aggregator")[0].prompt) == 4


async def test_single_preset_is_one_call() -> None:
    graph, factory = run_graph(SMoAConfig(preset="single", model="fake"))
    out = await graph.ainvoke({"prompt": "q"})
    assert [c.role for c in factory.models["fake"].calls] == ["proposer"]
    assert out["answer"] == out["layers"][0]["candidates"][0]["text"]
    assert out["summary"]["total"]["calls"] == 1


@pytest.mark.parametrize(
    ("judge_text", "expected", "problem"),
    [
        ("I like the second one best.", [0, 1], "no JSON verdict"),
        ('{"chosen": [9, 2], "reasoning": "x"}', [1, 0], "invalid index 9"),
        ('{"chosen": [3, 3], "reasoning": "x"}', [2, 0], "duplicate index 3"),
        ('{"chosen": [-1, 0]}', [0, 1], "invalid index -1"),
    ],
)
async def test_judge_falls_back_deterministically(
    judge_text: str, expected: list[int], problem: str
) -> None:
    def responder(call: FakeCall) -> str:
        return judge_text if call.role == "judge" else default_responder(call)

    config = every_role(n_proposers=4, k=2, max_layers=1, model="fake")
    graph, _ = run_graph(config, responder)
    out = await graph.ainvoke({"prompt": "q"})
    judge = out["layers"][0]["judge"]
    assert judge["selected"] == expected
    assert judge["fallback"] is not None and problem in judge["fallback"]


async def test_failed_proposer_is_recorded_and_layer_goes_on() -> None:
    def responder(call: FakeCall) -> str:
        if call.role == "proposer" and call.index == 1:
            raise ValueError("proposer 1 is broken")
        return default_responder(call)

    config = every_role(n_proposers=4, k=2, max_layers=1, model="fake", max_attempts=2)
    graph, factory = run_graph(config, responder)
    out = await graph.ainvoke({"prompt": "q"})
    candidates = out["layers"][0]["candidates"]
    assert [c["ok"] for c in candidates] == [True, False, True, True]
    assert "proposer 1 is broken" in candidates[1]["error"]
    assert 1 not in out["layers"][0]["judge"]["selected"]
    failed = [c for c in out["calls"] if not c["ok"]]
    assert len(failed) == 1 and failed[0]["index"] == 1
    assert out["summary"]["total"]["failed_calls"] == 1
    assert out["answer"]
    # the judge saw only the 3 survivors
    assert n_responses(calls_of(factory, "judge")[0].prompt) == 3


async def test_judge_adapts_k_when_few_proposers_survive() -> None:
    def responder(call: FakeCall) -> str:
        if call.role == "proposer" and call.index != 2:
            raise ValueError("down")
        return default_responder(call)

    config = every_role(n_proposers=4, k=2, max_layers=1, model="fake", max_attempts=1)
    graph, factory = run_graph(config, responder)
    out = await graph.ainvoke({"prompt": "q"})
    assert out["layers"][0]["judge"]["selected"] == [2]
    assert calls_of(factory, "judge") == []  # one survivor: nothing to choose
    assert out["answer"]


async def test_all_proposers_failing_ends_with_a_clear_error() -> None:
    def responder(call: FakeCall) -> str:
        if call.role == "proposer":
            raise ValueError("model down")
        return default_responder(call)

    config = every_role(n_proposers=3, k=2, max_layers=2, model="fake", max_attempts=1)
    graph, _ = run_graph(config, responder)
    with pytest.raises(AllProposersFailedError, match="all 3 proposers of layer 1 failed"):
        await graph.ainvoke({"prompt": "q"})


async def test_token_accounting_sums_correctly() -> None:
    config = every_role(n_proposers=4, k=2, max_layers=2, model="fake", moderator="model")
    graph, factory = run_graph(config, disagreeing_responder)
    out = await graph.ainvoke({"prompt": "What is 6 times 7?"})
    fake_calls = factory.models["fake"].calls
    calls = out["calls"]
    assert len(calls) == len(fake_calls) == 4 + 1 + 1 + 4 + 1 + 1  # layers, judges, moderator, agg
    expected_in = sum(len(c.prompt.split()) for c in fake_calls)
    total = out["summary"]["total"]
    assert total["input_tokens"] == expected_in
    assert total["total_tokens"] == total["input_tokens"] + total["output_tokens"]
    for group in ("by_role", "by_layer"):
        parts = out["summary"][group].values()
        assert sum(p["total_tokens"] for p in parts) == total["total_tokens"]
        assert sum(p["calls"] for p in parts) == total["calls"]
    assert out["summary"]["by_role"]["proposer"]["calls"] == 8
    assert set(out["summary"]["by_layer"]) == {"1", "2"}


async def test_no_duplication_of_records_across_layers() -> None:
    config = every_role(n_proposers=4, k=2, max_layers=3, model="fake", moderator="consistency")
    graph, _ = run_graph(config, disagreeing_responder)
    out = await graph.ainvoke({"prompt": "q"})
    assert [layer["layer"] for layer in out["layers"]] == [1, 2, 3]
    assert [len(layer["candidates"]) for layer in out["layers"]] == [4, 4, 4]
    assert len([c for c in out["calls"] if c["role"] == "proposer"]) == 12
    assert [d["layer"] for d in out["decisions"]] == [1, 2, 3]


async def test_final_answer_streams_token_by_token_with_tags() -> None:
    config = every_role(n_proposers=3, k=2, max_layers=1, model="fake")
    graph, _ = run_graph(config)
    final_tokens: list[str] = []
    roles: set[str] = set()
    async for _namespace, (chunk, metadata) in graph.astream(
        {"prompt": "q"}, stream_mode="messages", subgraphs=True
    ):
        roles.add(metadata.get("smoa_role"))
        if "smoa:final" in metadata.get("tags", []):
            final_tokens.append(chunk.text)
    assert {"proposer", "aggregator"} <= roles
    assert len(final_tokens) > 3
    assert "".join(final_tokens) == "I am aggregator None in layer 1. Final answer: 42"


async def test_empty_prompt_is_rejected_before_any_model_call() -> None:
    graph, factory = run_graph(every_role(model="fake"))
    for bad in ({"prompt": "   \n"}, {"prompt": ""}, {}):
        with pytest.raises(InvalidInputError, match="prompt: empty"):
            await graph.ainvoke(bad)
    assert "fake" not in factory.models  # not even built


async def test_oversized_prompt_is_rejected() -> None:
    graph, factory = run_graph(every_role(model="fake", max_prompt_chars=100))
    with pytest.raises(InvalidInputError, match="max_prompt_chars"):
        await graph.ainvoke({"prompt": "x" * 101})
    assert "fake" not in factory.models


async def test_chat_history_input_and_ai_message_output() -> None:
    config = every_role(n_proposers=2, k=2, max_layers=1, model="fake")
    graph = build_smoa_graph(config, model_factory=fake_factory()).compile(
        checkpointer=InMemorySaver()
    )
    thread = {"configurable": {"thread_id": "t1"}}
    history = [HumanMessage("My name is Ada."), AIMessage("Hello Ada."), HumanMessage("Name?")]
    out = await graph.ainvoke({"messages": history}, thread)
    assert out["question"] == "Name?"
    assert "User: My name is Ada." in out["history"]
    assert isinstance(out["messages"][-1], AIMessage) and out["messages"][-1].text == out["answer"]
    # a second turn on the same thread: a fresh trace, the history grows
    out2 = await graph.ainvoke({"prompt": "And again?"}, thread)
    assert out2["question"] == "And again?"
    assert "Assistant: " in out2["history"] and len(out2["messages"]) == 6
    assert [layer["layer"] for layer in out2["layers"]] == [1]


async def test_runtime_context_overrides_the_default_config() -> None:
    graph, _ = run_graph(every_role(model="fake"))
    out = await graph.ainvoke(
        {"prompt": "q"},
        context={"preset": "moa", "n_proposers": 2, "k": 2, "max_layers": 2, "model": "fake"},
    )
    assert len(out["layers"]) == 2 and len(out["layers"][0]["candidates"]) == 2


async def test_roles_are_generated_once_and_cached(tmp_path: Any) -> None:
    config = every_role(
        n_proposers=3,
        k=2,
        max_layers=1,
        model="fake",
        task_description="grade-school math",
        task_requirement="give the number",
        roles_cache_dir=str(tmp_path),
    )
    graph, factory = run_graph(config)
    first = await graph.ainvoke({"prompt": "q"})
    second = await graph.ainvoke({"prompt": "q2"})
    assert (
        first["roles"]
        == second["roles"]
        == ["expert number 0", "expert number 1", "expert number 2"]
    )
    assert len(calls_of(factory, "roles")) == 1
    assert len(list(tmp_path.glob("*.json"))) == 1
    proposer_prompts = [c.prompt for c in calls_of(factory, "proposer")]
    assert any(
        p.startswith("You are expert number 1. Answer the user's request in your own voice")
        for p in proposer_prompts
    )


async def test_roles_cache_in_a_langgraph_store() -> None:
    config = every_role(n_proposers=2, k=2, max_layers=1, model="fake", task_description="math")
    factory = fake_factory()
    graph = build_smoa_graph(config, model_factory=factory).compile(store=InMemoryStore())
    await graph.ainvoke({"prompt": "q"})
    await graph.ainvoke({"prompt": "q"})
    assert len(calls_of(factory, "roles")) == 1


async def test_static_roles_and_per_proposer_models() -> None:
    config = every_role(
        n_proposers=2,
        k=1,
        max_layers=1,
        model="fake",
        roles=["a poet", "a judge of poems"],
        proposer_models=["fake-a", "fake-b"],
    )
    factory = fake_factory()
    graph = build_smoa_graph(config, model_factory=factory).compile()
    out = await graph.ainvoke({"prompt": "q"})
    assert [c["model"] for c in out["layers"][0]["candidates"]] == ["fake-a", "fake-b"]
    assert factory.models["fake-a"].calls[0].prompt.startswith("You are a poet. Answer")


async def test_text_path_when_model_has_no_structured_output() -> None:
    def responder(call: FakeCall) -> str:
        if call.role == "judge":
            return 'Sure! ```json\n{"reasoning": "x", "chosen": [3, 1], "critique": ""}\n```'
        return default_responder(call)

    config = every_role(n_proposers=3, k=2, max_layers=1, model="fake")
    graph, _ = run_graph(config, responder, structured=False)
    out = await graph.ainvoke({"prompt": "q"})
    assert out["layers"][0]["judge"]["selected"] == [2, 0]
    assert out["layers"][0]["judge"]["fallback"] is None


async def test_marker_lines_echoed_by_the_aggregator_are_left_out_of_the_answer() -> None:
    def responder(call: FakeCall) -> str:
        if call.role != "aggregator":
            return default_responder(call)
        return (
            "--- first answer ---\n<<<RESPONSE 1 0badc0de>>\nThe answer is 42.\n< <END RESPONSE 1>"
        )

    graph, _ = run_graph(every_role(model="fake", n_proposers=3, k=2, max_layers=1), responder)
    out = await graph.ainvoke({"prompt": "q"})
    assert out["answer"] == "The answer is 42." == out["messages"][-1].text
