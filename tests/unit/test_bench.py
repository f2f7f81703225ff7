"""Benchmark runner (variants, resumption) and report, offline with the fake model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from smoa_graph.bench.datasets import BenchItem, load_dataset
from smoa_graph.bench.report import summarize, to_markdown, write_report
from smoa_graph.bench.runner import RESULTS_FILE, load_done, parse_variant, run_bench
from smoa_graph.cli import main
from smoa_graph.testing import FakeCall, default_responder, fake_factory

BASE = {"model": "fake", "max_tokens": 64}


def test_variants_from_presets_and_overrides() -> None:
    single = parse_variant("single", {**BASE, "n_proposers": 6})
    assert single.config.n_proposers == 1  # shared n does not reach the single preset
    moa = parse_variant("moa", {**BASE, "n_proposers": 6})
    assert (moa.config.n_proposers, moa.config.k) == (6, 6)
    custom = parse_variant("smoa-k1:preset=smoa,k=1,merge_judge_moderator=true", BASE)
    assert custom.name == "smoa-k1" and custom.config.k == 1 and custom.config.merge_judge_moderator
    with pytest.raises(ValueError, match="expected field=value"):
        parse_variant("x:k", BASE)
    with pytest.raises(ValidationError, match="k=9 is larger"):
        parse_variant("x:preset=smoa,k=9", BASE)


def items(n: int) -> list[BenchItem]:
    return [
        BenchItem(id=f"q{i}", dataset="t", kind="numeric", prompt=f"q{i}", reference="42")
        for i in range(n)
    ]


async def test_run_writes_rows_and_resumes_without_repeating(tmp_path: Path) -> None:
    variants = [parse_variant(p, BASE) for p in ("single", "moa", "smoa")]
    factory = fake_factory()
    rows = await run_bench(variants, items(3), tmp_path, model_factory=factory, progress=False)
    assert len(rows) == 9
    first_calls = len(factory.models["fake"].calls)
    row = next(r for r in rows if r["variant"] == "smoa")
    assert row["score"]["correct"] is True and row["quality"] == 1.0
    assert row["tokens"] == sum(row["tokens_by_role"].values()) and row["calls"] == 6
    assert row["ttft_s"] is not None and row["layers"] == 1 and "agree" in row["stop_reason"]
    # a rerun over more items only runs the new pairs
    rows = await run_bench(variants, items(4), tmp_path, model_factory=factory, progress=False)
    assert len(rows) == 12
    assert len((tmp_path / RESULTS_FILE).read_text().splitlines()) == 12
    new_calls = len(factory.models["fake"].calls) - first_calls
    assert new_calls == 1 + 9 + 6  # one item: single, moa, smoa


async def test_failed_runs_are_recorded_and_retried(tmp_path: Path) -> None:
    broken = {"on": True}

    def responder(call: FakeCall) -> str:
        if broken["on"] and call.role == "proposer":
            raise ValueError("down")
        return default_responder(call)

    variants = [parse_variant("single", {**BASE, "max_attempts": 1})]
    rows = await run_bench(
        variants,
        items(2),
        tmp_path,
        model_factory=fake_factory(responder=responder),
        progress=False,
    )
    assert rows == []
    lines = [json.loads(line) for line in (tmp_path / RESULTS_FILE).read_text().splitlines()]
    assert all("all 1 proposers of layer 1 failed" in line["error"] for line in lines)
    broken["on"] = False
    rows = await run_bench(
        variants,
        items(2),
        tmp_path,
        model_factory=fake_factory(responder=responder),
        progress=False,
    )
    assert len(rows) == 2 and all(r["error"] is None for r in rows)


def test_a_line_cut_by_a_kill_is_ignored(tmp_path: Path) -> None:
    path = tmp_path / RESULTS_FILE
    path.write_text('{"variant": "smoa", "item_id": "q1", "error": null}\n{"variant": "sm')
    assert list(load_done(path)) == [("smoa", "q1")]


def test_summary_ratios_are_paired_and_markdown_lists_them(tmp_path: Path) -> None:
    def row(variant: str, item: str, tokens: int, quality: float) -> dict:
        judge = 100 if variant == "smoa" else 0
        return {
            "variant": variant,
            "item_id": item,
            "tokens": tokens,
            "tokens_by_role": {"proposer": tokens - judge, "judge": judge}
            if judge
            else {"proposer": tokens},
            "calls": 5,
            "wall_s": 2.0,
            "ttft_s": 1.0,
            "layers": 1,
            "quality": quality,
        }

    rows = [
        row("moa", "a", 1000, 1.0),
        row("moa", "b", 1000, 0.0),
        row("smoa", "a", 500, 1.0),
        row("smoa", "b", 600, 1.0),
        row("single", "a", 100, 0.0),
    ]
    summary = summarize(rows, ["single", "moa", "smoa"])
    assert summary["variants"]["smoa"]["tokens"] == 550
    assert summary["ratios"]["smoa/moa"] == {
        "items": 2,
        "tokens": 0.55,
        "calls": 1.0,
        "wall_s": 1.0,
        "quality_delta": 0.5,
    }
    assert summary["ratios"]["single/moa"]["items"] == 1
    text = to_markdown(summary, "t")
    assert "| smoa/moa | 2 | 0.550 | 1.000 | 1.000 | 0.500 |" in text
    assert "| tokens/query by role | proposer | judge |" in text  # roles without tokens: left out
    assert "| smoa | 450 | 100 |" in text and "| moa | 1000 | 0 |" in text
    write_report(rows, ["single", "moa", "smoa"], tmp_path, "t")
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((tmp_path / "summary.json").read_text())["ratios"]


def test_bench_command_end_to_end(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    code = main(["bench", "--model", "fake", "--limit", "3", "--out", str(out)])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| smoa/moa | 3 |" in printed
    assert {p.name for p in out.iterdir()} == {
        "results.jsonl",
        "summary.md",
        "summary.json",
        "plot.png",
    }


def test_bench_command_with_a_user_jsonl(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "mine.jsonl"
    data.write_text('{"prompt": "What is 6*7?", "reference": "42", "kind": "numeric"}\n')
    code = main(
        [
            "bench",
            "--model",
            "fake",
            "--dataset",
            str(data),
            "--variants",
            "smoa",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 0 and "| smoa | 1 | 1.000 |" in capsys.readouterr().out
    assert len(load_dataset(str(data))) == 1


def test_bench_command_rejects_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--model", "fake", "--dataset", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert main(["bench", "--model", "fake", "--variants", "x:k=9", "--out", str(tmp_path)]) == 2
    assert "k=9 is larger than n_proposers" in capsys.readouterr().err
