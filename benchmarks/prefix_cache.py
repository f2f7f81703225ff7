"""Prompt layout x dispatch on the embedded llama-server: wall time and prompt tokens from cache.

Four layer-2-like proposer requests (a question, three reference answers, ~850 prompt tokens,
one role each; 32 output tokens, ``ignore_eos``) reach a server started for this run, laid out

- ``role-first``: the role in the system message, then question + references (per-call text
  first: the four prompts part after a few tokens);
- ``shared-first``: one system message and question + references shared, the role last,

and dispatched ``parallel`` (all four at once), ``sequential`` (one after another) or
``prefix-first`` (one, then the other three at once). Every repeat uses a new question, so
nothing is reused across repeats. "cached" is the server's own count of prompt tokens served
from its KV cache (``usage.prompt_tokens_details.cached_tokens``).

Then, on the same server: which usage fields this llama-server returns, streamed and not, and
what langchain-openai makes of them; one request with ``n`` = 4 choices against four identical
requests. Then server flags that could change cross-slot reuse, each on a fresh server.
Raw httpx requests, no graph.

    python benchmarks/prefix_cache.py --repeats 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from smoa_graph.local_server import MODEL_ALIAS, LocalServer, process_rss_mb

ROLES = [
    "You are a careful arithmetician. Redo every calculation of the references digit by digit "
    "and keep only the steps that survive.",
    "You are a sceptical reviewer. Look for the step where a reference misread the question and "
    "say which quantity it confused.",
    "You are a teacher who explains to a ten-year-old. Give the shortest chain of steps a child "
    "could follow, with the numbers.",
    "You are a puzzle setter. Check the answer by working backwards from it to the numbers given "
    "in the question.",
]
SYSTEM = (
    "You improve answers to a math word problem. You are given the problem and answers written "
    "by other assistants; they may be wrong. Write one answer of your own, reasoning step by "
    "step, and end with 'The answer is N.'"
)
LAYOUTS = ("role-first", "shared-first")
DISPATCHES = ("parallel", "sequential", "prefix-first")
NAMES = ["Lena", "Omar", "Priya", "Tom", "Aiko", "Bruno", "Chen", "Dana"]
ITEMS = ["apples", "marbles", "stamps", "books", "shells", "cards", "pencils", "coins"]


def layer2_case(seed: int, references: int = 3) -> tuple[str, list[str]]:
    """A GSM8K-like question and ``references`` step-by-step answers, distinct per ``seed``."""
    rng = random.Random(seed)
    name, item = rng.choice(NAMES), rng.choice(ITEMS)
    a, b, c, d = (rng.randint(3, 60) for _ in range(4))
    question = (
        f"Case {seed}: {name} has {a} {item}. A friend gives {name} {b} more, then {name} buys "
        f"{c} boxes with {d} {item} in each and gives away a third of everything, rounded down. "
        f"How many {item} does {name} keep?"
    )
    total = a + b + c * d
    answers = []
    for r in range(references):
        slip = rng.choice([0, 0, 1, -2, d])
        kept = total - total // 3 + slip
        steps = [
            f"Reference {r + 1}. First, {name} starts with {a} {item}.",
            f"After the gift there are {a} + {b} = {a + b} {item}.",
            f"The boxes hold {c} x {d} = {c * d} {item} in total, since each of the {c} boxes "
            f"has {d}.",
            f"Together that is {a + b} + {c * d} = {total} {item}.",
            f"A third of {total}, rounded down, is {total // 3}, so {name} gives away "
            f"{total // 3} {item}.",
            f"Then {name} keeps {total} - {total // 3} = {kept} {item}.",
            f"Check: {kept} plus {total // 3} is {kept + total // 3}, which should match the "
            f"{total} {item} {name} had before giving any away.",
            f"Every quantity in the question has been used once: {a}, {b}, {c} and {d}, and "
            f"the third is taken after the boxes were bought.",
            f"The answer is {kept}.",
        ]
        answers.append(" ".join(steps))
    return question, answers


def shared_block(question: str, references: Sequence[str]) -> str:
    refs = "\n\n".join(f"[{i + 1}] {text}" for i, text in enumerate(references))
    return f"Question:\n{question}\n\nAnswers of other assistants:\n{refs}"


def messages_for(layout: str, question: str, references: Sequence[str], role: str) -> list[dict]:
    """One proposer's chat messages in ``layout`` (same words either way, another order)."""
    block = shared_block(question, references)
    if layout == "role-first":
        return [
            {"role": "system", "content": f"{role}\n\n{SYSTEM}"},
            {"role": "user", "content": block},
        ]
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f"{block}\n\nYour role: {role}"},
    ]


