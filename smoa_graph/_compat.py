"""The LangGraph internals smoa_graph relies on, in one place.

``tests/unit/test_compat.py`` checks each of them against the installed LangGraph, so that an
upgrade inside the pinned range that changes one fails loudly there instead of silently here
(``make compat-latest`` runs the unit suite on the newest versions the pins allow).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.runnables import Runnable
from langgraph._internal._runnable import RunnableCallable

ERROR_HANDLER_PREFIX = "__error_handler__"


def error_handler_name(node: str) -> str:
    """The name LangGraph gives the error-handler node of ``node`` (in streams and drawings)."""
    return f"{ERROR_HANDLER_PREFIX}{node}"


def dual_node(
    sync_body: Callable[..., Any], async_body: Callable[..., Any], name: str
) -> Runnable[Any, Any]:
    """A node with a sync body (``invoke``/``stream``) and an async one (``ainvoke``/``astream``).

    LangGraph's own node wrapper (its prebuilt ``ToolNode`` is one); it injects ``runtime``,
    ``config`` and the like into either body by parameter name.
    """
    return RunnableCallable(sync_body, async_body, name=name, trace=False)
