"""How a layer's proposer calls reach the backend: all at once, one after another, or one first.

The graph keeps its shape (the proposers are parallel nodes of the layer); the dispatch gate only
orders their model calls. Backends that reuse a cached prompt prefix per slot (llama-server) read
a layer's shared prefix once when its calls do not start together: on two CPU cores, four
layer-2 proposer calls took 4.1-4.4 s one after another against 12.8-13.5 s in parallel
(``benchmarks/prefix_cache.py``). ``prefix-first`` sends one call, then the rest together.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Literal

from smoa_graph.config import SMoAConfig

Dispatch = Literal["parallel", "sequential", "prefix-first"]


def dispatch_policy(cfg: SMoAConfig, shared_references: bool) -> Dispatch:
    """``cfg.proposer_dispatch``; ``auto`` is sequential when the calls share references to
    read (layer 2 on) and every proposer is the embedded local model, parallel otherwise
    (short prompts: generating in parallel slots is faster)."""
    if cfg.proposer_dispatch != "auto":
        return cfg.proposer_dispatch
    specs = {cfg.proposer_model(i) for i in range(cfg.n_proposers)}
    local = all(spec == "local" or spec.startswith("local:") for spec in specs)
    return "sequential" if local and shared_references else "parallel"


class DispatchGate:
    """Orders the model calls of one layer's proposers (all on one event loop)."""

    def __init__(self, policy: Dispatch) -> None:
        self.policy = policy
        self._one_at_a_time = asyncio.Lock()
        self._first_done = asyncio.Event()
        self._first_taken = False

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Wait until this call may go, and hold its turn while it runs."""
        if self.policy == "sequential":
            async with self._one_at_a_time:
                yield
        elif self.policy == "prefix-first" and not self._first_taken:
            self._first_taken = True
            try:
                yield
            finally:
                self._first_done.set()
        else:
            if self.policy == "prefix-first":
                await self._first_done.wait()
            yield
