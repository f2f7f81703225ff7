"""Fault injection: proposers that fail, hang or babble, and model endpoints that misbehave.

1. Agent faults (fake models, seeded): many runs in which a share of the proposer calls fail at
   random (connection error, hang past the timeout, empty text, garbage text). Every run must
   end with an answer, or with ``AllProposersFailedError`` when a layer lost every proposer
   (counted apart: that is the documented outcome, not a crash). Anything else is a crash, a
   run past its deadline is a hang, and every injected failure must be exactly one failed call
   record in the run's state.
2. Endpoint faults (OpenAI-compatible servers on 127.0.0.1 started here): nothing listening,
   401, 429, 500, a body that is not JSON, a server that never answers. Each must end with one
   clear error within the bound of ``docs/reliability.md``, retrying only what is transient.

    PYTHONPATH=. .venv/bin/python benchmarks/faults.py [--runs 200] [--rate 0.3] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from langgraph.checkpoint.memory import InMemorySaver

from smoa_graph import AllProposersFailedError, SMoAConfig, build_smoa_graph
from smoa_graph.state import CallRecord
from smoa_graph.testing import (
    ENDPOINT_CASES,
    FAULTS,
    Mode,
    ScriptedEndpoint,
    faulty_factory,
    retried,
    time_bound_s,
)

# -- 1. agent faults ---------------------------------------------------------------------------


@dataclass
class Tally:
    """Outcomes of a batch of runs with injected proposer faults."""

    runs: int = 0
    answered: int = 0
    all_failed: int = 0
    crashed: int = 0
    hung: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    recorded: int = 0
    unaccounted_runs: int = 0
    crashes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No crash, no hang, every injected failure recorded."""
        return not (self.crashed or self.hung or self.unaccounted_runs)


async def _faulty_run(config: SMoAConfig, tally: Tally, run: int, rate: float, seed: int) -> None:
    factory = faulty_factory(rate=rate, seed=seed * 1_000_003 + run)
    graph = build_smoa_graph(config, model_factory=factory).compile(checkpointer=InMemorySaver())
    thread: Any = {"configurable": {"thread_id": f"run-{run}"}}
    deadline = config.max_layers * (config.max_attempts * config.proposer_timeout_s + 2) + 10
    calls: list[CallRecord] = []
    tally.runs += 1
    try:
        state = await asyncio.wait_for(
            graph.ainvoke({"prompt": f"question {run}"}, thread), deadline
        )
        calls = state["calls"]
        tally.answered += 1
    except AllProposersFailedError as exc:  # earlier layers are in the checkpoint, this one here
        calls = [*(await graph.aget_state(thread)).values.get("calls", []), *exc.calls]
        tally.all_failed += 1
    except TimeoutError:
        tally.hung += 1
    except Exception as exc:
        tally.crashed += 1
        tally.crashes.append(f"run {run}: {type(exc).__name__}: {exc}"[:200])
    model = factory.models.get("faulty")  # type: ignore[attr-defined]
    injected = model.injected if model is not None else Counter()
    recorded = sum(1 for c in calls if c["role"] == "proposer" and not c["ok"])
    tally.injected.update(injected)
    tally.recorded += recorded
    tally.unaccounted_runs += recorded != sum(injected.values())


async def agent_faults(
    config: SMoAConfig, runs: int, rate: float, seed: int, concurrency: int = 25
) -> Tally:
    """``runs`` runs of ``config`` whose proposers (spec ``faulty``) fail at ``rate``."""
    tally = Tally()
    semaphore = asyncio.Semaphore(concurrency)

    async def bounded(run: int) -> None:
        async with semaphore:
            await _faulty_run(config, tally, run, rate, seed)

    await asyncio.gather(*(bounded(run) for run in range(runs)))
    return tally


# -- 2. endpoint faults ------------------------------------------------------------------------


async def endpoint_fault(mode: Mode, **fields: Any) -> dict[str, Any]:
    """Run one layer against an endpoint failing as ``mode``: error, time, requests."""
    with ScriptedEndpoint(mode) as endpoint:
        config = SMoAConfig(model=f"m@{endpoint.base_url}", **fields)
        graph = build_smoa_graph(config).compile()
        started = time.perf_counter()
        try:
            await graph.ainvoke({"prompt": "What is 6 times 7?"})
            error = None
        except Exception as exc:
            error = exc
        elapsed = time.perf_counter() - started
        requests = endpoint.requests
    attempts = config.max_attempts if retried(mode) else 1
    return {
        "error": error,
        "seconds": elapsed,
        "bound_s": time_bound_s(config),
        "requests": requests,
        "expected_requests": 0 if mode == "closed" else config.n_proposers * attempts,
    }


