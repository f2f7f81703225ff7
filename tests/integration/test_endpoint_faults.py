"""Endpoint faults end to end: one clear line, a non-zero exit, within a stated time bound.

Servers are started here on 127.0.0.1 (``smoa_graph.testing.ScriptedEndpoint``, and a
llama-server of our own that is killed mid-run); nothing else is contacted.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from smoa_graph import AllProposersFailedError, SMoAConfig, build_smoa_graph
from smoa_graph import testing as faults
from smoa_graph.cli import main
from smoa_graph.local_server import (
    LocalServer,
    LocalServerError,
    find_model_file,
    find_server_binary,
    free_port,
)

BOUNDS = ["--max-attempts", "2", "--retry-backoff-s", "0.2", "--request-timeout-s", "1"]
BOUNDS += ["--proposer-timeout-s", "5"]
BOUND_CONFIG = SMoAConfig(
    max_attempts=2, retry_backoff_s=0.2, request_timeout_s=1.0, proposer_timeout_s=5.0
)


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, float]:
    started = time.perf_counter()
    code = main(argv)
    return code, capsys.readouterr().err, time.perf_counter() - started


@pytest.mark.parametrize(("name", "mode"), faults.ENDPOINT_CASES, ids=lambda v: str(v))
def test_remote_endpoint_faults_end_in_one_line_within_the_bound(
    name: str, mode: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    with faults.ScriptedEndpoint(mode) as endpoint:
        argv = ["ask", "What is 6*7?", "--model", f"m@{endpoint.base_url}", "-n", "2", "-k", "1"]
        code, err, seconds = run_cli([*argv, "--quiet", *BOUNDS], capsys)
        requests = endpoint.requests
    assert code == 1 and err.count("\n") == 1 and err.startswith("smoa: error: all 2 proposers")
    assert seconds <= faults.time_bound_s(BOUND_CONFIG) + 2  # + interpreter overhead
    attempts = 2 if faults.retried(mode) else 1
    assert requests == (0 if mode == "closed" else 2 * attempts)


def test_local_model_not_running(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SMOA_LOCAL_BASE_URL", f"http://127.0.0.1:{free_port()}/v1")
    code, err, seconds = run_cli(["ask", "q", "--model", "local", "--quiet", *BOUNDS], capsys)
    assert code == 1 and err.count("\n") == 1
    assert "all 4 proposers of layer 1 failed" in err and "Connection error" in err
    assert seconds <= faults.time_bound_s(BOUND_CONFIG) + 2


def test_port_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        find_server_binary(), find_model_file()
    except LocalServerError as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("SMOA_CACHE_DIR", str(tmp_path))  # no detached server to reuse
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        code, err, seconds = run_cli(["serve-local", "--port", str(port)], capsys)
    assert code == 1 and f"port {port} on 127.0.0.1 is busy" in err and seconds < 5


async def test_local_server_killed_mid_run_fails_within_the_bound() -> None:
    try:
        server = LocalServer(parallel=2)
    except LocalServerError as exc:
        pytest.skip(str(exc))
    server.start()
    try:
        config = BOUND_CONFIG.model_copy(
            update={
                "model": f"smollm2@{server.base_url}",
                "n_proposers": 2,
                "k": 1,
                "max_layers": 1,
                "max_tokens": 256,
            }
        )
        graph = build_smoa_graph(config).compile()
        started = time.perf_counter()
        killed_at: float | None = None
        with pytest.raises(AllProposersFailedError) as info:
            async for _mode, chunk in graph.astream(
                {"prompt": "Write a long story about a cat."},
                stream_mode=["messages", "updates"],
                subgraphs=False,
            ):
                if killed_at is None and _mode == "messages" and chunk[0].text:
                    assert server.pid is not None
                    os.kill(server.pid, signal.SIGKILL)  # mid-stream: tokens are flowing
                    killed_at = time.perf_counter()
        assert killed_at is not None
        after_kill = time.perf_counter() - killed_at
        assert after_kill <= faults.time_bound_s(config) + 1
        errors = [c["error"] for c in info.value.calls]
        assert len(errors) == 2 * config.max_attempts and all(errors)
        print(
            f"\nkilled mid-run: clear error {after_kill:.2f} s after the kill, "
            f"{time.perf_counter() - started:.2f} s in all; errors: {sorted(set(errors))}"
        )
    finally:
        server.stop()
