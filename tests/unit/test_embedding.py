"""Embedding the SMoA graph in a LangChain / LangGraph app, offline with fake models.

Each test mirrors a snippet of ``docs/embedding.md``: the compiled graph as a node of a parent
graph and called from inside a node, as a Runnable in an LCEL chain, as an agent tool, async
batches, a user-supplied checkpointer (in memory and SQLite), multi-turn chat, and tracing that
is switched by the environment only.
"""

from __future__ import annotations

import operator
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Annotated, Any

import pytest
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableConfig, RunnableLambda
from langchain_core.tools import tool
from langchain_core.tracers import LangChainTracer
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import START, StateGraph
from langgraph.graph.message import add_messages
from typing_extensions import TypedDict

from smoa_graph import build_smoa_graph
from smoa_graph.testing import every_role, fake_factory

CONFIG = every_role(model="fake", n_proposers=3, k=2, max_layers=2)
ANSWER = "Final answer: 42"
ROOT = Path(__file__).resolve().parents[2]


def make_smoa(checkpointer: Any = None, **fake: Any) -> tuple[Any, Any]:
    """A compiled SMoA graph on fake models, and the factory (to inspect the calls seen)."""
    factory = fake_factory(**fake)
    graph = build_smoa_graph(CONFIG, model_factory=factory).compile(
        checkpointer=checkpointer, name="smoa"
    )
    return graph, factory


def proposer_prompts(factory: Any) -> list[str]:
    return [c.prompt for c in factory.models["fake"].calls if c.role == "proposer"]


# -- inside a LangGraph app --------------------------------------------------------------------


class ChatState(TypedDict):
    """A user's app state: a chat, shared with SMoA's ``messages`` key."""

    messages: Annotated[list[AnyMessage], add_messages]


async def test_compiled_graph_as_a_node_of_a_parent_graph() -> None:
    smoa, _ = make_smoa()
    app = StateGraph(ChatState)
    app.add_node("smoa", smoa)  # the compiled graph is the node: it reads and writes `messages`
    app.add_edge(START, "smoa")
    result = await app.compile().ainvoke({"messages": [HumanMessage("What is 6 * 7?")]})
    human, reply = result["messages"]
    assert human.text == "What is 6 * 7?"
    assert isinstance(reply, AIMessage) and ANSWER in reply.text


class QAState(TypedDict, total=False):
    question: str
    answer: str
    layers_run: int
    log: Annotated[list[str], operator.add]


async def test_compiled_graph_called_from_inside_a_node() -> None:
    smoa, _ = make_smoa()

    async def ask_smoa(state: QAState) -> QAState:
        result = await smoa.ainvoke({"prompt": state["question"]})
        return {"answer": result["answer"], "layers_run": result["summary"]["layers_run"]}

    async def log(state: QAState) -> QAState:
        return {"log": [f"answered in {state['layers_run']} layer(s)"]}

    app = StateGraph(QAState)
    app.add_node("ask_smoa", ask_smoa)
    app.add_node("log", log)
    app.add_edge(START, "ask_smoa")
    app.add_edge("ask_smoa", "log")
    result = await app.compile().ainvoke({"question": "What is 6 * 7?"})
    assert ANSWER in result["answer"]
    assert result["log"] == ["answered in 1 layer(s)"]


async def test_subgraph_node_streams_with_its_namespace() -> None:
    smoa, _ = make_smoa()
    app = StateGraph(ChatState)
    app.add_node("smoa", smoa)
    app.add_edge(START, "smoa")
    namespaces = {
        ns[0].split(":")[0] if ns else ""
        async for ns, _ in app.compile().astream(
            {"messages": [HumanMessage("hi")]}, stream_mode="updates", subgraphs=True
        )
    }
    assert {"", "smoa"} <= namespaces  # the parent and SMoA's own nodes both report


# -- LangChain Runnable, tool, async ------------------------------------------------------------


async def test_graph_in_an_lcel_chain() -> None:
    smoa, _ = make_smoa()
    chain = RunnableLambda(lambda q: {"prompt": q}) | smoa | RunnableLambda(lambda s: s["answer"])
    assert ANSWER in await chain.ainvoke("What is 6 * 7?")
    answers = await chain.abatch(["one?", "two?"])
    assert len(answers) == 2 and all(ANSWER in a for a in answers)


