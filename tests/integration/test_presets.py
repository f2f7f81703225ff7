"""Every preset end to end on the embedded local model (SmolLM2-135M on llama-server).

These check plumbing and accounting, not answer quality: a 135M model answers poorly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from smoa_graph import SMoAConfig, build_smoa_graph
from smoa_graph.testing import every_role

SMALL = {"model": "local", "max_tokens": 48, "aggregator_max_tokens": 48}
QUESTION = "What is 12 + 30? Answer with the number."


@pytest.fixture(autouse=True)
def _use_session_server(local_base_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """'local' models resolve to the test session's server."""
    monkeypatch.setenv("SMOA_LOCAL_BASE_URL", local_base_url)


def ok_calls(state: dict) -> list[dict]:
    """Successful calls; a failed attempt that a retry fixed is recorded beside them."""
    return [c for c in state["calls"] if c["ok"]]


def check_calls(state: dict) -> None:
    """Every successful call has real usage; failed attempts say why; the summary adds them up."""
    assert all(c["error"] for c in state["calls"] if not c["ok"])
    for call in ok_calls(state):
        assert call["input_tokens"] > 0 and call["output_tokens"] > 0, call
        assert call["model"] == "smollm2"
        if call["role"] in ("proposer", "aggregator"):
            assert call["output_tokens"] <= 48, call  # max_tokens is honoured
    total = state["summary"]["total"]
    assert total["calls"] == len(state["calls"])
    assert total["total_tokens"] == sum(
        c["input_tokens"] + c["output_tokens"] for c in state["calls"]
    )


@pytest.mark.parametrize(
    ("fields", "layers", "calls"),
    [
        ({"preset": "single"}, 1, 1),
        ({"preset": "moa", "n_proposers": 3, "k": 3, "max_layers": 2}, 2, 3 + 3 + 1),
        ({"preset": "self-consistency", "n_proposers": 3}, 1, 3),
        ({"preset": "self-moa", "n_proposers": 3}, 1, 3 + 1),
        ({"preset": "mad", "n_proposers": 2, "max_layers": 2}, 2, 2 + 2),
    ],
    ids=lambda value: value.get("preset") if isinstance(value, dict) else str(value),
)
async def test_fixed_presets(fields: dict, layers: int, calls: int) -> None:
    graph = build_smoa_graph(SMoAConfig(**SMALL, **fields)).compile()
    state = await graph.ainvoke({"prompt": QUESTION})
    assert state["answer"].strip()
    # At temperature 0.7 the 135M model now and then answers with no usable text: that proposer
    # is recorded as failed (an unusable answer is not retried) and its layer goes on.
    failed = [c for layer in state["layers"] for c in layer["candidates"] if not c["ok"]]
    assert all("UnusableResponseError" in c["error"] for c in failed), failed
    # a vote over answers with no extractable number makes one call that picks the most
    # consistent response (Universal Self-Consistency)
    vote = state.get("vote") or {}
    if fields["preset"] in ("self-consistency", "mad"):
        assert vote["method"].startswith(("majority", "most consistent")), vote
    calls += vote.get("method", "").startswith("most consistent")
    assert len(state["layers"]) == layers and len(ok_calls(state)) + len(failed) == calls
    check_calls(state)


async def test_smoa_paper_on_the_local_model(tmp_path: Path) -> None:
    config = SMoAConfig(**SMALL, preset="smoa-paper", n_proposers=3, roles_cache_dir=str(tmp_path))
    state = await build_smoa_graph(config).compile().ainvoke({"prompt": QUESTION})
    assert state["answer"].strip()
    check_calls(state)
    layers = len(state["layers"])
    by_role = Counter(c["role"] for c in ok_calls(state))
    failed = sum(not c["ok"] for layer in state["layers"] for c in layer["candidates"])
    assert by_role["roles"] == 1 and by_role["aggregator"] == 1
    assert by_role["proposer"] + failed == 3 * layers and by_role["judge"] <= layers
    assert sum(by_role.values()) + failed <= 10  # 3 + 1 per round, the aggregator, the roles
    assert len(state["roles"]) == 3


async def test_smoa_judge_and_moderator_parse_under_constrained_output() -> None:
    config = every_role(
        **SMALL, n_proposers=4, k=2, max_layers=2, moderator="model", proposer_dispatch="parallel"
    )
    graph = build_smoa_graph(config).compile()
    started = time.perf_counter()
    state = await graph.ainvoke({"prompt": QUESTION})
    wall = time.perf_counter() - started
    assert state["answer"].strip()
    check_calls(state)
    for layer in state["layers"]:
        judge = layer["judge"]
        assert judge["called"] and judge["fallback"] is None, judge  # schema-bound: parses
        assert len(judge["selected"]) == 2 and len(set(judge["selected"])) == 2
        assert all(0 <= i < 4 and layer["candidates"][i]["ok"] for i in judge["selected"])
    moderator_calls = [c for c in ok_calls(state) if c["role"] == "moderator"]
    decisions = state["decisions"]
    assert len(moderator_calls) == sum(d["model_vote"] is not None for d in decisions)
    assert all("fallback" not in d["reason"] for d in decisions)  # every verdict parsed
    # proposers of a layer overlap on the server's slots: the run takes less than its calls
    assert wall < sum(c["latency_s"] for c in state["calls"])


async def test_final_answer_streams_from_the_local_model() -> None:
    graph = build_smoa_graph(every_role(**SMALL, n_proposers=2, k=1, max_layers=1)).compile()
    tokens = [
        chunk.text
        async for chunk, meta in graph.astream({"prompt": QUESTION}, stream_mode="messages")
        if "smoa:final" in meta.get("tags", [])
    ]
    assert len([t for t in tokens if t]) > 1


def test_cli_ask_json_on_the_local_model(local_base_url: str) -> None:
    env = {**os.environ, "SMOA_LOCAL_BASE_URL": local_base_url, "LANGSMITH_TRACING": "false"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "smoa_graph.cli",
            "ask",
            QUESTION,
            "--json",
            "--max-layers",
            "1",
            "--max-tokens",
            "48",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["answer"].strip() and data["summary"]["total"]["calls"] >= 4  # the proposers
    assert "layer 1: proposer" in result.stderr  # progress lines
