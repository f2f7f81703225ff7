"""Every preset is one graph with other defaults: calls by role, what proposers see, how it ends."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.graph import END, START, MessagesState, StateGraph
from pydantic import ValidationError

from smoa_graph import SMoAConfig, build_smoa_graph
from smoa_graph.config import PRESET_DEFAULTS
from smoa_graph.judging import ordinal
from smoa_graph.testing import (
    EVERY_ROLE,
    FakeCall,
    FakeChatModel,
    default_responder,
    fake_factory,
)


def calls_by_role(state: dict[str, Any]) -> dict[str, int]:
    return dict(Counter(c["role"] for c in state["calls"]))


def proposer_prompts(factory: Any, layer: int) -> dict[int, str]:
    calls = factory.models["fake"].calls
    return {c.index: c.prompt for c in calls if c.role == "proposer" and c.layer == layer}


def answers_by_index(answers: dict[int, str]) -> Any:
    """Proposer i answers ``answers[i]``; the judge picks 1 and 2, the moderator continues."""

    def responder(call: FakeCall) -> str:
        if call.role == "proposer" and call.index is not None:
            return f"Proposer {call.index} reasons. Final answer: {answers[call.index]}"
        if call.role == "moderator":
            return '{"reason": "go on", "quality": 5, "stop": false}'
        return default_responder(call)

    return responder


async def run(preset: str, responder: Any = default_responder, **fields: Any) -> tuple[Any, Any]:
    """A run of ``preset``; levers on ``smoa`` are tried on its every-role flow."""
    factory = fake_factory(responder=responder)
    base = EVERY_ROLE if preset == "smoa" else {}
    config = SMoAConfig(preset=preset, model="fake", **{**base, **fields})
    state = (
        await build_smoa_graph(config, model_factory=factory)
        .compile()
        .ainvoke({"prompt": "What is 7 + 5?"})
    )
    return state, factory


@pytest.mark.parametrize(
    ("preset", "expected"),
    [
        ("single", {"proposer": 1}),
        ("moa", {"proposer": 8, "aggregator": 1}),
        ("self-consistency", {"proposer": 4}),
        ("self-moa", {"proposer": 4, "aggregator": 1}),
        ("mad", {"proposer": 6}),
        ("smoa-paper", {"roles": 1, "proposer": 8, "judge": 2, "aggregator": 1}),  # 11 a query
    ],
)
async def test_calls_by_role(preset: str, expected: dict[str, int]) -> None:
    state, _ = await run(preset, answers_by_index({0: 1, 1: 2, 2: 3, 3: 4}))
    assert calls_by_role(state) == expected


async def test_smoa_paper_stops_after_the_first_round_with_six_calls(tmp_path: Any) -> None:
    def responder(call: FakeCall) -> str:  # the merged verdict ends the debate
        if call.role == "judge":
            return '{"reasoning": "r", "chosen": [0, 2], "critique": "", "stop": true}'
        return default_responder(call)

    state, factory = await run("smoa-paper", responder, roles_cache_dir=str(tmp_path))
    assert calls_by_role(state) == {"roles": 1, "proposer": 4, "judge": 1, "aggregator": 1}
    assert state["layers"][0]["judge"]["selected"] == [0, 2]  # 0-based, as the paper's code
    assert state["decisions"][0]["reason"] == "judge voted stop (merged call)"
    judge = next(c for c in factory.models["fake"].calls if c.role == "judge")
    assert "<<<RESPONSE 0 " in judge.prompt and "<<<RESPONSE 4 " not in judge.prompt
    again, _ = await run("smoa-paper", responder, roles_cache_dir=str(tmp_path))
    assert sum(calls_by_role(again).values()) == 6  # roles are cached: 4 + 1 + 1


def test_smoa_paper_runs_every_role_at_temperature_0_7() -> None:
    config = SMoAConfig(preset="smoa-paper")
    temperatures = (
        config.proposer_temperature,
        config.control_temperature,
        config.aggregator_temperature,
    )
    assert temperatures == (0.7, 0.7, 0.7)
    assert (config.n_proposers, config.k, config.max_layers) == (4, 2, 2)
    assert config.merge_judge_moderator and config.task_description


async def test_self_consistency_votes_without_an_aggregator() -> None:
    state, factory = await run("self-consistency", answers_by_index({0: 5, 1: 12, 2: 12, 3: 7}))
    assert "Final answer: 12" in state["answer"] and "Proposer 1" in state["answer"]
    assert state["vote"] == {
        "counts": {"5": 1, "12": 2, "7": 1},
        "winner": "12",
        "winner_index": 1,
        "tie": [],
        "method": "majority",
    }
    prompts = set(proposer_prompts(factory, 1).values())
    assert len(prompts) == 1 and "Answer as" not in prompts.pop()  # no roles: plain samples


async def test_a_tied_vote_goes_to_the_answer_given_first() -> None:
    state, _ = await run("self-consistency", answers_by_index({0: 9, 1: 4, 2: 4, 3: 9}))
    assert state["vote"]["winner"] == "9" and state["vote"]["winner_index"] == 0
    assert state["vote"]["tie"] == ["9", "4"]


async def test_unextractable_answers_go_to_one_consistency_call() -> None:
    def responder(call: FakeCall) -> str:
        if call.role == "proposer" and call.index is not None:
            return f"A poem, the {['first', 'second', 'third', 'fourth'][call.index]} take."
        if call.role == "aggregator":
            return '{"reasoning": "2 agrees most", "chosen": [2], "critique": ""}'
        return default_responder(call)

    state, factory = await run("self-consistency", responder)
    assert state["answer"] == "A poem, the second take." and calls_by_role(state)["aggregator"] == 1
    assert state["vote"]["method"] == "most consistent" and state["vote"]["winner_index"] == 1
    prompt = next(c.prompt for c in factory.models["fake"].calls if c.role == "aggregator")
    assert "Select the most consistent response" in " ".join(prompt.split())


async def test_self_moa_aggregates_all_samples_of_one_model() -> None:
    state, factory = await run("self-moa", answers_by_index({0: 1, 1: 2, 2: 3, 3: 4}))
    aggregator = next(c.prompt for c in factory.models["fake"].calls if c.role == "aggregator")
    assert all(f"Proposer {i} reasons" in aggregator for i in range(4))
    assert len(state["layers"]) == 1 and not state["layers"][0]["judge"]["called"]


async def test_mad_agents_read_every_previous_answer_and_know_their_own() -> None:
    state, factory = await run("mad", answers_by_index({0: 5, 1: 12, 2: 12}))
    second = proposer_prompts(factory, 2)
    for index, prompt in second.items():
        assert all(f"Proposer {i} reasons" in prompt for i in range(3))  # no judge between
        assert prompt.endswith(
            f"Your own previous answer is the {ordinal(index + 1)} answer above."
        )
    assert calls_by_role(state) == {"proposer": 6} and state["vote"]["winner"] == "12"


@pytest.mark.parametrize(
    ("fields", "check"),
    [
        ({"role_prompts": False}, "no role"),
        ({"selection": "all"}, "all forwarded"),
        ({"early_stop": False}, "every layer"),
    ],
)
async def test_ablation_switches_on_smoa(fields: dict[str, Any], check: str) -> None:
    agree = answers_by_index({0: 12, 1: 12, 2: 12, 3: 12})  # would stop after layer 1
    state, factory = await run("smoa", agree, max_layers=2, **fields)
    if check == "no role":
        assert len(set(proposer_prompts(factory, 1).values())) == 1
    if check == "all forwarded":
        assert [len(s) for s in (state["selected"],)] == [4] and "judge" not in calls_by_role(state)
    if check == "every layer":
        assert len(state["layers"]) == 2 and state["decisions"][0]["reason"] == "early stop is off"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"preset": "mad", "finish": "aggregate"}, "finish: the mad preset uses finish='vote'"),
        ({"preset": "self-consistency", "max_layers": 2}, "max_layers: the self-consistency"),
        ({"preset": "self-moa", "selection": "judge"}, "selection: the self-moa preset uses"),
        ({"preset": "smoa-paper", "control_temperature": 0.0}, "control_temperature: the smoa-"),
        ({"preset": "self-consistency", "k": 2}, "k: the self-consistency preset is dense"),
        ({"preset": "smoa", "finish": "vote"}, "finish: a vote counts the answers"),
        ({"preset": "debate"}, "unknown preset 'debate'; choose one of single, moa, smoa, self-"),
    ],
)
def test_a_switch_that_contradicts_its_preset_is_rejected(
    fields: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        SMoAConfig(**fields)


def test_every_preset_validates_with_its_own_defaults() -> None:
    for preset in PRESET_DEFAULTS:
        assert SMoAConfig(preset=preset).preset == preset


# -- your own proposers ------------------------------------------------------------------------


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


class ToolCaller(FakeChatModel):
    """A fake agent model: first asks for the ``add`` tool, then answers with its result."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:
        return self

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> AIMessage:
        messages: list[BaseMessage] = list(input)
        usage = {"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}
        results = [m for m in messages if isinstance(m, ToolMessage)]
        if not results:
            call = {"name": "add", "args": {"a": 7, "b": 5}, "id": "t1", "type": "tool_call"}
            return AIMessage("", tool_calls=[call], usage_metadata=usage)
        return AIMessage(
            f"The tool says {results[-1].text}. Final answer: 12", usage_metadata=usage
        )


def tool_agent() -> Any:
    """A small tool-using agent graph: model -> tools -> model."""
    model = ToolCaller()

    async def think(state: MessagesState) -> dict[str, Any]:
        return {"messages": [await model.ainvoke(state["messages"])]}

    async def act(state: MessagesState) -> dict[str, Any]:
        call = state["messages"][-1].tool_calls[0]  # type: ignore[union-attr]
        result = await add.ainvoke(call["args"])
        return {"messages": [ToolMessage(str(result), tool_call_id=call["id"])]}

    def route(state: MessagesState) -> str:
        return "act" if state["messages"][-1].tool_calls else END  # type: ignore[union-attr]

    graph = StateGraph(MessagesState)
    graph.add_node("think", think)
    graph.add_node("act", act)
    graph.add_edge(START, "think")
    graph.add_conditional_edges("think", route, ["act", END])
    graph.add_edge("act", "think")
    return graph.compile()


async def test_a_tool_using_agent_graph_is_a_proposer_beside_models() -> None:
    config = SMoAConfig(
        model="fake", n_proposers=3, k=2, max_layers=1, proposer_models=["calc", "fake", "fake"]
    )
    factory = fake_factory()
    graph = build_smoa_graph(config, model_factory=factory, agents={"calc": tool_agent()})
    state = await graph.compile().ainvoke({"prompt": "What is 7 + 5?"})
    agent = state["layers"][0]["candidates"][0]
    assert agent["ok"] and agent["model"] == "calc"
    assert agent["text"] == "The tool says 12. Final answer: 12"
    record = next(c for c in state["calls"] if c["role"] == "proposer" and c["index"] == 0)
    assert (record["input_tokens"], record["output_tokens"]) == (20, 10)  # both model turns
    assert record["ok"] and record["latency_s"] >= 0


async def test_an_agent_that_fails_is_retried_and_recorded_like_a_model() -> None:
    attempts = []

    async def flaky(messages: list[BaseMessage]) -> AIMessage:
        attempts.append(1)
        if len(attempts) < 2:
            raise ConnectionError("agent backend reset")
        return AIMessage("Final answer: 12")

    from langchain_core.runnables import RunnableLambda

    config = SMoAConfig(
        model="fake",
        n_proposers=2,
        k=1,
        max_layers=1,
        retry_backoff_s=0,
        proposer_models=["flaky", "fake"],
    )
    graph = build_smoa_graph(
        config, model_factory=fake_factory(), agents={"flaky": RunnableLambda(flaky)}
    )
    state = await graph.compile().ainvoke({"prompt": "q?"})
    records = [c for c in state["calls"] if c["role"] == "proposer" and c["index"] == 0]
    assert [r["ok"] for r in records] == [False, True] and "agent backend reset" in str(records)


# -- levers that make sparsity pay -------------------------------------------------------------


async def test_selection_by_vote_makes_no_judge_call_when_the_answers_decide() -> None:
    state, _ = await run(
        "smoa", answers_by_index({0: 5, 1: 12, 2: 12, 3: 12}), max_layers=1, selection="vote"
    )
    judge = state["layers"][0]["judge"]
    assert judge["method"] == "vote" and not judge["called"]
    assert judge["selected"] == [1, 0]  # one response for 12 (three votes), one for 5
    assert "judge" not in calls_by_role(state)


@pytest.mark.parametrize(
    ("answers", "why"),
    [({0: 5, 1: 12, 2: 7, 3: 9}, "tie at the cut"), ({0: 5, 1: 5, 2: 7, 3: 9}, "tie at the cut")],
)
async def test_a_vote_that_cannot_decide_goes_to_the_judge(answers: dict, why: str) -> None:
    state, _ = await run("smoa", answers_by_index(answers), max_layers=1, selection="vote")
    assert state["layers"][0]["judge"]["method"] == "judge", why
    assert calls_by_role(state)["judge"] == 1


async def test_sparse_activation_runs_only_the_selected_proposers_again() -> None:
    disagree = answers_by_index({0: 5, 1: 12, 2: 7, 3: 9})
    state, factory = await run("smoa", disagree, max_layers=2, activation="selected")
    selected = state["layers"][0]["judge"]["selected"]
    assert sorted(proposer_prompts(factory, 2)) == sorted(selected)  # the judge's two
    assert [len(layer["candidates"]) for layer in state["layers"]] == [4, 2]
    assert calls_by_role(state)["judge"] == 1  # layer 2 has k responses: nothing to judge


async def test_the_judge_sees_a_bounded_view_with_the_final_answer_line() -> None:
    def long(call: FakeCall) -> str:
        if call.role == "proposer":
            return "word " * 200 + f"\nFinal answer: {call.index}"
        return default_responder(call)

    _, factory = await run("smoa", long, max_layers=1, judge_view_chars=60)
    prompt = next(c.prompt for c in factory.models["fake"].calls if c.role == "judge")
    assert prompt.count("word") < 4 * 20 and prompt.count("[...]\nFinal answer:") == 4


async def test_early_stop_by_the_layers_majority() -> None:
    three_of_four = answers_by_index({0: 12, 1: 12, 2: 12, 3: 7})

    def responder(call: FakeCall) -> str:  # the judge picks the two that disagree
        if call.role == "judge":
            return '{"reasoning": "r", "chosen": [3, 4], "critique": ""}'
        return three_of_four(call)

    state, _ = await run("smoa", responder, max_layers=2, stop_share=0.75)
    assert (
        len(state["layers"]) == 1
        and "75% of the layer's answers agree on 12" in (state["decisions"][0]["reason"])
    )
    state, _ = await run("smoa", responder, max_layers=2)  # without it: the selection disagrees
    assert len(state["layers"]) == 2


async def test_no_judge_call_on_the_last_allowed_layer() -> None:
    disagree = answers_by_index({0: 5, 1: 12, 2: 7, 3: 9})
    state, _ = await run("smoa", disagree, max_layers=2, final_layer_judge=False)
    assert [layer["judge"]["method"] for layer in state["layers"]] == ["judge", "all"]
    assert calls_by_role(state)["judge"] == 1 and len(state["selected"]) == 4


async def test_an_agreed_answer_stands_without_the_aggregator() -> None:
    agree = answers_by_index({0: 12, 1: 12, 2: 12, 3: 12})
    state, _ = await run("smoa", agree, max_layers=2, finish="agreement")
    assert "aggregator" not in calls_by_role(state) and len(state["layers"]) == 1
    first = state["selected"][0]
    assert state["answer"] == first["text"] and "Final answer: 12" in state["answer"]
    assert (
        f"proposer {first['index']}'s response stands (no call)" in state["summary"]["finished_by"]
    )


async def test_a_layer_that_still_disagrees_is_aggregated() -> None:
    disagree = answers_by_index({0: 5, 1: 12, 2: 7, 3: 9})
    state, _ = await run("smoa", disagree, max_layers=2, finish="agreement")
    assert calls_by_role(state)["aggregator"] == 1 and len(state["layers"]) == 2
    assert state["summary"]["finished_by"] == "aggregator over 2 response(s)"


async def test_the_layers_majority_answer_stands_when_the_selection_disagrees() -> None:
    three_of_four = answers_by_index({0: 12, 1: 12, 2: 12, 3: 7})

    def responder(call: FakeCall) -> str:  # the judge picks proposers 2 and 3: 12 and 7
        if call.role == "judge":
            return '{"reasoning": "r", "chosen": [3, 4], "critique": ""}'
        return three_of_four(call)

    state, _ = await run("smoa", responder, max_layers=2, stop_share=0.75, finish="agreement")
    assert "aggregator" not in calls_by_role(state)
    assert state["answer"].startswith("Proposer 2 reasons.") and state["answer"].endswith("12")


@pytest.mark.parametrize(
    ("answers", "layers", "answer"),
    [
        ({0: 7, 1: 12, 2: 12, 3: 9}, 1, "12"),  # a plurality of 2 of 4 stops, and stands
        ({0: 7, 1: 7, 2: 12, 3: 12}, 2, None),  # 2 against 2: no answer leads, go on
        ({0: 5, 1: 12, 2: 7, 3: 9}, 2, None),  # all differ
    ],
)
async def test_a_plurality_of_half_the_layer_stops_only_without_a_tie(
    answers: dict[int, int], layers: int, answer: str | None
) -> None:
    state, _ = await run(
        "smoa",
        answers_by_index(answers),
        max_layers=2,
        stop_share=0.5,
        selection="vote",
        finish="agreement",
    )
    assert len(state["layers"]) == layers
    if answer is not None:
        assert state["answer"].endswith(f"Final answer: {answer}")
        assert "aggregator" not in calls_by_role(state)


async def test_the_smoa_preset_as_shipped() -> None:
    async def shipped(answers: dict[int, int]) -> dict[str, Any]:
        factory = fake_factory(responder=answers_by_index(answers))
        graph = build_smoa_graph(SMoAConfig(model="fake"), model_factory=factory).compile()
        return await graph.ainvoke({"prompt": "What is 7 + 5?"})

    state = await shipped({0: 7, 1: 12, 2: 12, 3: 9})  # a plurality: it stands after layer 1
    assert calls_by_role(state) == {"proposer": 4}  # no judge call for the 7-9 tie: it stops
    assert state["layers"][0]["judge"]["selected"] == [1, 0]  # 12 first, then 7 (given first)
    assert state["answer"] == "Proposer 1 reasons. Final answer: 12"
    state = await shipped({0: 5, 1: 12, 2: 7, 3: 9})  # all differ: the judge breaks the tie,
    assert calls_by_role(state) == {"proposer": 4 + 2, "judge": 1, "aggregator": 1}  # k go on
    assert [len(layer["candidates"]) for layer in state["layers"]] == [4, 2]
    assert state["summary"]["finished_by"] == "aggregator over 2 response(s)"


@pytest.mark.parametrize(
    ("second", "stands"),
    [
        ({0: 12, 2: 9}, "Layer 2, proposer 0. Final answer: 12"),  # 12 by 3 of 6 answers
        ({0: 7, 2: 12}, None),  # 7 and 12 by 3 each: the aggregator synthesises
    ],
)
async def test_the_runs_plurality_stands_over_every_layers_answers(
    second: dict[int, int], stands: str | None
) -> None:
    first = {0: 7, 1: 7, 2: 12, 3: 12}  # 2 against 2: layer 1 does not stop

    def responder(call: FakeCall) -> str:
        if call.role == "proposer" and call.index is not None:
            answer = (first if call.layer == 1 else second)[call.index]
            return f"Layer {call.layer}, proposer {call.index}. Final answer: {answer}"
        return default_responder(call)

    factory = fake_factory(responder=responder)
    config = SMoAConfig(model="fake", finish="plurality")  # the shipped smoa otherwise
    state = await build_smoa_graph(config, model_factory=factory).compile().ainvoke({"prompt": "q"})
    assert [len(layer["candidates"]) for layer in state["layers"]] == [4, 2]
    if stands is None:
        assert calls_by_role(state) == {"proposer": 6, "aggregator": 1}
        assert state["summary"]["finished_by"] == "aggregator over 2 response(s)"
    else:
        assert calls_by_role(state) == {"proposer": 6} and state["answer"] == stands
        assert state["summary"]["finished_by"].startswith("plurality: 3 of the run's 6 answers")


async def test_a_first_layer_plurality_stands_under_the_runs_plurality_with_no_judge() -> None:
    factory = fake_factory(responder=answers_by_index({0: 7, 1: 12, 2: 12, 3: 9}))
    config = SMoAConfig(model="fake", finish="plurality")
    state = await build_smoa_graph(config, model_factory=factory).compile().ainvoke({"prompt": "q"})
    assert calls_by_role(state) == {"proposer": 4}  # no judge call for the 7-9 tie: it stops
    assert state["answer"] == "Proposer 1 reasons. Final answer: 12"
