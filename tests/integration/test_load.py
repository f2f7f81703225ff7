"""Load: 50 graph runs at once on the local model, bounded concurrency, no error, no deadlock.

Tiny runs (n=2, k=1: two proposers, a judge call and the aggregator; one layer, 8 output tokens
for the answers) keep it short on 2 cores. Peak RSS of this process and of the llama-server is
printed (run with ``-s`` to see it).
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import time
from collections import Counter
from typing import Any

import pytest

from smoa_graph import build_smoa_graph
from smoa_graph.local_server import LocalServer, process_rss_mb
from smoa_graph.testing import every_role

RUNS = 50
IN_FLIGHT = 8  # runs at once: 16 proposer requests queue on the server's 4 slots
DEADLINE_S = 600.0


async def sample_peak_rss(pid: int, peak: list[float], stop: asyncio.Event) -> None:
    """Keep the largest RSS (MB) of ``pid`` seen every 0.2 s in ``peak[0]``."""
    while not stop.is_set():
        peak[0] = max(peak[0], process_rss_mb(pid) or 0.0)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


async def test_fifty_concurrent_runs(
    local_server: LocalServer, local_base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMOA_LOCAL_BASE_URL", local_base_url)
    config = every_role(
        model="local", n_proposers=2, k=1, max_layers=1, max_tokens=8, aggregator_max_tokens=8
    )
    graph = build_smoa_graph(config).compile()
    semaphore = asyncio.Semaphore(IN_FLIGHT)

    async def one(i: int) -> dict[str, Any]:
        async with semaphore:
            return dict(await graph.ainvoke({"prompt": f"What is {i} + {i}? Give the number."}))

    assert local_server.pid is not None
    server_peak, stop = [0.0], asyncio.Event()
    sampler = asyncio.create_task(sample_peak_rss(local_server.pid, server_peak, stop))
    started = time.perf_counter()
    tasks = [asyncio.create_task(one(i)) for i in range(RUNS)]
    try:
        done, pending = await asyncio.wait(tasks, timeout=DEADLINE_S)
    finally:
        for task in tasks:
            task.cancel()
        stop.set()
        await sampler
    wall = time.perf_counter() - started
    assert not pending, f"only {len(done)} of {RUNS} runs finished in {DEADLINE_S:.0f} s"
    errors = [t.exception() for t in done if t.exception() is not None]
    assert not errors, errors[:3]
    states = [t.result() for t in done]
    assert all(s["answer"].strip() for s in states)
    # A failed call is allowed only if it was recorded and the run went on: a transient error
    # retried, a judge verdict cut at its token cap (its fallback chose), or a proposer of the
    # 135M model answering with no usable text (its layer went on without it).
    assert all(any(c["ok"] for c in s["calls"] if c["role"] == "aggregator") for s in states)
    lost = [c for s in states for c in s["layers"][0]["candidates"] if not c["ok"]]
    assert all("UnusableResponseError" in c["error"] for c in lost), lost
    assert all(len(s["layers"][0]["judge"]["selected"]) == 1 for s in states)
    judged = sum(s["layers"][0]["judge"]["called"] for s in states)
    calls = [c for s in states for c in s["calls"]]
    failed = Counter(
        f"{c['role']}: {(c['error'] or '').split(':')[0]}" for c in calls if not c["ok"]
    )
    own_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux
    print(
        f"\n{RUNS} runs, {IN_FLIGHT} in flight: {wall:.1f} s wall, {len(calls)} calls "
        f"({judged} judge verdicts used, {len(lost)} unusable proposer answers) "
        f"(failed and recorded: {dict(failed) or 'none'}), "
        f"{sum(c['input_tokens'] + c['output_tokens'] for c in calls)} tokens; peak RSS: "
        f"this process {own_peak:.0f} MB, llama-server {server_peak[0]:.0f} MB"
    )
