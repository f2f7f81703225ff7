"""Server overhead benchmark: ``smoa serve`` against calling the graph directly, in one run.

The same SMoA run (the canned ``fake`` model, no latency: smoa with every role at work,
``testing.EVERY_ROLE``, n=4, k=2, the moderator stops after layer 1 on agreement, 6 model calls,
the aggregator streaming the answer) is made N times

- directly in this process: ``graph.ainvoke``, and ``graph.astream`` collecting the final
  answer's tokens (what the server does for a streamed request);
- over HTTP: ``POST /v1/chat/completions`` to a ``smoa serve --model fake`` subprocess on
  loopback, not streamed and streamed (SSE, read to ``[DONE]``), one keep-alive client;

one at a time (latency p50/p95) and C at a time (requests/s). The figures are side by side;
the ratios (server / the matching direct call) and the added milliseconds per request are the
server's cost: HTTP, JSON, validation, the run's task, SSE framing.

    PYTHONPATH=. .venv/bin/python benchmarks/server_overhead.py [--requests 200] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx

from smoa_graph import SMoAConfig, build_smoa_graph
from smoa_graph.testing import EVERY_ROLE

QUESTION = "What is 6 * 7?"
BODY = {"model": "smoa", "messages": [{"role": "user", "content": QUESTION}], "smoa": EVERY_ROLE}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def latencies(call: Callable[[], Awaitable[None]], n: int) -> list[float]:
    """Wall time of each of ``n`` calls made one after another."""
    times = []
    for _ in range(n):
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    return times


async def throughput(call: Callable[[], Awaitable[None]], n: int, concurrency: int) -> float:
    """Calls per second with ``concurrency`` calls in flight."""
    slots = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with slots:
            await call()

    started = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(n)))
    return n / (time.perf_counter() - started)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(port: int, concurrency: int) -> subprocess.Popen[bytes]:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root), "LANGSMITH_TRACING": "false"}
    env.pop("SMOA_SERVER_API_KEY", None)
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "smoa_graph.cli", "serve", "--model", "fake"),
            *("--port", str(port), "--max-concurrent-runs", str(concurrency)),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def wait_until_up(client: httpx.AsyncClient, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"smoa serve exited with {process.returncode}")
        try:
            if (await client.get("/v1/models")).status_code == 200:
                return
        except httpx.TransportError:
            await asyncio.sleep(0.1)
    raise SystemExit("smoa serve did not start within 60 s")


async def main(requests: int, concurrency: int, warmup: int) -> None:
    graph = build_smoa_graph(SMoAConfig(model="fake", **EVERY_ROLE)).compile()

    async def direct() -> None:
        state = await graph.ainvoke({"messages": [("user", QUESTION)]})
        assert state["answer"]

    async def direct_tokens() -> None:  # what the server does for a streamed request
        tokens = [
            message.text
            async for _, (message, metadata) in graph.astream(
                {"messages": [("user", QUESTION)]}, stream_mode="messages", subgraphs=True
            )
            if "smoa:final" in metadata.get("tags", [])
        ]
        assert tokens

    port = free_port()
    process = start_server(port, concurrency)
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", timeout=60, limits=limits
    ) as client:

        async def plain() -> None:
            reply = await client.post("/v1/chat/completions", json=BODY)
            assert reply.status_code == 200, reply.text

        async def streamed() -> None:
            body = {**BODY, "stream": True}
            async with client.stream("POST", "/v1/chat/completions", json=body) as reply:
                assert reply.status_code == 200
                lines = [line async for line in reply.aiter_lines()]
            assert "data: [DONE]" in lines, lines[-3:]

        try:
            await wait_until_up(client, process)
            modes = {
                "direct, ainvoke": direct,
                "server": plain,
                "direct, astream tokens": direct_tokens,
                "server, SSE": streamed,
            }
            for call in modes.values():
                await latencies(call, warmup)
            rows = {}
            for name, call in modes.items():
                times = await latencies(call, requests)
                rate = await throughput(call, requests, concurrency)
                rows[name] = (rate, percentile(times, 0.5), percentile(times, 0.95))
        finally:
            process.terminate()
            process.wait(30)

    print(
        f"server overhead, fake model (smoa n=4 k=2, 6 calls per run): {requests} requests, "
        f"latency one at a time, requests/s with {concurrency} in flight; "
        f"python {sys.version.split()[0]}, {os.cpu_count()} cores"
    )
    print(f"{'mode':<24}{'requests/s':>12}{'p50 ms':>10}{'p95 ms':>10}")
    for name, (rate, p50, p95) in rows.items():
        print(f"{name:<24}{rate:>12.1f}{p50 * 1000:>10.2f}{p95 * 1000:>10.2f}")
    for name, base in (("server", "direct, ainvoke"), ("server, SSE", "direct, astream tokens")):
        (rate, p50, p95), (base_rate, base_p50, base_p95) = rows[name], rows[base]
        print(
            f"{name} / {base}: requests/s {rate / base_rate:.2f}x, p50 {p50 / base_p50:.2f}x "
            f"(+{(p50 - base_p50) * 1000:.2f} ms), p95 {p95 / base_p95:.2f}x "
            f"(+{(p95 - base_p95) * 1000:.2f} ms)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per mode")
    parser.add_argument("--concurrency", type=int, default=8, help="requests in flight")
    parser.add_argument("--warmup", type=int, default=10, help="unmeasured requests per mode")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.concurrency, args.warmup))
