"""Benchmark runner (variants, resumption) and report, offline with the fake model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from smoa_graph.bench.datasets import BenchItem, load_dataset
from smoa_graph.bench.diagnostics import ANSWER_STAGES, answer_path, has_marker_echo, raw_echoes
from smoa_graph.bench.report import (
    bootstrap_interval,
    compare,
    paired,
    pareto_frontier,
    summarize,
    to_markdown,
    write_report,
)
from smoa_graph.bench.runner import RESULTS_FILE, load_done, parse_variant, run_bench
from smoa_graph.cli import main
from smoa_graph.testing import FakeCall, default_responder, disagreeing_responder, fake_factory

BASE = {"model": "fake", "max_tokens": 64}


def test_variants_from_presets_and_overrides() -> None:
    single = parse_variant("single", {**BASE, "n_proposers": 6})
    assert single.config.n_proposers == 1  # shared n does not reach the single preset
    moa = parse_variant("moa", {**BASE, "n_proposers": 6})
    assert (moa.config.n_proposers, moa.config.k) == (6, 6)
    custom = parse_variant("smoa-k1:preset=smoa,k=1,merge_judge_moderator=true", BASE)
    assert custom.name == "smoa-k1" and custom.config.k == 1 and custom.config.merge_judge_moderator
    full_view = parse_variant("smoa-view:preset=smoa,judge_view_chars=null,stop_share=0.75", BASE)
    assert full_view.config.judge_view_chars is None and full_view.config.stop_share == 0.75
    assert parse_variant("x:preset=smoa,finish=aggregate", BASE).config.finish == "aggregate"
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
    assert row["tokens"] == sum(row["tokens_by_role"].values()) and row["calls"] == 4
    assert row["ttft_s"] is not None and row["layers"] == 1 and "agree" in row["stop_reason"]
    # a rerun over more items only runs the new pairs
    rows = await run_bench(variants, items(4), tmp_path, model_factory=factory, progress=False)
    assert len(rows) == 12
    assert len((tmp_path / RESULTS_FILE).read_text().splitlines()) == 12
    new_calls = len(factory.models["fake"].calls) - first_calls
    assert new_calls == 1 + 9 + 4  # one item: single, moa, smoa (its proposers agree)


async def test_pairs_start_item_by_item_so_a_stopped_run_leaves_whole_items(
    tmp_path: Path,
) -> None:
    variants = [parse_variant(p, BASE) for p in ("single", "moa", "smoa", "self-consistency")]
    await run_bench(
        variants, items(5), tmp_path, model_factory=fake_factory(), concurrency=1, progress=False
    )
    lines = [json.loads(line) for line in (tmp_path / RESULTS_FILE).read_text().splitlines()]
    order = [(row["item_id"], row["variant"]) for row in lines]
    assert order == [(i.id, v.name) for i in items(5) for v in variants]


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
    ratio = summary["ratios"]["smoa/moa"]
    assert {k: ratio[k] for k in ("items", "tokens", "calls", "wall_s", "quality_delta")} == {
        "items": 2,
        "tokens": 0.55,
        "calls": 1.0,
        "wall_s": 1.0,
        "quality_delta": 0.5,
    }
    assert ratio["tokens_ci"] == [0.5, 0.6]  # a resample is {a, a}, {b, b} or one of each
    assert ratio["quality_delta_ci"] == [0.0, 1.0]
    assert summary["ratios"]["single/moa"]["items"] == 1
    assert summary["ratios"]["smoa/single"]["quality_delta"] == 1.0
    text = to_markdown(summary, "t")
    assert "| smoa/moa | 2 | 0.550 [0.500, 0.600] | 1.000 | 1.000 | 0.500 [0.000, 1.000] |" in text
    assert "| tokens/query by role | proposer | judge |" in text  # roles without tokens: left out
    assert "| smoa | 450 | 100 |" in text and "| moa | 1000 | 0 |" in text
    write_report(
        rows, ["single", "moa", "smoa"], tmp_path, "t", {"rss_mb": 512, "peak_rss_mb": 640}
    )
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["ratios"] and written["local_server"] == {"rss_mb": 512, "peak_rss_mb": 640}
    assert "RSS 512 MB (peak 640 MB)" in (tmp_path / "summary.md").read_text()


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
    assert code == 0 and "| smoa | 1 | 1.000 [1.000, 1.000] |" in capsys.readouterr().out
    assert len(load_dataset(str(data))) == 1


def test_bench_command_rejects_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--model", "fake", "--dataset", "nope", "--out", str(tmp_path)]) == 2
    assert "unknown dataset 'nope'" in capsys.readouterr().err
    assert main(["bench", "--model", "fake", "--variants", "x:k=9", "--out", str(tmp_path)]) == 2
    assert "k=9 is larger than n_proposers" in capsys.readouterr().err
    code = main(["bench", "--model", "fake", "--split", "dev", "--out", str(tmp_path)])
    assert code == 2 and "no split 'dev'" in capsys.readouterr().err


def test_bench_command_on_a_split(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["bench", "--model", "fake", "--dataset", "arith", "--split", "tune", "--limit", "4"]
    assert main([*args, "--variants", "single", "--out", str(out)]) == 0
    assert "## arith (tune): 4 items" in capsys.readouterr().out
    tune = [i.id for i in load_dataset("arith", split="tune")[:4]]
    rows = [json.loads(line) for line in (out / RESULTS_FILE).read_text().splitlines()]
    assert sorted(r["item_id"] for r in rows) == sorted(tune)


# --------------------------------------------------------------------------- statistics


def scored_row(variant: str, item: str, quality: float | None, tokens: int = 100) -> dict:
    return {
        "variant": variant,
        "item_id": item,
        "tokens": tokens,
        "calls": 1,
        "wall_s": 1.0,
        "layers": 1,
        "quality": quality,
        "answer": "Final answer: 1",
    }


def test_equal_accuracy_gives_a_delta_interval_around_zero() -> None:
    # same accuracy (50 of 100), right on different items: the delta is noise
    rows = [scored_row("a", f"q{i}", float(i < 50)) for i in range(100)]
    rows += [scored_row("b", f"q{i}", float(25 <= i < 75)) for i in range(100)]
    summary = summarize(rows, ["single", "a", "b"])
    low, high = summary["variants"]["a"]["quality_ci"]
    assert low < 0.5 < high and high - low > 0.1
    delta = compare(paired(rows, "a", "b"))
    assert delta["quality_delta"] == 0.0
    low, high = delta["quality_delta_ci"]
    assert low < 0 < high


def test_a_clearly_better_variant_has_a_delta_interval_above_zero() -> None:
    rows = [scored_row("better", f"q{i}", float(i < 80)) for i in range(100)]
    rows += [scored_row("single", f"q{i}", float(i < 20)) for i in range(100)]
    ratio = summarize(rows, ["single", "better"])["ratios"]["better/single"]
    assert ratio["quality_delta"] == 0.6
    low, high = ratio["quality_delta_ci"]
    assert 0 < low < 0.6 < high


def test_bootstrap_is_seeded_and_pairs_items() -> None:
    values = [float((i * 7) % 11) for i in range(60)]
    first = bootstrap_interval(lambda a: a.mean(axis=1), values)
    assert first == bootstrap_interval(lambda a: a.mean(axis=1), values)
    assert first != bootstrap_interval(lambda a: a.mean(axis=1), values, seed=1)
    # paired: b is always half of a, so every resample's ratio is exactly 0.5
    tokens = [float(10 + i) for i in range(60)]
    halves = [t / 2 for t in tokens]
    assert bootstrap_interval(lambda a, b: a.sum(axis=1) / b.sum(axis=1), halves, tokens) == [
        0.5,
        0.5,
    ]
    assert bootstrap_interval(lambda a: a.mean(axis=1), []) is None


def test_pairs_are_matched_by_item_id_with_missing_items() -> None:
    rows = [
        scored_row("moa", "a", 1.0, 1000),
        scored_row("moa", "b", 0.0, 1000),
        scored_row("moa", "c", 0.0, 3000),
        scored_row("smoa", "d", 1.0, 10),  # no moa row: left out of the ratio
        scored_row("smoa", "c", 1.0, 1500),
        scored_row("smoa", "b", None, 500),  # unscored: in the token ratio, not the delta
    ]
    ratio = summarize(rows, ["moa", "smoa"])["ratios"]["smoa/moa"]
    assert ratio["items"] == 2
    assert ratio["tokens"] == 0.5  # (1500 + 500) / (3000 + 1000)
    assert ratio["quality_delta"] == 1.0  # item c only
    assert ratio["quality_delta_ci"] == [1.0, 1.0]


def test_goal_checks_against_moa_tokens_and_the_best_baseline() -> None:
    rows = []
    for i, (single, moa, cheap, dear) in enumerate([(1, 0, 1, 1), (0, 1, 1, 1), (1, 0, 0, 1)]):
        item = f"q{i}"
        rows += [
            scored_row("single", item, float(single), 100),
            scored_row("moa", item, float(moa), 1000),
            scored_row("cheap-but-worse", item, 0.0, 500),
            scored_row("cheaper-and-good", item, float(cheap), 500),
            scored_row("good-but-dear", item, float(dear), 600),
        ]
    summary = summarize(
        rows, ["single", "moa", "cheap-but-worse", "cheaper-and-good", "good-but-dear"]
    )
    goals = summary["goals"]
    assert set(goals) == {"cheap-but-worse", "cheaper-and-good", "good-but-dear"}  # not baselines
    assert goals["cheaper-and-good"] == {  # single is the best baseline: 2/3
        "tokens_vs_moa": 0.5,
        "tokens_met": True,
        "quality_vs_best": 0.0,
        "quality_met": True,
    }
    assert not goals["cheap-but-worse"]["quality_met"] and goals["cheap-but-worse"]["tokens_met"]
    assert goals["good-but-dear"]["quality_met"] and not goals["good-but-dear"]["tokens_met"]
    assert "| cheaper-and-good | 0.500 | met | +0.000 | met |" in to_markdown(summary, "t")
    assert summarize(rows, ["moa", "cheaper-and-good"])["goals"] == {}  # no single baseline
    as_a_vote = {"cheaper-and-good": "self-consistency"}  # a larger vote is a baseline too
    assert set(summarize(rows, ["single", "moa", "cheaper-and-good"], as_a_vote)["goals"]) == set()


def test_an_ablation_reads_as_a_paired_delta_against_smoa_as_shipped() -> None:
    rows = []
    for i in range(4):
        item = f"q{i}"
        rows += [
            scored_row("single", item, 0.0, 100),
            scored_row("moa", item, 0.0, 1000),
            scored_row("smoa", item, 1.0, 400),
            scored_row("smoa-all-answer", item, float(i < 2), 600),
        ]
    summary = summarize(rows, ["single", "moa", "smoa", "smoa-all-answer"])
    ablation = summary["ratios"]["smoa-all-answer/smoa"]
    assert (ablation["tokens"], ablation["quality_delta"]) == (1.5, -0.5)
    assert "smoa/smoa" not in summary["ratios"] and "single/smoa" in summary["ratios"]
    assert set(summary["goals"]) == {"smoa", "smoa-all-answer"}  # smoa keeps its goal check


def test_each_method_meets_the_largest_vote_it_can_afford() -> None:
    rows = []
    for i in range(40):
        item = f"q{i}"
        rows += [
            scored_row("single", item, float(i < 10), 100),
            scored_row("self-consistency", item, float(i < 16), 400),
            scored_row("sc-8", item, float(i < 20), 800),
            scored_row("sc-16", item, float(i < 24), 1600),
            scored_row("smoa", item, float(i < 20 or i >= 38), 1000),
            scored_row("moa", item, float(i < 2), 2000),
            scored_row("thrifty", item, 1.0, 300),
        ]
    names = ["single", "self-consistency", "sc-8", "sc-16", "smoa", "moa", "thrifty"]
    presets = {"sc-8": "self-consistency", "sc-16": "self-consistency"}
    summary = summarize(rows, names, presets)
    matches = summary["equal_tokens"]
    # votes and single are not matched; thrifty costs less than every vote
    assert set(matches) == {"smoa", "moa"}
    assert matches["smoa"]["vote"] == "sc-8"  # sc-16 costs more than smoa
    assert (matches["smoa"]["tokens"], matches["smoa"]["quality_delta"]) == (1.25, 0.05)
    assert matches["smoa"]["winner"] is None  # 2 items of 40: within the noise
    assert (matches["moa"]["vote"], matches["moa"]["winner"]) == ("sc-16", "sc-16")
    markdown = to_markdown(summary, "t")
    assert "| smoa | sc-8 | 1.250 [" in markdown and "| neither (within the interval) |" in markdown
    # without the presets, only the variant named self-consistency is a vote
    assert summarize(rows, names)["equal_tokens"]["smoa"]["vote"] == "self-consistency"


def test_frontier_on_a_handmade_set() -> None:
    def point(tokens: float | None, quality: float | None) -> dict:
        return {"tokens": tokens, "quality": quality}

    table = {
        "cheap": point(50, 0.1),
        "mid": point(100, 0.3),
        "worse-and-dearer": point(300, 0.25),
        "best": point(200, 0.5),
        "same-as-best": point(200, 0.5),
        "dearer-same-quality": point(250, 0.5),
        "unscored": point(10, None),
    }
    assert pareto_frontier(table) == ["cheap", "mid", "best", "same-as-best"]
    assert pareto_frontier({}) == []


# --------------------------------------------------------------------------- lost answers


ITEM = BenchItem(id="q", dataset="t", kind="numeric", prompt="2 + 3?", reference="5")


def layer(number: int, answers: list[int | None], selected: list[int]) -> dict:
    candidates = [
        {
            "index": i,
            "role": "r",
            "model": "fake",
            "text": "" if a is None else f"So it is {a}. Final answer: {a}",
            "ok": a is not None,
            "error": None if a is not None else "timeout",
        }
        for i, a in enumerate(answers)
    ]
    return {"layer": number, "candidates": candidates, "judge": {"selected": selected}}


@pytest.mark.parametrize(
    ("layers", "final", "path"),
    [
        # the judge drops the one right answer of layer 1; layer 2 never finds it again
        ([layer(1, [5, 4, 6, 4], [1, 3]), layer(2, [4, 4, 4, 4], [0, 1])], False, "10000"),
        # kept by the selection, lost by the aggregator
        ([layer(1, [5, 4, 6, 4], [0, 1]), layer(2, [5, 4, 5, 4], [0, 2])], False, "11110"),
        # lost in layer 1, found again in the last layer and kept to the end
        ([layer(1, [4, 4, 6, 4], [0, 1]), layer(2, [4, 5, 4, 4], [1, 2])], True, "00111"),
        # one layer: first and last are the same; a failed proposer's empty text is never right
        ([layer(1, [None, 5, 4, 4], [1, 2])], True, "11111"),
        ([layer(1, [None, 5, 4, 4], [2, 3])], False, "10100"),
    ],
)
def test_answer_path_on_handmade_layers(layers: list[dict], final: bool, path: str) -> None:
    got = answer_path(ITEM, layers, final)
    assert got is not None
    assert "".join(str(int(got[stage])) for stage in ANSWER_STAGES) == path


def test_answer_path_is_none_without_two_candidates_or_a_rule_scorer() -> None:
    assert answer_path(ITEM, [layer(1, [5], [0])], True) is None
    open_item = BenchItem(id="o", dataset="t", kind="open", prompt="Write a poem.")
    assert answer_path(open_item, [layer(1, [5, 4], [0])], True) is None


def test_lost_answer_counts_per_variant_in_the_summary() -> None:
    def with_path(variant: str, item: str, path: str) -> dict:
        flags = dict(zip(ANSWER_STAGES, (c == "1" for c in path), strict=True))
        return {**scored_row(variant, item, float(flags["final"])), "answer_path": flags}

    rows = [
        with_path("moa", "a", "11110"),
        with_path("moa", "b", "10000"),
        with_path("moa", "c", "11111"),
        with_path("smoa", "a", "11111"),
        scored_row("single", "a", 1.0),  # no path: not in the table
    ]
    summary = summarize(rows, ["single", "moa", "smoa"])
    assert summary["answer_path"] == {
        "moa": {
            "items": 3,
            "first_candidates": 3,
            "first_selected": 2,
            "last_candidates": 2,
            "last_selected": 2,
            "final": 1,
        },
        "smoa": {"items": 1} | dict.fromkeys(ANSWER_STAGES, 1),
    }
    text = to_markdown(summary, "t")
    assert "| where answers are lost (items) | runs | right in layer-1 responses |" in text
    assert "| moa | 3 | 3 | 2 | 2 | 2 | 1 |" in text


async def test_the_runner_records_where_the_answer_was_lost(tmp_path: Path) -> None:
    # proposer i answers i + 10, the judge keeps the first two, the aggregator says 42
    item = BenchItem(id="q", dataset="t", kind="numeric", prompt="q", reference="10")
    variants = [parse_variant(p, {**BASE, "max_layers": 2}) for p in ("single", "smoa")]
    rows = await run_bench(
        variants,
        [item],
        tmp_path,
        model_factory=fake_factory(responder=disagreeing_responder),
        progress=False,
    )
    by_variant = {r["variant"]: r for r in rows}
    assert by_variant["single"]["answer_path"] is None
    assert by_variant["single"]["quality"] == 1.0
    smoa = by_variant["smoa"]
    assert smoa["quality"] == 0.0 and smoa["layers"] == 2
    assert smoa["answer_path"] == dict.fromkeys(ANSWER_STAGES[:4], True) | {"final": False}


# --------------------------------------------------------------------------- marker echoes


@pytest.mark.parametrize(
    "text",
    [
        "3 + 2 = 5 books\n<<<RESPONSE 7 c189f312>>>",
        "< < <RESPONSE 7 c189f312>>",
        "<<<RESPONSE 5 e6393d0b> > > >\nThe answer is 15.",
        "As RESPONSE 5 b5d12902 says, 12.",
        "<<<END RESPONSE 2 0a1b2c3d>>>",
        "<< response 3",
        "< <  < END RESPONSE 1",
    ],
)
def test_marker_echoes_are_detected(text: str) -> None:
    assert has_marker_echo(text)


@pytest.mark.parametrize(
    "text",
    [
        "Final answer: 5",
        "Response 1 is right: 3 + 2 = 5.",
        "The second response added 2 and 3. RESPONSE 2 added them too.",
        "5 < 7 and 7 > 5",
        "",
    ],
)
def test_ordinary_text_is_not_an_echo(text: str) -> None:
    assert not has_marker_echo(text)


def test_echo_rate_per_variant() -> None:
    rows = [
        {**scored_row("moa", "a", 1.0), "answer": "5\n<<<RESPONSE 2 b5d12902>>>"},
        {**scored_row("moa", "b", 1.0), "answer": "Final answer: 5"},
        {**scored_row("moa", "c", 0.0), "answer": "< < <RESPONSE 7 c189f312>>"},
        {**scored_row("moa", "d", 0.0), "answer": "Final answer: 4"},
    ]
    stats = summarize(rows, ["moa"])["variants"]["moa"]
    assert (stats["echoes"], stats["echo_rate"]) == (2, 0.5)
    assert "| moa | 4 | 0.500 [" in to_markdown(summarize(rows, ["moa"]), "t")
    assert "| 2 (0.50) | - |" in to_markdown(summarize(rows, ["moa"]), "t")  # no raw counts


def test_raw_echoes_count_later_layers_responses_before_cleaning() -> None:
    def layer(*texts: str) -> dict:
        return {"candidates": [{"text": t, "ok": True} for t in texts]}

    layers = [
        layer("<<<RESPONSE 1 x>>> layer 1 reads nothing", "4"),  # not counted: reads no answers
        layer("5\n--- 2nd answer ---\n5", "Final answer: 5", "The answer is 5."),
        layer("< < <RESPONSE 7 c189f312>>", "5"),
    ]
    assert raw_echoes(layers) == (2, 5)
    rows = [
        {**scored_row("smoa", "a", 1.0), "raw_echoes": [2, 5]},
        {**scored_row("smoa", "b", 1.0), "raw_echoes": [0, 3]},
    ]
    assert summarize(rows, ["smoa"])["variants"]["smoa"]["raw_echo_rate"] == 0.25


def test_report_lists_the_frontier_and_plots_intervals(tmp_path: Path) -> None:
    rows = [scored_row("single", f"q{i}", float(i < 3), 100) for i in range(10)]
    rows += [scored_row("moa", f"q{i}", float(i < 5), 2000) for i in range(10)]
    rows += [scored_row("smoa", f"q{i}", float(i < 6), 1000) for i in range(10)]
    summary = write_report(rows, ["single", "moa", "smoa"], tmp_path, "t")
    assert summary["frontier"] == ["single", "smoa"]
    assert "cheapest first: single, smoa." in (tmp_path / "summary.md").read_text()
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["frontier"] == ["single", "smoa"]
    low, high = saved["variants"]["smoa"]["quality_ci"]
    assert low < 0.6 < high
    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