def test_sync_invoke_stream_and_batch() -> None:
    """Sync code calls the graph directly (its async nodes run on a background event loop)."""
    smoa, _ = make_smoa()
    assert ANSWER in smoa.invoke({"prompt": "What is 6 * 7?"})["answer"]
    final = [
        token.text
        for token, metadata in smoa.stream({"prompt": "7 * 6?"}, stream_mode="messages")
        if "smoa:final" in metadata.get("tags", [])
    ]
    assert len(final) > 1 and "".join(final).endswith(ANSWER)
    states = smoa.batch([{"prompt": "one?"}, {"prompt": "two?"}])
    assert len(states) == 2 and all(ANSWER in s["answer"] for s in states)


def test_sync_runs_started_together_share_one_background_loop() -> None:
    """A fresh process whose first sync use is a parallel ``batch`` starts one loop thread."""
    script = textwrap.dedent(
        """
        import threading
        from smoa_graph import SMoAConfig, build_smoa_graph
        from smoa_graph.testing import fake_factory

        config = SMoAConfig(model="fake", n_proposers=3, k=2, max_layers=1)
        graph = build_smoa_graph(config, model_factory=fake_factory()).compile()
        graph.batch([{"prompt": f"q{i}?"} for i in range(8)])
        print(sum(t.name == "smoa-sync-nodes" for t in threading.enumerate()))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.strip() == "1"


async def test_tool_wrapper_for_an_agent() -> None:
    smoa, _ = make_smoa()

    @tool
    async def ask_experts(prompt: str) -> str:
        """Answer a hard question with a sparse mixture of agents."""
        result = await smoa.ainvoke({"prompt": prompt})
        return result["answer"]

    assert list(ask_experts.args) == ["prompt"]
    assert ANSWER in await ask_experts.ainvoke({"prompt": "What is 6 * 7?"})
    call = {"type": "tool_call", "id": "call-1", "name": "ask_experts", "args": {"prompt": "q?"}}
    message = await ask_experts.ainvoke(call)  # what an agent's tool node does
    assert isinstance(message, ToolMessage) and ANSWER in message.text
    assert message.tool_call_id == "call-1"


async def test_as_tool_with_prompt_only_arguments() -> None:
    """Plain ``as_tool()`` would require both input keys; ``arg_types`` narrows it to prompt."""
    smoa, _ = make_smoa()
    with pytest.warns(Warning):  # as_tool is a LangChain beta API
        ask = (smoa | RunnableLambda(lambda s: s["answer"])).as_tool(
            name="ask_experts",
            description="Answer a hard question with a sparse mixture of agents.",
            arg_types={"prompt": str},
        )
    assert ask.args == {"prompt": {"title": "Prompt", "type": "string"}}
    assert ANSWER in await ask.ainvoke({"prompt": "What is 6 * 7?"})


async def test_ainvoke_and_abatch() -> None:
    smoa, factory = make_smoa()
    single = await smoa.ainvoke({"prompt": "What is 6 * 7?"})
    assert ANSWER in single["answer"]
    prompts = ["What is 6 * 7?", "What is 40 + 2?", "What is 84 / 2?"]
    results = await smoa.abatch([{"prompt": p} for p in prompts])
    assert [r["question"] for r in results] == prompts
    assert all(ANSWER in r["answer"] for r in results)
    asked = {p.split("\n")[-1] for p in proposer_prompts(factory)}  # the request comes last
    assert set(prompts) <= asked


# -- checkpointers and multi-turn --------------------------------------------------------------


async def test_in_memory_checkpointer_keeps_state_per_thread() -> None:
    smoa, _ = make_smoa(checkpointer=InMemorySaver())
    first = {"configurable": {"thread_id": "user-1"}}
    other = {"configurable": {"thread_id": "user-2"}}
    await smoa.ainvoke({"prompt": "What is 6 * 7?"}, first)
    await smoa.ainvoke({"prompt": "Name a prime."}, other)
    state = (await smoa.aget_state(first)).values
    assert state["question"] == "What is 6 * 7?" and ANSWER in state["answer"]
    assert state["layers"] and state["decisions"] and state["summary"]["total"]["calls"] > 0
    assert (await smoa.aget_state(other)).values["question"] == "Name a prime."
    history = [s async for s in smoa.aget_state_history(first)]
    assert len(history) > 3  # one checkpoint per step: inspect or resume any of them


async def test_async_sqlite_checkpointer_persists_across_connections(tmp_path: Path) -> None:
    path = str(tmp_path / "checkpoints.sqlite")
    thread = {"configurable": {"thread_id": "t-1"}}
    async with AsyncSqliteSaver.from_conn_string(path) as saver:
        smoa, _ = make_smoa(checkpointer=saver)
        await smoa.ainvoke({"prompt": "What is 6 * 7?"}, thread)
    async with AsyncSqliteSaver.from_conn_string(path) as saver:  # a new process would do this
        smoa, _ = make_smoa(checkpointer=saver)
        state = (await smoa.aget_state(thread)).values
    assert state["question"] == "What is 6 * 7?" and ANSWER in state["answer"]
    assert isinstance(state["messages"][-1], AIMessage)


async def test_messages_input_returns_an_ai_message_and_uses_the_history() -> None:
    smoa, factory = make_smoa()
    chat = [
        HumanMessage("My name is Ada."),
        AIMessage("Nice to meet you, Ada."),
        HumanMessage("What is my name?"),
    ]
    result = await smoa.ainvoke({"messages": chat})
    assert result["question"] == "What is my name?"
    assert isinstance(result["messages"][-1], AIMessage)
    assert [m.text for m in result["messages"][:3]] == [m.text for m in chat]
    assert all("My name is Ada." in p for p in proposer_prompts(factory))


async def test_multi_turn_on_a_thread() -> None:
    smoa, factory = make_smoa(checkpointer=InMemorySaver())
    thread = {"configurable": {"thread_id": "chat"}}
    await smoa.ainvoke({"prompt": "My name is Ada."}, thread)
    second = await smoa.ainvoke({"prompt": "What is my name?"}, thread)
    assert [m.type for m in second["messages"]] == ["human", "ai", "human", "ai"]
    assert second["question"] == "What is my name?"
    assert len(second["layers"]) == 1  # the trace is the second run's only
    last = proposer_prompts(factory)[-1]
    assert "My name is Ada." in last and "What is my name?" in last


async def test_per_run_context_overrides_the_build_config() -> None:
    smoa, factory = make_smoa()
    result = await smoa.ainvoke(
        {"prompt": "hi"}, context=every_role(model="fake", n_proposers=2, k=1, max_layers=1)
    )
    assert len(result["layers"][0]["candidates"]) == 2
    assert len(proposer_prompts(factory)) == 2


# -- tracing is switched by the environment only -----------------------------------------------


async def test_no_tracer_when_tracing_is_off() -> None:
    assert os.environ.get("LANGSMITH_TRACING") == "false"  # tests/conftest.py
    smoa, _ = make_smoa()
    seen: list[Any] = []

    def probe(state: dict[str, Any], config: RunnableConfig) -> str:
        callbacks = config.get("callbacks")
        seen.extend(getattr(callbacks, "handlers", None) or [])
        return state["answer"]

    chain = RunnableLambda(lambda q: {"prompt": q}) | smoa | RunnableLambda(probe)
    assert ANSWER in await chain.ainvoke("hi")
    assert not [h for h in seen if isinstance(h, LangChainTracer)]


def test_nothing_is_traced_when_tracing_is_left_unset() -> None:
    """Tracing left unset: a script that runs the demo graph has no tracer and no LangSmith thread
    (with ``LANGSMITH_TRACING=true`` and no key, that thread delays the exit by ~13 s)."""
    script = textwrap.dedent(
        """
        import asyncio
        import threading
        from langchain_core.runnables import RunnableLambda
        from langchain_core.tracers import LangChainTracer
        from smoa_graph.graph import demo_graph

        handlers = []
        def probe(state, config):
            handlers.extend(getattr(config.get("callbacks"), "handlers", None) or [])
            return state["answer"]

        chain = demo_graph | RunnableLambda(probe)
        answer = asyncio.run(chain.ainvoke({"prompt": "What is 6 * 7?"}))
        print(answer)
        print("tracers:", sum(isinstance(h, LangChainTracer) for h in handlers))
        targets = [getattr(t, "_target", None) for t in threading.enumerate()]
        modules = [getattr(target, "__module__", None) or "" for target in targets]
        print("langsmith threads:", sum(m.startswith("langsmith") for m in modules))
        """
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("LANGSMITH_", "LANGCHAIN_")) and k != "PYTEST_CURRENT_TEST"
    }
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert ANSWER in done.stdout
    assert "tracers: 0" in done.stdout and "langsmith threads: 0" in done.stdout, done.stdout


def test_docs_snippets_run(tmp_path: Path) -> None:
    """docs/embedding.md's Python blocks, run in order as one script (offline, fake model)."""
    text = (ROOT / "docs" / "embedding.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```$", text, re.M | re.S)
    assert len(blocks) >= 10
    script = tmp_path / "snippets.py"
    script.write_text("\n\n".join(blocks), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,  # the SQLite snippet writes checkpoints.sqlite here
        env={**os.environ, "LANGSMITH_TRACING": "false"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(ANSWER) >= 10, done.stdout
    assert "['human', 'ai', 'human', 'ai']" in done.stdout
    assert "AIMessage" in done.stdout and "2 proposers" in done.stdout
