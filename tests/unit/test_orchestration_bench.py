"""The orchestration benchmark in --quick mode: report structure and sane values, no timings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from smoa_graph.bench import orchestration as bench


@pytest.fixture(scope="module")
def quick(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One --quick run for every test of this module: (returned figures, JSON file)."""
    path = tmp_path_factory.mktemp("bench") / "report.json"
    return bench.main(["--quick", "--json", str(path)]), path


def assert_stats(stats: dict[str, float]) -> None:
    assert set(stats) == {"median", "p90", "max", "mean"}
    assert 0 < stats["median"] <= stats["p90"] <= stats["max"]
    assert 0 < stats["mean"] <= stats["max"]


def expected_calls(preset: str, n: int, k: int, layers: int) -> dict[str, int]:
    """Model calls of a run that goes to max_layers (proposers disagree, moderator continues)."""
    if preset == "single":
        return {"proposer": 1}  # no judge (n <= k), no moderator call, the answer is the proposer's
    calls = {"proposer": n * layers}
    if k < n:
        calls["judge"] = layers
    if preset == "smoa" and layers > 1:
        calls["moderator"] = layers - 1  # no call once max_layers is reached
    calls["aggregator"] = 1
    return calls


def test_report_structure_and_json_file(quick: tuple[dict[str, Any], Path]) -> None:
    figures, path = quick
    assert set(figures) == {
        "environment",
        "settings",
        "goals",
        "critical_path",
        "overhead",
        "scaling_n",
        "scaling_layers",
    }
    assert json.loads(path.read_text(encoding="utf-8")) == json.loads(json.dumps(figures))
    settings = figures["settings"]
    assert settings["repeats"] == bench.PROFILES["quick"]["repeats"]
    assert set(settings["latencies_s"]) == set(bench.ROLES)
    assert figures["goals"] == {"wall_over_critical_path": 1.05, "overhead_ms_per_query": 15.0}


def test_critical_path_section(quick: tuple[dict[str, Any], Path]) -> None:
    results = quick[0]["critical_path"]
    assert [r["preset"] for r in results] == ["smoa", "moa", "single"]
    assert [(r["n_proposers"], r["k"], r["max_layers"]) for r in results] == [
        (4, 2, 3),
        (4, 4, 2),
        (1, 1, 1),
    ]
    for r in results:
        assert r["layers_run"] == r["max_layers"]
        assert r["calls"] == expected_calls(r["preset"], r["n_proposers"], r["k"], r["max_layers"])
        for key in ("wall_ms", "critical_path_ms", "ratio"):
            assert_stats(r[key])
        # the sleeps on the critical path run one after another: no run can be faster
        assert r["ratio"]["median"] >= 0.999


def test_overhead_and_scaling_sections(quick: tuple[dict[str, Any], Path]) -> None:
    figures = quick[0]
    overhead = figures["overhead"]
    assert (overhead["n_proposers"], overhead["k"], overhead["layers_run"]) == (4, 2, 3)
    assert overhead["queries"] == bench.PROFILES["quick"]["queries"]
    points = [overhead, *figures["scaling_n"], *figures["scaling_layers"]]
    assert [p["n_proposers"] for p in figures["scaling_n"]] == list(bench.SCALING_N)
    assert [p["layers_run"] for p in figures["scaling_layers"]] == list(bench.SCALING_LAYERS)
    for p in points:
        assert p["layers_run"] == p["max_layers"]
        assert p["calls"] == expected_calls("smoa", p["n_proposers"], p["k"], p["max_layers"])
        for key in ("total_ms", "cpu_ms", "model_ms"):
            assert_stats(p[key])
        # time inside the model calls is part of each query's wall time
        assert p["model_ms"]["median"] <= p["total_ms"]["median"]
        assert p["graph_ms"]["median"] >= 0


def test_critical_path_of_recorded_calls() -> None:
    calls = [
        bench.TimedCall("proposer", 1, 0, 0.1),
        bench.TimedCall("proposer", 1, 1, 0.3),
        bench.TimedCall("judge", 1, None, 0.05),
        bench.TimedCall("moderator", 1, None, 0.02),
        bench.TimedCall("proposer", 2, 0, 0.25),
        bench.TimedCall("proposer", 2, 1, 0.2),
        bench.TimedCall("judge", 2, None, 0.05),
        bench.TimedCall("aggregator", 2, None, 0.1),
    ]
    run = bench.QueryRun(1.0, 1.0, 2, bench.CallLog(calls))
    assert run.critical_path_s() == pytest.approx(0.3 + 0.05 + 0.02 + 0.25 + 0.05 + 0.1)
    assert run.call_counts() == {"proposer": 4, "judge": 2, "moderator": 1, "aggregator": 1}


@pytest.mark.parametrize(
    "argv", [["--repeats", "0"], ["--proposer-ms", "0"], ["--jitter-ms", "-1"]]
)
def test_rejects_nonsense_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        bench.main(["--quick", *argv])
