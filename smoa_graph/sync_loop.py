"""The background event loop that runs the nodes of sync runs (``invoke``, ``stream``, ``batch``).

Nodes are coroutines; a sync run hands each one to this loop on a daemon thread and waits for it,
so sync and async runs share the same node code and the models' async HTTP clients stay usable
from one run to the next. The loop is created once under a lock (a parallel ``batch`` starts its
first runs together), forgotten in a forked child (whose copy has no thread running it), and a
sync run started from the loop's own thread fails at once instead of deadlocking.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
_lock = threading.Lock()


class SyncRunInLoopError(RuntimeError):
    """A sync run (``invoke``/``stream``/``batch``) started on the thread that runs its nodes."""


def _forget_in_child() -> None:
    global _loop, _thread, _lock
    _loop, _thread, _lock = None, None, threading.Lock()


os.register_at_fork(after_in_child=_forget_in_child)


def background_loop() -> asyncio.AbstractEventLoop:
    """The loop that runs the nodes of sync runs (started on first use)."""
    global _loop, _thread
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            _thread = threading.Thread(
                target=_loop.run_forever, name="smoa-sync-nodes", daemon=True
            )
            _thread.start()
        return _loop


def blocking(node: Callable[..., Coroutine[Any, Any, T]]) -> Callable[..., T]:
    """``node`` as a blocking function: its coroutine runs on the background loop.

    The coroutine gets the calling thread's context (LangGraph's config, callbacks, runtime),
    which ``run_coroutine_threadsafe`` copies. The wrapper shows ``node``'s signature, so that
    LangGraph injects the same arguments (``runtime``, ``config``) into it.
    """

    def run(*args: Any, **kwargs: Any) -> T:
        loop = background_loop()
        if threading.current_thread() is _thread:
            raise SyncRunInLoopError(
                "a sync run (invoke/stream/batch) was started from code running on smoa_graph's "
                "background loop (inside a node, tool or callback of a sync run); use "
                "ainvoke/astream there"
            )
        future = asyncio.run_coroutine_threadsafe(node(*args, **kwargs), loop)
        try:
            return future.result()
        except BaseException:
            future.cancel()
            raise

    run.__signature__ = inspect.signature(node)  # type: ignore[attr-defined]
    run.__name__ = run.__qualname__ = getattr(node, "__name__", "node")
    return run