@dataclass
class Call:
    """One request's figures as the server reports them."""

    prompt_tokens: int
    cached_tokens: int
    cache_n: int
    wall_s: float


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds process ``pid`` has used (/proc), all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Batch:
    """Four calls dispatched together; ``cpu_s`` is the server's CPU time over the batch, the
    work done, which a busy shared machine changes much less than the wall time."""

    wall_s: float
    calls: list[Call]
    cpu_s: float = 0.0

    @property
    def prompt(self) -> int:
        return sum(c.prompt_tokens for c in self.calls)

    @property
    def cached(self) -> int:
        return sum(c.cached_tokens for c in self.calls)

    @property
    def cache_n(self) -> int:
        return sum(c.cache_n for c in self.calls)


class Client:
    """Chat requests to one server, with the body fields every call shares."""

    def __init__(self, http: httpx.AsyncClient, server: LocalServer, max_tokens: int) -> None:
        assert server.pid is not None, "start the server first"
        self.http, self.url, self.pid = http, f"{server.base_url}/chat/completions", server.pid
        self.base = {
            "model": MODEL_ALIAS,
            "max_tokens": max_tokens,
            "temperature": 0.7,
            "ignore_eos": True,
        }

    async def raw(self, messages: list[dict], **extra: Any) -> dict[str, Any]:
        resp = await self.http.post(self.url, json={**self.base, "messages": messages, **extra})
        if resp.status_code != 200:
            raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:300]}")
        return dict(resp.json())

    async def call(self, messages: list[dict], **extra: Any) -> Call:
        start = time.perf_counter()
        body = await self.raw(messages, **extra)
        usage, timings = body["usage"], body.get("timings", {})
        return Call(
            prompt_tokens=usage["prompt_tokens"],
            cached_tokens=(usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0),
            cache_n=timings.get("cache_n", 0),
            wall_s=time.perf_counter() - start,
        )


Job = Callable[[], Awaitable[Call]]


async def dispatch(how: str, jobs: Sequence[Job]) -> Batch:
    """Run the jobs ``parallel``, ``sequential`` or ``prefix-first``; time the whole batch."""
    start = time.perf_counter()
    if how == "parallel":
        calls = list(await asyncio.gather(*(job() for job in jobs)))
    elif how == "sequential":
        calls = [await job() for job in jobs]
    else:
        calls = [await jobs[0]()]
        calls += await asyncio.gather(*(job() for job in jobs[1:]))
    return Batch(time.perf_counter() - start, calls)


async def measured(client: Client, how: str, jobs: Sequence[Job]) -> Batch:
    """:func:`dispatch`, with the server's CPU time over the batch."""
    cpu = process_cpu_s(client.pid)
    batch = await dispatch(how, jobs)
    batch.cpu_s = process_cpu_s(client.pid) - cpu
    return batch


class Seeds:
    """A fresh question per batch, so no batch reuses another's prompts."""

    def __init__(self, start: int) -> None:
        self.next = start

    def take(self) -> int:
        self.next += 1
        return self.next


async def cells(
    client: Client,
    seeds: Seeds,
    grid: Sequence[tuple[str, str]],
    repeats: int,
    **extra: Any,
) -> dict[tuple[str, str], list[Batch]]:
    """``repeats`` batches of the four proposers per (layout, dispatch) of ``grid``.

    Repeats are interleaved (every cell once, then again), so a change in the shared machine's
    load during the run hits every cell alike.
    """
    out: dict[tuple[str, str], list[Batch]] = {key: [] for key in grid}
    for _ in range(repeats):
        for layout, how in grid:
            question, refs = layer2_case(seeds.take())
            prompts = [messages_for(layout, question, refs, role) for role in ROLES]
            jobs = [(lambda m=m: client.call(m, **extra)) for m in prompts]
            batch = await measured(client, how, jobs)
            out[(layout, how)].append(batch)
            progress = f"{batch.wall_s:.2f} s, server CPU {batch.cpu_s:.2f} s"
            print(f"  {layout} / {how}: {progress}, {batch.cached} of {batch.prompt} prompt "
                  "tokens cached", file=sys.stderr)  # fmt: skip
    return out


