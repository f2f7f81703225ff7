"""Sync runs on the background loop: fork safety, no deadlock, no client shared across loops."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap

import pytest

from smoa_graph import build_smoa_graph
from smoa_graph.sync_loop import SyncRunInLoopError, background_loop, blocking
from smoa_graph.testing import ScriptedEndpoint, every_role, fake_factory

ONE_LAYER = {"n_proposers": 2, "k": 1, "max_layers": 1, "max_attempts": 1}


def run_script(script: str) -> str:
    """Run ``script`` in a fresh interpreter (bounded) and return what it printed."""
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_a_forked_child_runs_sync_runs_on_a_loop_of_its_own() -> None:
    printed = run_script(
        """
        import os, signal
        from smoa_graph import SMoAConfig, build_smoa_graph
        from smoa_graph.testing import fake_factory

        config = SMoAConfig(model="fake", n_proposers=2, k=1, max_layers=1)
        graph = build_smoa_graph(config, model_factory=fake_factory()).compile()
        graph.invoke({"prompt": "before the fork?"})  # the parent's loop thread is running
        pid = os.fork()
        if pid == 0:
            signal.alarm(30)  # a hang kills the child instead of the test
            state = graph.invoke({"prompt": "in the child?"})
            os._exit(0 if "42" in state["answer"] else 1)
        _, status = os.waitpid(pid, 0)
        print(os.waitstatus_to_exitcode(status))
        """
    )
    assert printed == "0"


def test_a_sync_run_from_the_loops_own_thread_fails_instead_of_deadlocking() -> None:
    async def node() -> str:
        return "never reached"

    async def inside_the_loop() -> str:
        return blocking(node)()

    future = asyncio.run_coroutine_threadsafe(inside_the_loop(), background_loop())
    with pytest.raises(SyncRunInLoopError, match="use ainvoke/astream there"):
        future.result(timeout=10)


def test_invoke_inside_a_node_of_a_sync_run_is_a_clear_proposer_error() -> None:
    inner = build_smoa_graph(
        every_role(model="fake", **ONE_LAYER), model_factory=fake_factory()
    ).compile()

    def responder(call: object) -> str:
        return str(inner.invoke({"prompt": "nested?"})["answer"])

    outer = build_smoa_graph(
        every_role(model="fake", **ONE_LAYER), model_factory=fake_factory(responder=responder)
    ).compile()
    with pytest.raises(Exception, match="use ainvoke/astream there"):
        outer.invoke({"prompt": "q?"})


def test_invoke_and_ainvoke_mixed_on_one_graph_against_an_http_endpoint() -> None:
    with ScriptedEndpoint() as endpoint:
        config = every_role(model=f"m@{endpoint.base_url}", retry_backoff_s=0, **ONE_LAYER)
        graph = build_smoa_graph(config).compile()
        answers = []
        for round_ in range(2):
            answers.append(graph.invoke({"prompt": f"sync {round_}?"})["answer"])
            answers.append(asyncio.run(graph.ainvoke({"prompt": f"async {round_}?"}))["answer"])
        assert answers == ["Final answer: 42"] * 4
        assert endpoint.requests == 4 * 4  # 2 proposers, judge, aggregator per run
