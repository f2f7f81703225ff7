"""Build the SMoA graph: prepare -> layer -> moderator -(continue)-> layer ... -(stop)-> aggregator.

Each layer is a compiled subgraph: ``Send`` fans out to n parallel proposers; the judge, their
fan-in, ends the run if none succeeded, else selects k of the survivors. Each role's node lives
in ``smoa_graph/nodes/``; this module only wires them.
``build_smoa_graph`` returns an uncompiled ``StateGraph`` so callers choose checkpointer, store and
cache; ``graph`` is compiled without a checkpointer for ``langgraph.json`` (Studio, server).

Nodes are coroutines. Async runs (``ainvoke``, ``astream``) await them on the caller's loop; sync
runs (``invoke``, ``stream``, e.g. with the sync ``SqliteSaver``) hand each one to a single
background event loop (``sync_loop``), so both kinds of run share the same node code. Model calls
retry transient errors inside the nodes (``attempts``); a proposer, judge or moderator that fails
for good goes to its error handler.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Mapping
from dataclasses import replace
from functools import partial
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph

from smoa_graph._compat import dual_node, error_handler_name
from smoa_graph.agents import with_agents
from smoa_graph.config import SMoAConfig, SMoAContext
from smoa_graph.models import ModelFactory, ModelRequest, default_model_factory
from smoa_graph.nodes import aggregator, judge, moderator, prepare, proposer
from smoa_graph.nodes.kit import NodeKit
from smoa_graph.state import LayerInput, LayerOutput, LayerState, SMoAInput, SMoAState
from smoa_graph.sync_loop import blocking


def _node(function: Callable[..., Coroutine[Any, Any, Any]], name: str) -> Runnable[Any, Any]:
    """An async node or routing function that sync runs can execute too."""
    return dual_node(blocking(function), function, name)


def build_layer_graph(
    kit: NodeKit,
) -> CompiledStateGraph[LayerState, Any, LayerInput, LayerOutput]:
    """One layer: parallel proposers (Send), their fan-in, the judge; narrow in/out schemas."""
    layer = StateGraph(
        LayerState, context_schema=SMoAContext, input_schema=LayerInput, output_schema=LayerOutput
    )
    layer.add_node(
        "propose",
        _node(partial(proposer.propose, kit), "propose"),
        error_handler=partial(proposer.proposer_failed, kit),
    )
    layer.add_node(
        "judge",
        _node(partial(judge.judge, kit), "judge"),
        error_handler=partial(judge.judge_failed, kit),
    )
    layer.add_conditional_edges(
        START, _node(partial(proposer.fan_out, kit), "fan_out"), ["propose"]
    )
    layer.add_edge("propose", "judge")
    layer.add_edge("judge", END)
    return layer.compile(name="smoa_layer")


def build_smoa_graph(
    config: SMoAConfig | None = None,
    *,
    model_factory: ModelFactory | None = None,
    agents: Mapping[str, Runnable[Any, Any]] | None = None,
) -> StateGraph[SMoAState, Any, SMoAInput, SMoAState]:
    """The SMoA workflow, uncompiled.

    Args:
        config: the configuration of runs that pass no ``context``; a run's ``context`` (a dict,
            ``SMoAContext`` or ``SMoAConfig``) lays the fields it sets over it
            (``SMoAConfig.with_context``).
        model_factory: builds a chat model from a ``ModelRequest`` (tests inject fakes); default:
            ``default_model_factory`` (model specs such as ``"local"``, ``"openai:gpt-4o-mini"``).
        agents: your own proposers by name: LangChain Runnables or compiled LangGraph graphs
            that take messages and return a message; name them in ``proposer_models`` beside
            model specs (``smoa_graph.agents``).

    Returns:
        A ``StateGraph`` to compile with the checkpointer, store and cache of your choice.
    """
    factory = with_agents(model_factory or default_model_factory, agents or {})
    kit = NodeKit(config or SMoAConfig(), factory)
    builder = StateGraph(SMoAState, context_schema=SMoAContext, input_schema=SMoAInput)
    builder.add_node("prepare", _node(partial(prepare.prepare, kit), "prepare"))
    builder.add_node("layer", build_layer_graph(kit))
    builder.add_node(
        "moderator",
        _node(partial(moderator.moderate, kit), "moderator"),
        error_handler=partial(moderator.moderator_failed, kit),
    )
    builder.add_node("aggregator", _node(partial(aggregator.aggregate, kit), "aggregator"))
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "layer")
    builder.add_edge("layer", "moderator")
    builder.add_conditional_edges(
        "moderator",
        _node(moderator.route_after_moderator, "route_after_moderator"),
        ["layer", "aggregator"],
    )
    builder.add_edge("aggregator", END)
    return builder


graph = build_smoa_graph().compile(name="smoa")


def _fake_only(request: ModelRequest) -> BaseChatModel:
    """Every role gets the canned ``fake`` model, whatever the run's context names."""
    return default_model_factory(replace(request, spec="fake"))


demo_graph = build_smoa_graph(SMoAConfig(model="fake"), model_factory=_fake_only).compile(
    name="smoa_demo"
)
"""The same graph on the canned ``fake`` model: runs anywhere, for Studio and docs."""


_HANDLER_TARGETS = {"propose": "judge", "judge": END, "moderator": "layer"}
"""Where each node's error handler leads: the judge (fan-in), the layer's end, the next layer."""


def draw_mermaid(compiled: CompiledStateGraph[Any, Any, Any, Any] = graph) -> str:
    """Mermaid diagram with the layer subgraph expanded.

    LangGraph draws no edges for error-handler nodes (and ``xray`` then skips the subgraph), so
    each handler's edges (node -error-> handler -> where the handler goes) are added first.
    """
    top = compiled.get_graph()
    layer = dict(compiled.get_subgraphs())["layer"].get_graph()
    for drawn in (top, layer):
        for name, target in _HANDLER_TARGETS.items():
            handler = drawn.nodes.get(error_handler_name(name))
            if handler is not None:
                drawn.add_edge(drawn.nodes[name], handler, "error", conditional=True)
                drawn.add_edge(handler, drawn.nodes[target], conditional=True)
    layer.trim_first_node()
    layer.trim_last_node()
    top.nodes.pop("layer")
    first, last = top.extend(layer, prefix="layer")
    assert first is not None and last is not None
    top.edges = [
        edge.copy(
            source=last.id if edge.source == "layer" else edge.source,
            target=first.id if edge.target == "layer" else edge.target,
        )
        for edge in top.edges
    ]
    return top.draw_mermaid()