def row(label: str, batches: Sequence[Batch]) -> str:
    walls = [b.wall_s for b in batches]
    cached = [b.cached for b in batches]
    return (
        f"| {label} | {statistics.median(walls):.2f} | {min(walls):.2f}-{max(walls):.2f} | "
        f"{statistics.median(b.cpu_s for b in batches):.2f} | "
        f"{statistics.median(cached):.0f} ({min(cached)}-{max(cached)}) | "
        f"{statistics.median(b.prompt for b in batches):.0f} |"
    )


HEADER = (
    "| {what} | wall s (median) | wall s (range) | server CPU s (median) | "
    "cached prompt tokens (median, range) | prompt tokens |\n|---|---:|---:|---:|---:|---:|"
)


async def layout_table(client: Client, seeds: Seeds, repeats: int) -> None:
    grid = [(layout, how) for layout in LAYOUTS for how in DISPATCHES]
    results = await cells(client, seeds, grid, repeats)
    print(HEADER.format(what="layout / dispatch"))
    for (layout, how), batches in results.items():
        print(row(f"{layout} / {how}", batches))


def _keys(obj: Any) -> Any:
    """The key structure of a JSON value (values dropped), to show which fields exist."""
    if isinstance(obj, dict):
        return {k: _keys(v) for k, v in obj.items()} if obj else {}
    return type(obj).__name__


async def usage_fields(client: Client, base_url: str, seeds: Seeds) -> None:
    """Which usage/timing fields the server returns, and what langchain-openai reads of them."""
    from langchain_openai import ChatOpenAI

    question, refs = layer2_case(seeds.take())
    messages = messages_for("shared-first", question, refs, ROLES[0])
    await client.raw(messages)  # the prompt is now in a slot: the next calls reuse it
    body = await client.raw(messages)
    print("non-streamed: usage =", json.dumps(body["usage"]))
    print("non-streamed: timings keys =", sorted(body.get("timings", {})))
    payload = {**client.base, "messages": messages, "stream": True}
    payload["stream_options"] = {"include_usage": True}
    chunks = []
    async with client.http.stream("POST", client.url, json=payload) as resp:
        async for line in resp.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line[6:]))
    with_usage = [c for c in chunks if c.get("usage")]
    with_timings = [c for c in chunks if c.get("timings")]
    same = [c for c in with_usage if c.get("timings")]
    print(f"streamed: {len(chunks)} chunks, {len(with_usage)} with usage, "
          f"{len(with_timings)} with timings, {len(same)} with both")  # fmt: skip
    for c in with_usage:
        print("streamed: usage =", json.dumps(c["usage"]), "| choices:", len(c["choices"]))
    if with_timings:
        print("streamed: timings =", json.dumps(with_timings[-1]["timings"]))
    model = ChatOpenAI(
        base_url=base_url,
        model=MODEL_ALIAS,
        api_key="local",
        max_tokens=client.base["max_tokens"],
        stream_usage=True,
        extra_body={"ignore_eos": True},
    )
    lc_messages = [(m["role"], m["content"]) for m in messages]
    reply = await model.ainvoke(lc_messages)
    print("langchain ainvoke: usage_metadata =", json.dumps(reply.usage_metadata))
    merged = None
    async for chunk in model.astream(lc_messages):
        merged = chunk if merged is None else merged + chunk
    assert merged is not None
    print("langchain astream(stream_usage=True): usage_metadata =",
          json.dumps(merged.usage_metadata))  # fmt: skip


async def several_choices(client: Client, seeds: Seeds, repeats: int, parallel: int) -> None:
    """One request with ``n`` = 4 against four identical requests (self-consistency)."""
    results: dict[str, list[Batch]] = {
        "n=4 in one request": [],
        "4 identical, parallel": [],
        "4 identical, sequential": [],
    }
    for _ in range(repeats):
        for label, batches in results.items():
            question, refs = layer2_case(seeds.take())
            messages = messages_for("shared-first", question, refs, ROLES[0])
            if label.startswith("n=4"):
                batches.append(
                    await measured(client, "sequential", [lambda m=messages: client.call(m, n=4)])
                )
            else:
                how = label.rsplit(" ", 1)[1]
                batches.append(await measured(client, how, [lambda m=messages: client.call(m)] * 4))
    body = await client.raw(messages, n=4)
    texts = {c["message"]["content"] for c in body["choices"]}
    print(f"n=4: {len(body['choices'])} choices, {len(texts)} distinct texts; usage counts "
          f"the prompt once: prompt_tokens {body['usage']['prompt_tokens']}, "
          f"completion_tokens {body['usage']['completion_tokens']}")  # fmt: skip
    print(HEADER.format(what="identical prompts"))
    for label, batches in results.items():
        print(row(label, batches))
    try:
        await client.raw(messages, n=parallel + 1)
        print(f"n={parallel + 1} with -np {parallel}: accepted")
    except RuntimeError as exc:
        print(f"n={parallel + 1} with -np {parallel}: refused: {exc}")


