"""``SMoAChatModel``: SMoA as a LangChain chat model, in chains and in a LangGraph app."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import START, MessagesState, StateGraph
from pydantic import ValidationError

from smoa_graph import InvalidInputError, SMoAChatModel, SMoAConfig, build_smoa_graph
from smoa_graph.testing import EVERY_ROLE, FakeCall, default_responder, every_role, fake_factory

FINAL = "The mixture says: 42"


def responder(call: FakeCall) -> str:
    """Proposers, judge and moderator as usual; the aggregator's words are recognisable."""
    return FINAL if call.role == "aggregator" else default_responder(call)


def chat_model(**fields: Any) -> tuple[SMoAChatModel, Any]:
    factory = fake_factory(responder=responder)
    base = {} if "preset" in fields else EVERY_ROLE  # smoa with the aggregator at the end
    return SMoAChatModel(model="fake", model_factory=factory, **{**base, **fields}), factory


def calls(factory: Any) -> list[FakeCall]:
    return [c for m in factory.models.values() for c in m.calls]


def direct_run(config: SMoAConfig, messages: list[BaseMessage]) -> dict[str, Any]:
    graph = build_smoa_graph(config, model_factory=fake_factory(responder=responder)).compile()
    return asyncio.run(graph.ainvoke({"messages": messages}))


def counts(summary: dict[str, Any]) -> dict[str, Any]:
    """Calls and tokens by role and in total (model latencies differ from run to run)."""
    buckets = {"total": summary["total"], **summary["by_role"]}
    return {name: {k: v for k, v in b.items() if k != "latency_s"} for name, b in buckets.items()}


def test_fields_are_keyword_arguments() -> None:
    llm = SMoAChatModel(model="fake", n_proposers=3, k=1)
    assert llm.config == SMoAConfig(model="fake", n_proposers=3, k=1)
    assert SMoAChatModel(config=llm.config).config == llm.config
    with pytest.raises(ValidationError, match="k=5 is larger than n_proposers=3"):
        SMoAChatModel(model="fake", n_proposers=3, k=5)
    with pytest.raises(ValidationError, match="either config= or config fields"):
        SMoAChatModel(config=llm.config, k=2)


def test_invoke_answers_with_usage_and_trace_summary() -> None:
    llm, factory = chat_model(n_proposers=3)
    reply = llm.invoke("What is 6 * 7?")
    assert isinstance(reply, AIMessage) and reply.text == FINAL
    summary = direct_run(every_role(model="fake", n_proposers=3), [HumanMessage("What is 6 * 7?")])[
        "summary"
    ]
    assert counts(reply.response_metadata["smoa"]) == counts(summary)
    assert reply.response_metadata["smoa"]["layers_run"] == summary["layers_run"] == 1
    assert reply.usage_metadata == {
        "input_tokens": summary["total"]["input_tokens"],
        "output_tokens": summary["total"]["output_tokens"],
        "total_tokens": summary["total"]["total_tokens"],
    }
    assert reply.usage_metadata["total_tokens"] > 0
    assert reply.response_metadata["model_name"] == "smoa-smoa"
    assert {c.role for c in calls(factory)} == {"proposer", "judge", "aggregator"}


async def test_ainvoke_and_astream() -> None:
    llm, _ = chat_model()
    reply = await llm.ainvoke([HumanMessage("What is 6 * 7?")])
    assert reply.text == FINAL
    chunks = [chunk async for chunk in llm.astream("What is 6 * 7?")]
    assert all(isinstance(c, AIMessageChunk) for c in chunks)
    assert [c.text for c in chunks if c.text] == ["The ", "mixture ", "says: ", "42"]
    merged = sum(chunks[1:], chunks[0])
    assert merged.text == FINAL  # only the final answer's tokens: no proposer's or judge's
    assert merged.usage_metadata == reply.usage_metadata
    assert [r.text for r in await llm.abatch(["one?", "two?"])] == [FINAL] * 2
    assert counts(merged.response_metadata["smoa"]) == counts(reply.response_metadata["smoa"])


def test_sync_stream_and_batch() -> None:
    llm, factory = chat_model()
    chunks = list(llm.stream("What is 6 * 7?"))
    assert "".join(c.text for c in chunks) == FINAL
    assert chunks[-1].usage_metadata is not None and chunks[-1].usage_metadata["total_tokens"] > 0
    replies = llm.batch(["one?", "two?", "three?"])
    assert [r.text for r in replies] == [FINAL] * 3
    asked = {c.prompt for c in calls(factory) if c.role == "proposer"}
    assert all(any(q in p for p in asked) for q in ("one?", "two?", "three?"))


def test_in_an_lcel_chain() -> None:
    llm, factory = chat_model(preset="moa", n_proposers=2, k=2, max_layers=1)
    prompt = ChatPromptTemplate.from_messages(
        [("system", "Answer in one line."), ("human", "What is {a} * {b}?")]
    )
    chain = prompt | llm | StrOutputParser()
    assert chain.invoke({"a": 6, "b": 7}) == FINAL
    assert "".join(chain.stream({"a": 6, "b": 7})) == FINAL
    proposer = next(c for c in calls(factory) if c.role == "proposer")
    assert "System: Answer in one line." in proposer.prompt and "What is 6 * 7?" in proposer.prompt


async def test_as_the_model_of_a_langgraph_app() -> None:
    llm, factory = chat_model(n_proposers=3)

    async def chat(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [await llm.ainvoke(state["messages"])]}

    builder = StateGraph(MessagesState)
    builder.add_node("chat", chat)
    builder.add_edge(START, "chat")
    app = builder.compile(checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "t1"}}
    first = await app.ainvoke({"messages": [HumanMessage("What is 6 * 7?")]}, thread)
    assert first["messages"][-1].text == FINAL
    tokens = [
        message.text
        async for message, _ in app.astream(
            {"messages": [HumanMessage("And 6 * 8?")]}, thread, stream_mode="messages"
        )
        if message.text
    ]
    assert "".join(tokens) == FINAL  # the app streams the answer once, and no proposer's tokens
    state = await app.aget_state(thread)
    assert [m.type for m in state.values["messages"]] == ["human", "ai", "human", "ai"]
    second = [c for c in calls(factory) if c.role == "proposer"][-1]
    assert f"Assistant: {FINAL}" in second.prompt and "And 6 * 8?" in second.prompt
    usage = state.values["messages"][-1].usage_metadata
    assert usage is not None and usage["total_tokens"] > 0


def test_bad_messages_fail_before_any_model_call() -> None:
    llm, factory = chat_model()
    with pytest.raises(InvalidInputError, match="ending with the user's message"):
        llm.invoke([HumanMessage("q"), AIMessage("a")])
    assert calls(factory) == []


def test_tools_are_refused_with_what_to_do_instead() -> None:
    @tool
    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    llm, _ = chat_model()
    with pytest.raises(
        NotImplementedError, match=r"does not support tools.*As a tool for an agent"
    ):
        llm.bind_tools([add])
    with pytest.raises(NotImplementedError, match="ask for the format in the prompt"):
        llm.with_structured_output({"type": "object"})
    with pytest.raises(ValueError, match="stop sequences"):
        llm.invoke("q", stop=["\n"])


async def test_a_voting_preset_streams_its_answer() -> None:
    model, _ = chat_model(preset="self-consistency")
    pieces = [chunk.text async for chunk in model.astream("What is 6 * 7?")]
    assert "".join(pieces).endswith("Final answer: 42")
    assert "".join(chunk.text for chunk in model.stream("What is 6 * 7?")) == "".join(pieces)