ENDPOINT_FIELDS: dict[str, Any] = {
    "n_proposers": 2,
    "k": 1,
    "max_layers": 1,
    "max_attempts": 2,
    "retry_backoff_s": 0.2,
    "request_timeout_s": 1.0,
    "proposer_timeout_s": 5.0,
}


# -- report ------------------------------------------------------------------------------------


def _tally_line(name: str, tally: Tally, seconds: float) -> str:
    kinds = ", ".join(f"{k} {tally.injected[k]}" for k in FAULTS)
    injected = sum(tally.injected.values())
    return (
        f"| {name} | {tally.runs} | {tally.answered} | {tally.all_failed} | {tally.crashed} | "
        f"{tally.hung} | {injected} ({kinds}) | {tally.recorded} | "
        f"{'yes' if tally.recorded == injected and not tally.unaccounted_runs else 'NO'} | "
        f"{seconds:.1f} |"
    )


async def main(args: argparse.Namespace) -> int:
    """Run both parts and print their tables; exit status 1 if any guarantee failed."""
    common = {
        "model": "fake",
        "moderator": "never",
        "max_layers": 2,
        "retry_backoff_s": 0.0,
        "proposer_timeout_s": 0.5,
    }
    scenarios = {
        "n=4 k=2, 3 attempts": SMoAConfig(
            **common, n_proposers=4, k=2, max_attempts=3, proposer_models=["faulty"] * 4
        ),
        "n=2 k=1, 1 attempt": SMoAConfig(
            **common, n_proposers=2, k=1, max_attempts=1, proposer_models=["faulty"] * 2
        ),
    }
    print(
        f"## Agent faults: {args.runs} runs per scenario, {args.rate:.0%} of proposer calls fail "
        f"(seed {args.seed}), 2 layers, proposer timeout 0.5 s\n"
    )
    print(
        "| scenario | runs | answered | all proposers failed | crashed | hung | "
        "failures injected | failures recorded | all accounted | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    healthy = True
    for name, config in scenarios.items():
        started = time.perf_counter()
        tally = await agent_faults(config, args.runs, args.rate, args.seed)
        print(_tally_line(name, tally, time.perf_counter() - started))
        for crash in tally.crashes[:5]:
            print(f"  crash: {crash}")
        healthy &= tally.ok
    print(
        "\n'all proposers failed' runs end with AllProposersFailedError (a clear error, the "
        "documented outcome); a crash is any other exception; hung = past its deadline.\n"
    )
    fields = ENDPOINT_FIELDS
    print(
        f"## Endpoint faults: n={fields['n_proposers']}, max_attempts={fields['max_attempts']}, "
        f"request_timeout_s={fields['request_timeout_s']}, "
        f"proposer_timeout_s={fields['proposer_timeout_s']}, "
        f"retry_backoff_s={fields['retry_backoff_s']}\n"
    )
    print("| endpoint | error | seconds | hard bound | requests (expected) | ok |")
    print("|---|---|---|---|---|---|")
    for name, mode in ENDPOINT_CASES:
        result = await endpoint_fault(mode, **fields)
        error = result["error"]
        fine = (
            isinstance(error, AllProposersFailedError)
            and result["seconds"] <= result["bound_s"]
            and result["requests"] == result["expected_requests"]
        )
        healthy &= fine
        text = "none" if error is None else f"{type(error).__name__}: {error}"
        print(
            f"| {name} | {text[:110].replace('|', '/')} | {result['seconds']:.2f} | "
            f"{result['bound_s']:.1f} | {result['requests']} ({result['expected_requests']}) | "
            f"{'yes' if fine else 'NO'} |"
        )
    return 0 if healthy else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per agent-fault scenario")
    parser.add_argument("--rate", type=float, default=0.3, help="share of proposer calls failing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    raise SystemExit(asyncio.run(main(parser.parse_args())))
