"""Kill a checkpointed run mid-layer, for the resume tests of every checkpoint database.

A worker process runs the graph on fake models: proposers 2 and 3 ("slow") take
``$SMOA_FAKE_SLOW_S`` seconds (60 unless set), the others answer at once, and every finished
call is logged to argv[1] as "role layer index". The test kills it once the two fast
proposers' results are checkpointed, then resumes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

FAKES = textwrap.dedent(
    """
    import os
    import sys
    from smoa_graph.testing import FakeChatModel, default_responder

    def responder(call):
        with open(sys.argv[1], "a") as log:
            log.write(f"{call.role} {call.layer} {call.index}\\n")
        return default_responder(call)

    models = {}

    def factory(request):
        slow = float(os.environ.get("SMOA_FAKE_SLOW_S", "60"))
        latency = slow if request.spec == "slow" else 0.0
        if request.spec not in models:
            models[request.spec] = FakeChatModel(
                spec=request.spec, responder=responder, latency_s=latency, record=False
            )
        return models[request.spec]
    """
)
CLI_WORKER = FAKES + textwrap.dedent(
    """
    from smoa_graph.cli import main

    sys.exit(main(sys.argv[2:], model_factory=factory))
    """
)
"""Runs ``smoa ask`` (argv[2:]) on the fakes."""

ASK_ARGV = ["ask", "What is 6*7?", "--model", "fast", "-n", "4", "-k", "2", "--layers", "1"]
ASK_ARGV += ["--proposer-models", "fast", "fast", "slow", "slow", "--quiet"]
ASK_ARGV += ["--selection", "judge", "--final-layer-judge", "--finish", "aggregate"]
"""A one-layer question on two fast and two slow proposers, judged and aggregated."""

RESUMED_CALLS = {
    ("proposer", 2): 1,
    ("proposer", 3): 1,
    ("judge", None): 1,
    ("aggregator", None): 1,
}
"""What the resumed run still has to call: the killed run's finished proposers are kept."""


def logged_calls(log: Path) -> Counter[tuple[str, int | None]]:
    """(role, index) of each call a worker logged."""
    calls: Counter[tuple[str, int | None]] = Counter()
    for line in log.read_text().splitlines():
        role, _layer, index = line.split()
        calls[(role, None if index == "None" else int(index))] += 1
    return calls


def kill_after_the_fast_proposers(
    tmp_path: Path, worker: str, argv: list[str], saved: Callable[[], int]
) -> None:
    """Run ``worker``; SIGKILL it once ``saved()`` counts the two fast proposers' results."""
    log, script = tmp_path / "calls.log", tmp_path / "worker.py"
    script.write_text(worker)
    process = subprocess.Popen([sys.executable, str(script), str(log), *argv])
    try:
        deadline = time.monotonic() + 60
        while saved() < 2:
            assert process.poll() is None, "the worker ended before it was killed"
            assert time.monotonic() < deadline, "the fast proposers never finished"
            time.sleep(0.05)
        process.send_signal(signal.SIGKILL)
    finally:
        process.kill()
        process.wait(timeout=10)
    assert sorted(log.read_text().splitlines()) == ["proposer 1 0", "proposer 1 1"]
