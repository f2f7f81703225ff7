"""RSS growth of the embedded llama-server over many distinct requests, per ``--cache-ram``.

For each cap, a fresh server answers ``--requests`` layer-2-like proposer requests (~850
prompt tokens, a new question every four, four at a time like a layer's proposers) and the
script prints the server's RSS as it grows. Prompts the server evicts from its slots are kept
in host RAM up to the cap. A run stops early, and says so, once RSS passes ``--guard-mb``: the
machine is shared.

    python benchmarks/local_memory.py --requests 300 --cache-ram 8192 256
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import httpx
from prefix_cache import ROLES, Client, Seeds, layer2_case, messages_for

from smoa_graph.local_server import DEFAULT_CACHE_RAM_MB, LocalServer, process_rss_mb


async def grow(args: argparse.Namespace, cache_ram: int) -> tuple[float, float, int]:
    """Start a server with ``cache_ram``, send the requests; (start RSS, end RSS, requests)."""
    server = LocalServer(threads=args.threads, cache_ram_mb=cache_ram)
    seeds = Seeds(args.seed)
    sent = 0
    with server:
        assert server.pid is not None
        print(f"\nserver: llama-server {' '.join(server.command()[5:])}")
        async with httpx.AsyncClient(timeout=300) as http:
            client = Client(http, server, args.max_tokens)
            await client.raw([{"role": "user", "content": "Hello."}])
            rss_start = process_rss_mb(server.pid) or 0.0
            print(f"{'requests':>8} {'RSS MB':>8} {'peak MB':>8} {'elapsed s':>9}")
            print(f"{0:>8} {rss_start:>8.0f} {process_rss_mb(server.pid, peak=True):>8.0f} {0:>9}")
            started = time.monotonic()
            rss = rss_start
            while sent < args.requests and rss < args.guard_mb:
                question, refs = layer2_case(seeds.take())
                batch = [messages_for("shared-first", question, refs, role) for role in ROLES]
                await asyncio.gather(*(client.call(m) for m in batch))
                sent += len(batch)
                rss = process_rss_mb(server.pid) or 0.0
                if sent % args.every == 0 or sent >= args.requests or rss >= args.guard_mb:
                    peak = process_rss_mb(server.pid, peak=True) or 0.0
                    elapsed = time.monotonic() - started
                    print(f"{sent:>8} {rss:>8.0f} {peak:>8.0f} {elapsed:>9.0f}")
        if rss >= args.guard_mb:
            print(f"stopped after {sent} requests: RSS passed the guard of {args.guard_mb} MB")
        return rss_start, rss, sent


async def main_async(args: argparse.Namespace) -> None:
    print(f"load average (1 min) at the start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    results = {cap: await grow(args, cap) for cap in args.cache_ram}
    print("\n| --cache-ram MiB | requests | RSS at start MB | RSS at end MB | growth MB |")
    print("|---:|---:|---:|---:|---:|")
    for cap, (start, end, sent) in results.items():
        print(f"| {cap} | {sent} | {start:.0f} | {end:.0f} | {end - start:.0f} |")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="requests per server")
    parser.add_argument(
        "--cache-ram",
        type=int,
        nargs="+",
        default=[8192, DEFAULT_CACHE_RAM_MB],
        help="caps to compare, MiB (8192 is llama-server's own default)",
    )
    parser.add_argument("--max-tokens", type=int, default=8, help="output tokens per request")
    parser.add_argument("--every", type=int, default=40, help="print RSS every N requests")
    parser.add_argument("--guard-mb", type=float, default=4096, help="stop a run above this RSS")
    parser.add_argument("--threads", type=int, help="llama-server threads (default: min(4, CPUs))")
    parser.add_argument("--seed", type=int, default=50_000, help="first question's seed")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main_async(parse_args()))