Variant = tuple[dict[str, Any], dict[str, Any]]
"""Server options and extra request-body fields of one flag experiment."""

FLAG_VARIANTS: dict[str, Variant] = {
    'request body "cache_prompt": false': ({}, {"cache_prompt": False}),
    "--cache-ram 0 (prompt cache off)": ({"cache_ram_mb": 0}, {}),
    "--cache-ram 8192 (llama-server's default)": ({"cache_ram_mb": 8192}, {}),
    "--kv-unified": ({"extra_args": ["--kv-unified"]}, {}),
    "--kv-unified --cache-ram 0": ({"extra_args": ["--kv-unified"], "cache_ram_mb": 0}, {}),
    "--cache-reuse 64": ({"extra_args": ["--cache-reuse", "64"]}, {}),
    "--slot-prompt-similarity 0 (slots by LRU only)": (
        {"extra_args": ["--slot-prompt-similarity", "0"]},
        {},
    ),
    "--slot-prompt-similarity 0.5": ({"extra_args": ["--slot-prompt-similarity", "0.5"]}, {}),
    "-np 1": ({"parallel": 1}, {}),
    "-np 2": ({"parallel": 2}, {}),
}

Body = Callable[["Client", str, LocalServer], Awaitable[None]]


async def run_server(opts: dict[str, Any], args: argparse.Namespace, body: Body) -> None:
    """Start a server with ``opts``, warm it up, run ``body(client, base_url, server)``, stop it."""
    server = LocalServer(threads=args.threads, **opts)
    with server:
        print(f"server: llama-server {' '.join(server.command()[5:])}")
        async with httpx.AsyncClient(timeout=300) as http:
            client = Client(http, server, args.max_tokens)
            await client.raw([{"role": "user", "content": "Hello."}])  # warm-up
            await body(client, server.base_url, server)
        assert server.pid is not None
        print(f"server RSS at the end: {process_rss_mb(server.pid):.0f} MB")


async def main_async(args: argparse.Namespace) -> None:
    print(f"load average (1 min) at the start: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    seeds = Seeds(args.seed)
    print(f"{len(ROLES)} requests per batch, {args.max_tokens} output tokens each, "
          f"{args.repeats} repeats, a new question per batch")  # fmt: skip

    async def defaults(client: Client, base_url: str, server: LocalServer) -> None:
        if "table" in args.parts:
            print("\n## layout x dispatch (this project's server defaults)\n")
            await layout_table(client, seeds, args.repeats)
        if "fields" in args.parts:
            print("\n## usage fields\n")
            await usage_fields(client, base_url, seeds)
        if "choices" in args.parts:
            print("\n## several choices in one request\n")
            await several_choices(client, seeds, args.repeats, server.parallel)

    if {"table", "fields", "choices"} & set(args.parts):
        await run_server({}, args, defaults)
    if "flags" in args.parts:
        print("\n## flags (shared-first layout), each on a fresh server\n")
    for label, (opts, extra) in FLAG_VARIANTS.items():
        if "flags" not in args.parts or (args.flags and not any(f in label for f in args.flags)):
            continue

        async def flagged(
            client: Client, _url: str, _server: LocalServer, label: str = label, extra: Any = extra
        ) -> None:
            grid = [("shared-first", how) for how in DISPATCHES]
            results = await cells(client, seeds, grid, args.repeats, **extra)
            print(HEADER.format(what=label))
            for (_, how), batches in results.items():
                print(row(how, batches))

        await run_server(opts, args, flagged)
    print(f"load average (1 min) at the end: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3, help="batches per cell (median)")
    parser.add_argument("--max-tokens", type=int, default=32, help="output tokens per request")
    parser.add_argument("--threads", type=int, help="llama-server threads (default: min(4, CPUs))")
    parser.add_argument("--seed", type=int, default=1000, help="first question's seed")
    parser.add_argument(
        "--parts",
        nargs="+",
        default=["table", "fields", "choices", "flags"],
        choices=["table", "fields", "choices", "flags"],
        help="what to measure",
    )
    parser.add_argument(
        "--flags", nargs="*", help="only the flag variants whose label contains one of these"
    )
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main_async(parse_args()))
