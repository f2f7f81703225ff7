"""Parallel vs sequential chat requests against the embedded local model (llama-server).

Sends the same 4 short prompts either all at once (``asyncio.gather`` of ``ainvoke``) or one
after the other, R times, and prints wall times, the sequential/parallel ratio, output tokens/s
of each mode and the server's RSS. Uses ``--base-url`` if given, else a running detached server
(``smoa serve-local``), else starts one for the duration of the run.

    python benchmarks/local_parallel.py --repeats 3 --max-tokens 128
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

from langchain_openai import ChatOpenAI

from smoa_graph.local_server import MODEL_ALIAS, LocalServer, local_status, process_rss_mb

PROMPTS = [
    "Describe a sunrise over the sea.",
    "Explain why the sky is blue.",
    "Give advice to a new gardener.",
    "Tell a short story about a robot.",
]


@dataclass
class Run:
    """One mode's result: wall time and output tokens of the 4 requests."""

    wall_s: float
    output_tokens: int

    @property
    def tokens_per_s(self) -> float:
        return self.output_tokens / self.wall_s


async def run_mode(model: ChatOpenAI, parallel: bool) -> Run:
    """Send all prompts together (``parallel``) or one at a time."""
    start = time.perf_counter()
    if parallel:
        replies = await asyncio.gather(*(model.ainvoke(p) for p in PROMPTS))
    else:
        replies = [await model.ainvoke(p) for p in PROMPTS]
    wall = time.perf_counter() - start
    tokens = sum(r.usage_metadata["output_tokens"] for r in replies if r.usage_metadata)
    return Run(wall, tokens)


@contextlib.contextmanager
def server_for(args: argparse.Namespace) -> Iterator[tuple[str, int | None, str]]:
    """Yield (base_url, server pid or None, description), starting a server if needed."""
    status = local_status()
    if args.base_url:
        pid = status["pid"] if status and status["base_url"] == args.base_url else None
        yield args.base_url, pid, "given --base-url"
    elif status is not None:
        yield status["base_url"], status["pid"], f"reused detached server pid {status['pid']}"
    else:
        server = LocalServer(threads=args.threads, parallel=args.slots)
        with server:
            described = (
                f"started for this run in {server.startup_seconds:.2f} s "
                f"(threads {server.threads}, slots {server.parallel}, ctx {server.ctx_size})"
            )
            yield server.base_url, server.pid, described


async def main_async(args: argparse.Namespace) -> None:
    with server_for(args) as (base_url, pid, described):
        print(f"server: {base_url} - {described}")
        print(
            f"load average (1 min) at the start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs"
        )
        model = ChatOpenAI(
            base_url=base_url,
            model=MODEL_ALIAS,
            api_key="local",
            temperature=args.temperature,
            max_tokens=args.max_tokens,
            stream_usage=True,
            extra_body={"ignore_eos": True} if args.ignore_eos else None,
        )
        await model.ainvoke("Hello.")  # warm-up, not timed
        print(
            f"{len(PROMPTS)} requests, max_tokens {args.max_tokens}, "
            f"temperature {args.temperature}, ignore_eos {args.ignore_eos}"
        )
        print(f"{'repeat':>6} {'seq_s':>7} {'par_s':>7} {'ratio':>6} {'seq_tok/s':>10} "
              f"{'par_tok/s':>10} {'seq_tok':>8} {'par_tok':>8}")  # fmt: skip
        seq_runs: list[Run] = []
        par_runs: list[Run] = []
        for i in range(1, args.repeats + 1):
            seq = await run_mode(model, parallel=False)
            par = await run_mode(model, parallel=True)
            seq_runs.append(seq)
            par_runs.append(par)
            print(
                f"{i:>6} {seq.wall_s:>7.2f} {par.wall_s:>7.2f} {seq.wall_s / par.wall_s:>6.2f} "
                f"{seq.tokens_per_s:>10.1f} {par.tokens_per_s:>10.1f} "
                f"{seq.output_tokens:>8} {par.output_tokens:>8}"
            )
        for name, stat in (("mean", statistics.mean), ("median", statistics.median)):
            seq_wall = stat(r.wall_s for r in seq_runs)
            par_wall = stat(r.wall_s for r in par_runs)
            seq_tps = stat(r.tokens_per_s for r in seq_runs)
            par_tps = stat(r.tokens_per_s for r in par_runs)
            print(
                f"{name:>6} {seq_wall:>7.2f} {par_wall:>7.2f} {seq_wall / par_wall:>6.2f} "
                f"{seq_tps:>10.1f} {par_tps:>10.1f}"
            )
        print(f"throughput gain parallel/sequential (median tokens/s): {par_tps / seq_tps:.2f}x")
        rss = process_rss_mb(pid) if pid is not None else None
        print(f"server RSS: {'n/a' if rss is None else f'{rss:.0f} MB'}")
        print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Parallel vs sequential chat requests against the local model."
    )
    parser.add_argument("--repeats", type=int, default=3, help="repetitions of each mode")
    parser.add_argument("--max-tokens", type=int, default=128, help="max output tokens")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument(
        "--ignore-eos",
        action="store_true",
        help="generate exactly --max-tokens per request (equal work in both modes)",
    )
    parser.add_argument("--base-url", help="use this OpenAI-compatible server instead")
    parser.add_argument("--threads", type=int, help="llama-server threads (default: min(4, CPUs))")
    parser.add_argument("--slots", type=int, default=4, help="llama-server parallel slots")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main_async(parse_args()))
