"""Orchestration benchmark: what the SMoA graph itself costs, measured with fake models only.

1. Wall time against the critical path of the simulated model latencies (smoa, moa, single).
   The critical path is the ideal wall time: per layer the slowest proposer (they run in
   parallel), plus every judge, moderator and aggregator call (they run one after another).
2. Pure graph overhead per query with zero-latency fakes (smoa, n=4, k=2, 3 layers): the wall
   time minus the time spent inside the fake chat-model calls (LangChain's chat-model call path:
   callbacks, message objects, streaming), which is measured apart and reported too.
3. How that overhead grows with the number of proposers and with the number of layers.

Proposers disagree and the moderator model votes to continue, so every run goes to max_layers.

    .venv/bin/python benchmarks/orchestration.py [--quick] [--json report.json]

(The script in ``benchmarks/`` runs this module's ``main``; its unit test imports it here.)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import statistics
import time
import types
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from dataclasses import asdict, dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, TypeVar

from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langgraph.graph.state import CompiledStateGraph
from langsmith import tracing_context
from pydantic import Field

from smoa_graph import ModelRequest, SMoAConfig, build_smoa_graph
from smoa_graph.config import Preset
from smoa_graph.testing import EVERY_ROLE, FakeCall, FakeChatModel, disagreeing_responder

T = TypeVar("T")

ROLES = ("proposer", "judge", "moderator", "aggregator")
PRESETS: tuple[Preset, ...] = ("smoa", "moa", "single")
PROMPT = "What is 2 + 3 * 4? Explain briefly."
GOAL_RATIO = 1.05
GOAL_OVERHEAD_MS = 15.0
SCALING_N = (4, 8, 16, 32)
SCALING_LAYERS = (1, 2, 3, 4, 5)

# Run sizes of a full run and of a --quick smoke run; command-line flags override them.
PROFILES: dict[str, dict[str, float]] = {
    "full": {
        "repeats": 10,
        "queries": 200,
        "warmup": 20,
        "scaling_queries": 50,
        "scaling_warmup": 5,
        "latency_scale": 1.0,
    },
    "quick": {
        "repeats": 2,
        "queries": 5,
        "warmup": 1,
        "scaling_queries": 1,
        "scaling_warmup": 0,
        "latency_scale": 0.05,
    },
}


# -- a fake that simulates per-role latency and measures its own cost ------------------------------


@dataclass(frozen=True)
class TimedCall:
    """One model call as the benchmark sees it: who made it and its simulated latency."""

    role: str
    layer: int
    index: int | None
    delay_s: float


@dataclass
class CallLog:
    """Calls of one query, and the time the event loop spent running inside the model calls."""

    calls: list[TimedCall] = field(default_factory=list)
    busy_s: float = 0.0


@types.coroutine
def _busy_time(awaitable: Awaitable[T], log: CallLog) -> Generator[Any, Any, T]:
    """Await ``awaitable``, adding to ``log.busy_s`` only the time it runs, not while suspended.

    Drives the awaitable step by step like ``await`` does; each step runs until the next
    suspension, so time in which other tasks (e.g. sibling proposers) run is not counted.
    """
    steps = awaitable.__await__()
    value: Any = None
    error: BaseException | None = None
    while True:
        start = time.perf_counter()
        try:
            request = steps.send(value) if error is None else steps.throw(error)
        except StopIteration as done:
            return done.value
        finally:
            log.busy_s += time.perf_counter() - start
        try:
            value, error = (yield request), None
        except BaseException as exc:  # cancellation and the like go to the awaited steps
            value, error = None, exc


class TimedFakeChatModel(FakeChatModel):
    """``FakeChatModel`` with a fixed latency per role plus the seeded jitter; logs every call."""

    role_latency_s: dict[str, float] = Field(default_factory=dict)
    log: CallLog = Field(default_factory=CallLog)

    def new_query(self) -> CallLog:
        """Start a fresh log (and forget the base class's call list) for the next query."""
        self.calls.clear()
        self.log = CallLog()
        return self.log

    def _call_info(self, messages: list[BaseMessage]) -> tuple[FakeCall, float]:
        call, jitter = super()._call_info(messages)  # latency_s is 0: the delay is the jitter
        delay = self.role_latency_s.get(call.role, 0.0) + jitter
        self.log.calls.append(TimedCall(call.role, call.layer, call.index, delay))
        return call, delay

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> AIMessage:
        """The base call, with its running time added to the log."""
        return await _busy_time(super().ainvoke(input, config, **kwargs), self.log)

    async def astream(
        self, input: Any, config: Any = None, **kwargs: Any
    ) -> AsyncIterator[AIMessageChunk]:
        """The base stream, with the running time of each step added to the log."""
        log = self.log
        stream = super().astream(input, config, **kwargs)
        while True:
            try:
                chunk = await _busy_time(anext(stream), log)
            except StopAsyncIteration:
                return
            yield chunk


class FakeBackend:
    """Model factory serving one shared fake for every role."""

    def __init__(self, model: TimedFakeChatModel) -> None:
        self.model = model

    def __call__(self, request: ModelRequest) -> TimedFakeChatModel:
        return self.model


# -- measuring -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """Summary of repeated measurements."""

    median: float
    p90: float
    max: float
    mean: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        """Median, 90th percentile (nearest rank), max and mean of ``values``."""
        ordered = sorted(values)
        p90 = ordered[max(0, math.ceil(0.9 * len(ordered)) - 1)]
        return cls(statistics.median(ordered), p90, ordered[-1], statistics.fmean(ordered))


@dataclass(frozen=True)
class QueryRun:
    """One graph run: wall and CPU time, layers run, and the model calls (with their time)."""

    wall_s: float
    cpu_s: float
    layers_run: int
    log: CallLog

    def call_counts(self) -> dict[str, int]:
        """Calls per role, in the order of ``ROLES``."""
        counts = Counter(call.role for call in self.log.calls)
        return {role: counts[role] for role in sorted(counts, key=_role_order)}

    def critical_path_s(self) -> float:
        """Slowest proposer of each layer, plus every other call (they are sequential)."""
        slowest: dict[int, float] = {}
        sequential = 0.0
        for call in self.log.calls:
            if call.role == "proposer":
                slowest[call.layer] = max(slowest.get(call.layer, 0.0), call.delay_s)
            else:
                sequential += call.delay_s
        return sum(slowest.values()) + sequential


def _role_order(role: str) -> int:
    return ROLES.index(role) if role in ROLES else len(ROLES)


Graph = CompiledStateGraph[Any, Any, Any, Any]


def compile_graph(config: SMoAConfig, backend: FakeBackend) -> Graph:
    """The SMoA graph as users compile it (no checkpointer), on the fake backend."""
    return build_smoa_graph(config, model_factory=backend).compile()


async def run_query(graph: Graph, backend: FakeBackend) -> QueryRun:
    """Run one query and time it."""
    log = backend.model.new_query()
    cpu, start = time.process_time(), time.perf_counter()
    out = await graph.ainvoke({"prompt": PROMPT})
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    return QueryRun(wall, cpu, len(out["layers"]), log)


@dataclass(frozen=True)
class Settings:
    """What to run; latencies are per role, in seconds, before the jitter."""

    repeats: int
    queries: int
    warmup: int
    scaling_queries: int
    scaling_warmup: int
    latencies_s: dict[str, float]
    jitter_s: float
    seed: int


@dataclass(frozen=True)
class CriticalPathResult:
    """Wall time against the ideal (critical path) for one preset."""

    preset: str
    n_proposers: int
    k: int
    max_layers: int
    layers_run: int
    calls: dict[str, int]
    wall_ms: Stats
    critical_path_ms: Stats
    ratio: Stats


@dataclass(frozen=True)
class OverheadResult:
    """Per-query time with zero-latency fakes.

    ``cpu_ms`` is the process's CPU time (steadier than wall time on a busy machine);
    ``model_ms`` the time running inside the fake chat-model calls; ``graph_ms`` wall minus that.
    """

    n_proposers: int
    k: int
    max_layers: int
    layers_run: int
    queries: int
    calls: dict[str, int]
    total_ms: Stats
    cpu_ms: Stats
    model_ms: Stats
    graph_ms: Stats


@dataclass(frozen=True)
class Report:
    """Every figure of the benchmark, and the machine it ran on."""

    environment: dict[str, Any]
    settings: Settings
    goals: dict[str, float]
    critical_path: list[CriticalPathResult]
    overhead: OverheadResult
    scaling_n: list[OverheadResult]
    scaling_layers: list[OverheadResult]


async def measure_critical_path(preset: Preset, settings: Settings) -> CriticalPathResult:
    """Run a preset ``repeats`` times with simulated latencies; compare wall to critical path.

    smoa runs with every role at work (``EVERY_ROLE``): judge, moderator and aggregator calls
    are on its critical path."""
    config = SMoAConfig(preset=preset, model="fake", **(EVERY_ROLE if preset == "smoa" else {}))
    warm = FakeBackend(TimedFakeChatModel(responder=disagreeing_responder))
    await run_query(compile_graph(config, warm), warm)  # warm-up at zero latency
    backend = FakeBackend(
        TimedFakeChatModel(
            responder=disagreeing_responder,
            role_latency_s=settings.latencies_s,
            jitter_s=settings.jitter_s,
            seed=settings.seed,
        )
    )
    graph = compile_graph(config, backend)
    gc.collect()
    runs = [await run_query(graph, backend) for _ in range(settings.repeats)]
    walls = [run.wall_s * 1e3 for run in runs]
    paths = [run.critical_path_s() * 1e3 for run in runs]
    return CriticalPathResult(
        preset=preset,
        n_proposers=config.n_proposers,
        k=config.k,
        max_layers=config.max_layers,
        layers_run=runs[-1].layers_run,
        calls=runs[-1].call_counts(),
        wall_ms=Stats.of(walls),
        critical_path_ms=Stats.of(paths),
        ratio=Stats.of([wall / path for wall, path in zip(walls, paths, strict=True)]),
    )


async def measure_overhead(
    n: int, k: int, layers: int, queries: int, warmup: int, seed: int
) -> OverheadResult:
    """Per-query time of the smoa graph with zero-latency fakes, after ``warmup`` queries."""
    fields = {**EVERY_ROLE, "n_proposers": n, "k": k, "max_layers": layers, "model": "fake"}
    config = SMoAConfig(preset="smoa", **fields)
    backend = FakeBackend(TimedFakeChatModel(responder=disagreeing_responder, seed=seed))
    graph = compile_graph(config, backend)
    for _ in range(warmup):
        await run_query(graph, backend)
    gc.collect()
    runs = [await run_query(graph, backend) for _ in range(queries)]
    return OverheadResult(
        n_proposers=n,
        k=k,
        max_layers=layers,
        layers_run=runs[-1].layers_run,
        queries=queries,
        calls=runs[-1].call_counts(),
        total_ms=Stats.of([run.wall_s * 1e3 for run in runs]),
        cpu_ms=Stats.of([run.cpu_s * 1e3 for run in runs]),
        model_ms=Stats.of([run.log.busy_s * 1e3 for run in runs]),
        graph_ms=Stats.of([(run.wall_s - run.log.busy_s) * 1e3 for run in runs]),
    )


async def run_benchmark(settings: Settings) -> Report:
    """All three parts, one after the other."""
    load_before = _load_average()
    critical = [await measure_critical_path(p, settings) for p in PRESETS]
    overhead = await measure_overhead(4, 2, 3, settings.queries, settings.warmup, settings.seed)
    scale = (settings.scaling_queries, settings.scaling_warmup, settings.seed)
    scaling_n = [await measure_overhead(n, 2, 3, *scale) for n in SCALING_N]
    scaling_layers = [await measure_overhead(4, 2, layers, *scale) for layers in SCALING_LAYERS]
    goals = {"wall_over_critical_path": GOAL_RATIO, "overhead_ms_per_query": GOAL_OVERHEAD_MS}
    environment = {
        "python": platform.python_version(),
        "langgraph": version("langgraph"),
        "langchain_core": version("langchain-core"),
        "cpus": os.cpu_count(),
        "load_before": load_before,
        "load_after": _load_average(),
    }
    return Report(environment, settings, goals, critical, overhead, scaling_n, scaling_layers)


def _load_average() -> list[float]:
    """The 1, 5 and 15-minute load averages: other work on the machine distorts wall times."""
    return [round(load, 2) for load in os.getloadavg()]


# -- command line and printing ---------------------------------------------------------------


def _at_least(minimum: float, kind: type[int] | type[float]) -> Callable[[str], float]:
    """An argparse type: a number of ``kind`` that is at least ``minimum``."""

    def parse(text: str) -> float:
        value = kind(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a number >= {minimum}, got {value}")
        return value

    return parse


# Flags that set run sizes: help text and type; their defaults come from PROFILES.
SIZE_FLAGS: dict[str, tuple[str, Callable[[str], float]]] = {
    "repeats": ("runs per preset in part 1", _at_least(1, int)),
    "queries": ("timed queries in part 2", _at_least(1, int)),
    "warmup": ("untimed queries before part 2", _at_least(0, int)),
    "scaling_queries": ("timed queries per scaling point", _at_least(1, int)),
    "scaling_warmup": ("untimed queries before each scaling point", _at_least(0, int)),
    "latency_scale": ("factor applied to every simulated latency", _at_least(0, float)),
}
DEFAULT_LATENCY_MS = {"proposer": 200.0, "judge": 100.0, "moderator": 100.0, "aggregator": 200.0}


def parse_settings(argv: Sequence[str] | None) -> tuple[Settings, Path | None]:
    """Settings from the command line (``--quick`` changes the defaults), and the JSON path."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fast smoke run (few repetitions)")
    for name, (text, kind) in SIZE_FLAGS.items():
        full, quick = PROFILES["full"][name], PROFILES["quick"][name]
        flag = "--" + name.replace("_", "-")
        parser.add_argument(flag, type=kind, help=f"{text} (default {full:g}; --quick {quick:g})")
    for role, default in DEFAULT_LATENCY_MS.items():
        help_text = f"{role} latency in ms, before jitter (default {default:g})"
        parser.add_argument(
            f"--{role}-ms", type=_at_least(0, float), default=default, help=help_text
        )
    help_text = "seeded uniform jitter U[0, this) ms added to every call (default 100)"
    parser.add_argument("--jitter-ms", type=_at_least(0, float), default=100.0, help=help_text)
    parser.add_argument("--seed", type=int, default=0, help="seed of the jitter")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the figures here")
    args = parser.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "full"]
    sizes = {
        name: default if getattr(args, name) is None else getattr(args, name)
        for name, default in profile.items()
    }
    scale = sizes.pop("latency_scale") / 1e3
    if args.proposer_ms * scale <= 0:
        parser.error("the proposer latency must be positive (the critical path divides by it)")
    settings = Settings(
        **{name: int(value) for name, value in sizes.items()},
        latencies_s={role: getattr(args, f"{role}_ms") * scale for role in ROLES},
        jitter_s=args.jitter_ms * scale,
        seed=args.seed,
    )
    return settings, args.json


def _verdict(value: float, goal: float) -> str:
    return "ok" if value <= goal else "OVER"


def _calls(calls: dict[str, int]) -> str:
    return " ".join(f"{role[0]}{count}" for role, count in calls.items())


def print_report(report: Report) -> None:
    """The figures as readable tables."""
    s, env = report.settings, report.environment
    latencies = ", ".join(f"{role} {v * 1e3:g}" for role, v in s.latencies_s.items())
    print(
        f"Python {env['python']}, langgraph {env['langgraph']}, langchain-core "
        f"{env['langchain_core']}, {env['cpus']} CPUs, load average {env['load_before']} before "
        f"and {env['load_after']} after"
    )
    print(
        f"Simulated latency (ms): {latencies}; + jitter U[0, {s.jitter_s * 1e3:g}), seed {s.seed}"
    )
    print("Calls per run: p=proposer j=judge m=moderator a=aggregator")

    print(
        f"\n1. Wall time vs critical path ({s.repeats} runs per preset; "
        f"goal wall/critical <= {GOAL_RATIO})"
    )
    print(
        f"{'preset':<7} {'n':>2} {'k':>2} {'layers':>6}  {'calls':<13} {'wall ms med/max':>17} "
        f"{'critical ms med/max':>21} {'wall/critical med/max':>23}"
    )
    for r in report.critical_path:
        median, top = (_verdict(value, GOAL_RATIO) for value in (r.ratio.median, r.ratio.max))
        print(
            f"{r.preset:<7} {r.n_proposers:>2} {r.k:>2} {r.layers_run:>6}  {_calls(r.calls):<13} "
            f"{r.wall_ms.median:>8.1f}/{r.wall_ms.max:<8.1f} "
            f"{r.critical_path_ms.median:>10.1f}/{r.critical_path_ms.max:<10.1f} "
            f"{r.ratio.median:>11.4f}/{r.ratio.max:<7.4f}  median {median}, max {top}"
        )

    o = report.overhead
    print(
        f"\n2. Graph overhead with zero-latency fakes: smoa n={o.n_proposers} k={o.k} "
        f"layers={o.layers_run} ({_calls(o.calls)}), {o.queries} queries after {s.warmup} warm-up"
    )
    rows = (
        ("per query, wall", o.total_ms),
        ("per query, process CPU", o.cpu_ms),
        ("inside the fake model calls", o.model_ms),
        ("outside them (graph + nodes)", o.graph_ms),
    )
    for label, stats in rows:
        print(
            f"  {label:<29} median {stats.median:6.2f} ms   p90 {stats.p90:6.2f} ms   "
            f"mean {stats.mean:6.2f} ms"
        )
    print(
        f"  goal <= {GOAL_OVERHEAD_MS:g} ms of pure graph overhead per query (median outside the "
        f"model calls): {_verdict(o.graph_ms.median, GOAL_OVERHEAD_MS)}; with the fake models' "
        f"own LangChain call path (median wall): {_verdict(o.total_ms.median, GOAL_OVERHEAD_MS)}"
    )

    print(
        f"\n3. Scaling with zero-latency fakes, k=2 ({s.scaling_queries} queries per point after "
        f"{s.scaling_warmup} warm-up; medians except p90)"
    )
    print(
        f"{'n':>3} {'layers':>6} {'calls':>5} {'wall ms':>8} {'p90 ms':>8} {'CPU ms':>8} "
        f"{'model ms':>9} {'graph ms':>9} {'wall ms/call':>13}"
    )
    for point in [*report.scaling_n, *report.scaling_layers]:
        calls = sum(point.calls.values())
        print(
            f"{point.n_proposers:>3} {point.layers_run:>6} {calls:>5} "
            f"{point.total_ms.median:>8.2f} {point.total_ms.p90:>8.2f} {point.cpu_ms.median:>8.2f} "
            f"{point.model_ms.median:>9.2f} {point.graph_ms.median:>9.2f} "
            f"{point.total_ms.median / calls:>13.3f}"
        )


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print it, optionally write JSON; return the figures as a dict."""
    settings, json_path = parse_settings(argv)
    with tracing_context(enabled=False):  # a LangSmith tracer would distort every figure
        report = asyncio.run(run_benchmark(settings))
    print_report(report)
    figures = asdict(report)
    if json_path is not None:
        json_path.write_text(json.dumps(figures, indent=2), encoding="utf-8")
        print(f"\nFigures written to {json_path}")
    return figures
