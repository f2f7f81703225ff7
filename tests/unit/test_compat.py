"""Contract of the LangGraph internals in ``smoa_graph/_compat.py``.

These fail loudly when a LangGraph upgrade inside the pinned range changes what smoa_graph relies
on: the name of an error-handler node in streams and drawings, and a node with a sync and an
async body that both get ``runtime`` injected.
"""

from __future__ import annotations

from typing import Any

from langgraph.errors import NodeError
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command
from typing_extensions import TypedDict

from smoa_graph._compat import dual_node, error_handler_name


class State(TypedDict, total=False):
    seen: list[str]


class Context(TypedDict, total=False):
    tag: str


def sync_body(state: State, runtime: Runtime[Any]) -> State:
    return {"seen": [f"sync:{runtime.context['tag']}"]}


async def async_body(state: State, runtime: Runtime[Any]) -> State:
    return {"seen": [f"async:{runtime.context['tag']}"]}


def test_a_dual_node_runs_its_sync_body_in_sync_runs_and_async_in_async() -> None:
    builder = StateGraph(State, context_schema=Context)
    builder.add_node("both", dual_node(sync_body, async_body, "both"))
    builder.add_edge(START, "both")
    builder.add_edge("both", END)
    graph = builder.compile()
    assert graph.invoke({}, context={"tag": "t"})["seen"] == ["sync:t"]


async def test_a_dual_node_gets_runtime_in_async_runs() -> None:
    builder = StateGraph(State, context_schema=Context)
    builder.add_node("both", dual_node(sync_body, async_body, "both"))
    builder.add_edge(START, "both")
    builder.add_edge("both", END)
    assert (await builder.compile().ainvoke({}, context={"tag": "t"}))["seen"] == ["async:t"]


async def test_error_handler_nodes_have_the_name_smoa_graph_expects() -> None:
    def failing(state: State) -> State:
        raise ValueError("boom")

    def handler(state: State, error: NodeError) -> Command[Any]:
        return Command(update={"seen": [f"handled {error.node}"]}, goto=END)

    builder = StateGraph(State)
    builder.add_node("work", failing, error_handler=handler)
    builder.add_edge(START, "work")
    graph = builder.compile()
    assert error_handler_name("work") in graph.get_graph().nodes
    updates = [u async for u in graph.astream({}, stream_mode="updates")]
    assert {error_handler_name("work"): {"seen": ["handled work"]}} in updates
