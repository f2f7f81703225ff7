"""Going on with checkpointed runs: resume after a crash, or edit the selection after a review.

Shared by the CLI (``smoa ask --resume``, ``--review`` / ``--select``) and the bench runner.
"""

from __future__ import annotations

from typing import Any

from langchain_core.runnables import RunnableConfig
from langgraph.graph.state import CompiledStateGraph
from langgraph.types import StateSnapshot

Graph = CompiledStateGraph[Any, Any, Any, Any]


class SelectionError(ValueError):
    """A selection edit that does not fit the paused run (raised before any change)."""


def _restarts_layer(snapshot: StateSnapshot) -> bool:
    """A layer whose proposers all failed would fail the same way: it starts afresh instead."""
    return any(task.name == "layer" and task.error for task in snapshot.tasks)


async def aprepare_resume(compiled: Graph, config: RunnableConfig) -> bool:
    """Ready a checkpointed thread for ``ainvoke(None, config)``; False if no run is pending.

    A run stopped mid-step (process killed, error, ``interrupt_before``) goes on from its last
    checkpoint: tasks that finished keep their writes and are not run again. A layer whose
    proposers all failed is restarted from scratch.
    """
    snapshot = await compiled.aget_state(config)
    if snapshot.next and _restarts_layer(snapshot):
        await compiled.aupdate_state(config, None, as_node="prepare")  # a fresh layer task
    return bool(snapshot.next)


def prepare_resume(compiled: Graph, config: RunnableConfig) -> bool:
    """``aprepare_resume`` for sync runs: ready the thread for ``invoke(None, config)``."""
    snapshot = compiled.get_state(config)
    if snapshot.next and _restarts_layer(snapshot):
        compiled.update_state(config, None, as_node="prepare")
    return bool(snapshot.next)


async def aresume_or_start(
    compiled: Graph, config: RunnableConfig, fresh: dict[str, Any]
) -> dict[str, Any] | None:
    """The input that finishes this thread's work: ``None`` to resume a pending run, else
    ``fresh`` on a thread cleared first (no earlier turn becomes chat history)."""
    if await aprepare_resume(compiled, config):
        return None
    checkpointer = compiled.checkpointer
    thread_id = config.get("configurable", {}).get("thread_id")
    if checkpointer is not None and not isinstance(checkpointer, bool) and thread_id:
        await checkpointer.adelete_thread(thread_id)
    return fresh


async def aselect(compiled: Graph, config: RunnableConfig, picks: list[int]) -> None:
    """Replace the selection of a run paused before the aggregator by these proposers'
    responses (``interrupt_before=["aggregator"]``); ``SelectionError`` if it does not fit."""
    snapshot = await compiled.aget_state(config)
    if snapshot.next != ("aggregator",):
        raise SelectionError(
            "this thread is not paused before the aggregator (run it with a review pause first)"
        )
    usable = {c["index"]: c for c in snapshot.values["layers"][-1]["candidates"] if c["ok"]}
    unknown = [i for i in picks if i not in usable]
    if not picks or unknown or len(set(picks)) != len(picks):
        raise SelectionError(f"choose distinct proposers among {sorted(usable)} (got {picks})")
    await compiled.aupdate_state(config, {"selected": [usable[i] for i in picks]}, "moderator")
