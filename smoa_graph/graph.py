"""Build the SMoA graph: prepare -> layer -> moderator -(continue)-> layer ... -(stop)-> aggregator.

Each layer is a compiled subgraph: ``Send`` fans out to n parallel proposers; the judge, their
fan-in, ends the run if none succeeded, else selects k of the survivors.
``build_smoa_graph`` returns an uncompiled ``StateGraph`` so callers choose checkpointer, store and
cache; ``graph`` is compiled without a checkpointer for ``langgraph.json`` (Studio, server).

Nodes are coroutines. Async runs (``ainvoke``, ``astream``) await them on the caller's loop; sync
runs (``invoke``, ``stream``, e.g. with the sync ``SqliteSaver``) hand each one to a single
background event loop, so both kinds of run share the same node code.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import Runnable, RunnableConfig
from langgraph._internal._runnable import RunnableCallable
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import RetryPolicy, StateSnapshot

from smoa_graph.config import SMoAConfig
from smoa_graph.models import ModelFactory, ModelRequest, default_model_factory, is_transient
from smoa_graph.nodes import SMoANodes, route_after_moderator
from smoa_graph.state import LayerInput, LayerOutput, LayerState, SMoAInput, SMoAState

T = TypeVar("T")


_sync_loop: asyncio.AbstractEventLoop | None = None
_sync_loop_lock = threading.Lock()


def _background_loop() -> asyncio.AbstractEventLoop:
    """The event loop (on a daemon thread) that runs the nodes of sync runs.

    Created once under a lock: the first sync runs may start together (``batch`` runs its
    inputs in parallel threads), and all of them must share one loop.
    """
    global _sync_loop
    with _sync_loop_lock:
        if _sync_loop is None:
            _sync_loop = asyncio.new_event_loop()
            threading.Thread(
                target=_sync_loop.run_forever, name="smoa-sync-nodes", daemon=True
            ).start()
        return _sync_loop


def _run_blocking(node: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """``node`` as a blocking function: its coroutine runs on the background loop.

    The coroutine gets the calling thread's context (LangGraph's config, callbacks, runtime),
    which ``run_coroutine_threadsafe`` copies; one long-lived loop keeps the async HTTP clients
    of the models usable from one run to the next.
    """

    @functools.wraps(node)
    def run(*args: Any, **kwargs: Any) -> T:
        future = asyncio.run_coroutine_threadsafe(node(*args, **kwargs), _background_loop())
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    return run


def _node(function: Callable[..., Coroutine[Any, Any, Any]]) -> Runnable[Any, Any]:
    """An async node or routing function that sync runs can execute too.

    ``RunnableCallable`` is LangGraph's own node wrapper with a sync and an async body (its
    prebuilt ``ToolNode`` is one); it injects ``runtime`` and the like into either body.
    """
    return RunnableCallable(_run_blocking(function), function, name=function.__name__, trace=False)


def _retry_policy(config: SMoAConfig) -> RetryPolicy:
    """Retry transient errors (see ``is_transient``) with exponential backoff."""
    return RetryPolicy(
        max_attempts=config.max_attempts,
        initial_interval=config.retry_backoff_s,
        backoff_factor=2.0,
        jitter=config.retry_backoff_s > 0,
        retry_on=is_transient,
    )


def build_layer_graph(
    nodes: SMoANodes,
) -> CompiledStateGraph[LayerState, SMoAConfig, LayerInput, LayerOutput]:
    """One layer: parallel proposers (Send), their fan-in, the judge; narrow in/out schemas."""
    config = nodes.default_config
    layer = StateGraph(
        LayerState, context_schema=SMoAConfig, input_schema=LayerInput, output_schema=LayerOutput
    )
    # LangGraph's stub types do not describe error handlers taking (state, error, runtime)
    layer.add_node(  # type: ignore[call-overload]
        "propose",
        _node(nodes.propose),
        retry_policy=_retry_policy(config),
        error_handler=nodes.proposer_failed,
    )
    layer.add_node(  # type: ignore[call-overload]
        "judge",
        _node(nodes.judge),
        retry_policy=_retry_policy(config),
        error_handler=nodes.judge_failed,
    )
    layer.add_conditional_edges(START, _node(nodes.fan_out), ["propose"])
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
    builder.add_node("prepare", _node(nodes.prepare), retry_policy=_retry_policy(config))
    builder.add_node("layer", build_layer_graph(nodes))
    builder.add_node(  # type: ignore[call-overload]  # error handler, as in the layer
        "moderator",
        _node(nodes.moderate),
        retry_policy=_retry_policy(config),
        error_handler=nodes.moderator_failed,
    )
    builder.add_node("aggregator", _node(nodes.aggregate), retry_policy=_retry_policy(config))
    builder.add_edge(START, "prepare")
    builder.add_edge("prepare", "layer")
    builder.add_edge("layer", "moderator")
    builder.add_conditional_edges(
        "moderator", _node(route_after_moderator), ["layer", "aggregator"]
    )
    builder.add_edge("aggregator", END)
    return builder


def _restarts_layer(snapshot: StateSnapshot) -> bool:
    """A layer whose proposers all failed would fail the same way: it starts afresh instead."""
    return any(task.name == "layer" and task.error for task in snapshot.tasks)


async def aprepare_resume(
    compiled: CompiledStateGraph[Any, Any, Any, Any], config: RunnableConfig
) -> bool:
    """Ready a checkpointed thread for ``ainvoke(None, config)``; False if no run is pending.

    A run stopped mid-step (process killed, error, ``interrupt_before``) goes on from its last
    checkpoint: tasks that finished keep their writes and are not run again. A layer whose
    proposers all failed is restarted from scratch.
    """
    snapshot = await compiled.aget_state(config)
    if snapshot.next and _restarts_layer(snapshot):
        await compiled.aupdate_state(config, None, as_node="prepare")  # a fresh layer task
    return bool(snapshot.next)


def prepare_resume(
    compiled: CompiledStateGraph[Any, Any, Any, Any], config: RunnableConfig
) -> bool:
    """``aprepare_resume`` for sync runs: ready the thread for ``invoke(None, config)``."""
    snapshot = compiled.get_state(config)
    if snapshot.next and _restarts_layer(snapshot):
        compiled.update_state(config, None, as_node="prepare")
    return bool(snapshot.next)


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
            handler = drawn.nodes.get(f"__error_handler__{name}")
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
