"""Build the SMoA graph: prepare -> layer -> moderator -(continue)-> layer ... -(stop)-> aggregator.

Each layer is a compiled subgraph: ``Send`` fans out to n parallel proposers, then the judge.
``build_smoa_graph`` returns an uncompiled ``StateGraph`` so callers choose checkpointer, store and
cache; ``graph`` is compiled without a checkpointer for ``langgraph.json`` (Studio, server).
"""

from __future__ import annotations

from typing import Any

from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import RetryPolicy

from smoa_graph.config import SMoAConfig
from smoa_graph.models import ModelFactory, default_model_factory
from smoa_graph.nodes import SMoANodes, route_after_moderator
from smoa_graph.state import LayerInput, LayerOutput, LayerState, SMoAInput, SMoAState


def _retry_policy(config: SMoAConfig) -> RetryPolicy:
    """Retry transient errors (connection, 5xx, timeouts) with exponential backoff."""
    return RetryPolicy(max_attempts=config.max_attempts, initial_interval=0.5, backoff_factor=2.0)


def build_layer_graph(
    nodes: SMoANodes,
) -> CompiledStateGraph[LayerState, SMoAConfig, LayerInput, LayerOutput]:
    """One layer: parallel proposers (Send) then the judge; narrow input/output schemas."""
    config = nodes.default_config
    layer = StateGraph(
        LayerState, context_schema=SMoAConfig, input_schema=LayerInput, output_schema=LayerOutput
    )
    layer.add_node(  # type: ignore[call-overload]  # Send payload, not the layer state
        "propose",
        nodes.propose,
        retry_policy=_retry_policy(config),
        timeout=config.proposer_timeout_s,
        error_handler=nodes.proposer_failed,
    )
    layer.add_node("judge", nodes.judge, retry_policy=_retry_policy(config))
    layer.add_conditional_edges(START, nodes.fan_out, ["propose"])
    layer.add_edge("propose", "judge")
    layer.add_edge("judge", END)
    return layer.compile(name="smoa_layer")


def build_smoa_graph(
    config: SMoAConfig | None = None, *, model_factory: ModelFactory | None = None
) -> StateGraph[SMoAState, SMoAConfig, SMoAInput, SMoAState]:
    """The SMoA workflow, uncompiled.

    ``config`` is the default for runs that pass no ``context`` (its timeout and retry settings
    are fixed here); ``model_factory`` builds chat models from specs (tests inject fakes).
    """
    config = config or SMoAConfig()
    nodes = SMoANodes(config, model_factory or default_model_factory)
    builder = StateGraph(SMoAState, context_schema=SMoAConfig, input_schema=SMoAInput)
    builder.add_node("prepare", nodes.prepare)
    builder.add_node("layer", build_layer_graph(nodes))
    builder.add_node("moderator", nodes.moderate, retry_policy=_retry_policy(config))
    builder.add_node("aggregator", nodes.aggregate, retry_policy=_retry_policy(config))
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "layer")
    builder.add_edge("layer", "moderator")
    builder.add_conditional_edges("moderator", route_after_moderator, ["layer", "aggregator"])
    builder.add_edge("aggregator", END)
    return builder


graph = build_smoa_graph().compile(name="smoa")
demo_graph = build_smoa_graph(SMoAConfig(model="fake")).compile(name="smoa_demo")
"""The same graph on the canned ``fake`` model: runs anywhere, for Studio and docs."""


def draw_mermaid(compiled: CompiledStateGraph[Any, Any, Any, Any] = graph) -> str:
    """Mermaid diagram with the layer subgraph expanded.

    LangGraph's ``xray`` skips a subgraph whose error-handler node has no drawn edge, so the
    handler's edges (failed proposer -> handler -> judge) are added before the layer is spliced in.
    """
    top = compiled.get_graph()
    layer = dict(compiled.get_subgraphs())["layer"].get_graph()
    handler = layer.nodes["__error_handler__propose"]
    layer.add_edge(layer.nodes["propose"], handler, "error", conditional=True)
    layer.add_edge(handler, layer.nodes["judge"], conditional=True)
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
