"""Run presets side by side on the same items, resumably, and record per-item results.

Each finished (variant, item) pair is appended to ``results.jsonl`` at once, so an interrupted run
loses nothing; a rerun skips the pairs already done (failed pairs are retried). Each pair runs on
its own checkpointed thread (``checkpoints.sqlite``, removed once every pair is done, or a given
SQLite file or Postgres database), so a pair cut off by a kill or an error resumes mid-item without
repeating the model calls it finished.
Items are interleaved across variants so that a shared, noisy machine slows all of them alike.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import BaseCheckpointSaver
from tqdm.asyncio import tqdm

from smoa_graph.bench.datasets import BenchItem
from smoa_graph.bench.diagnostics import answer_path, raw_echoes
from smoa_graph.bench.scorers import RubricParseError, score, score_rubric
from smoa_graph.checkpoints import open_persistence
from smoa_graph.config import PRESET_FIXED, SMoAConfig
from smoa_graph.graph import build_smoa_graph
from smoa_graph.models import (
    ModelFactory,
    ModelRequest,
    default_model_factory,
    describe_error,
    is_final_answer,
)
from smoa_graph.nodes.kit import build_widest_models
from smoa_graph.resume import aresume_or_start

RESULTS_FILE = "results.jsonl"
CHECKPOINTS_FILE = "checkpoints.sqlite"


@dataclass(frozen=True)
class Variant:
    """A named configuration to benchmark (a preset, or a preset with overrides)."""

    name: str
    config: SMoAConfig


def _json_or_text(value: str) -> Any:
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value


def parse_variant(text: str, base: dict[str, Any]) -> Variant:
    """A preset name (``single``, ``moa``, ``smoa``) or ``NAME:field=value,...``.

    A value is read as JSON when it is JSON (``2``, ``0.5``, ``true``, ``null``, ``["a"]``), else
    as a string.

    ``base`` holds settings shared by every variant (models, max_tokens, n, ...); a preset name
    keeps those it does not fix, and ``moa`` follows n with k = n.
    """
    name, _, overrides = text.partition(":")
    fields: dict[str, Any] = dict(base)
    if overrides:
        for pair in overrides.split(","):
            key, sep, value = pair.partition("=")
            if not sep:
                raise ValueError(f"variant {text!r}: expected field=value, got {pair!r}")
            fields[key.strip()] = _json_or_text(value)
    else:
        fields = {k: v for k, v in base.items() if k not in PRESET_FIXED.get(name, ())}
        fields["preset"] = name
    return Variant(name, SMoAConfig.model_validate(fields))


def load_done(path: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Successful results already written, keyed by (variant, item id)."""
    done: dict[tuple[str, str], dict[str, Any]] = {}
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a kill mid-write: redo that pair
                continue
            if row.get("error") is None:
                done[(row["variant"], row["item_id"])] = row
    return done


def _is_final_token(chunk: tuple[Any, dict[str, Any]]) -> bool:
    """A non-empty token of the model call that writes the final answer."""
    message, metadata = chunk
    return bool(message.text) and is_final_answer(metadata)


def thread_id(variant: Variant, item: BenchItem, scope: str = "") -> str:
    """The checkpoint thread of one (variant, item) pair; ``scope`` tells bench runs apart."""
    return f"{scope}{variant.name}:{item.id}"


async def run_one(
    variant: Variant,
    item: BenchItem,
    factory: ModelFactory,
    judge: BaseChatModel | None,
    checkpointer: BaseCheckpointSaver[Any] | None = None,
    scope: str = "",
) -> dict[str, Any]:
    """Run one item with one variant; never raises (errors are recorded in the row).

    With a ``checkpointer``, a pair left unfinished by an earlier run resumes from its thread
    (its row says ``resumed``; wall time and TTFT then cover the resumed part only).
    """
    row: dict[str, Any] = {"variant": variant.name, "item_id": item.id, "dataset": item.dataset}
    graph = build_smoa_graph(variant.config, model_factory=factory).compile(
        checkpointer=checkpointer
    )
    thread = thread_id(variant, item, scope)
    run_config: RunnableConfig = {"configurable": {"thread_id": thread}}
    started = time.perf_counter()
    state: dict[str, Any] = {}
    ttft: float | None = None
    chunk: Any
    try:
        inputs: Any = {"prompt": item.prompt}
        if checkpointer is not None:
            inputs = await aresume_or_start(graph, run_config, {"prompt": item.prompt})
            row["resumed"] = inputs is None
        async for namespace, mode, chunk in graph.astream(
            inputs, run_config, stream_mode=["messages", "values"], subgraphs=True
        ):
            if mode == "values" and not namespace:
                state = chunk
            elif mode == "messages" and ttft is None and _is_final_token(chunk):
                ttft = time.perf_counter() - started
    except Exception as exc:
        return {**row, "error": describe_error(exc), "wall_s": None}
    wall = time.perf_counter() - started
    summary = state["summary"]
    row.update(
        answer=state["answer"],
        wall_s=round(wall, 3),
        ttft_s=round(wall if ttft is None else ttft, 3),  # an answer not streamed: at the end
        layers=summary["layers_run"],
        stop_reason=summary["stop_reason"],
        finished_by=summary["finished_by"],
        raw_echoes=raw_echoes(state["layers"]),
        calls=summary["total"]["calls"],
        failed_calls=summary["total"]["failed_calls"],
        tokens=summary["total"]["total_tokens"],
        cached_tokens=summary["total"].get("cached_input_tokens", 0),
        tokens_by_role={r: b["total_tokens"] for r, b in summary["by_role"].items()},
        error=None,
    )
    if item.kind != "open":
        row["score"] = score(item, state["answer"])
        row["quality"] = float(row["score"]["correct"])
        row["answer_path"] = answer_path(item, state["layers"], row["score"]["correct"])
    elif judge is not None:
        try:
            rubric = await score_rubric(
                judge, item.prompt, state["answer"], reference=item.reference
            )
            row["score"] = rubric.model_dump()
            row["quality"] = rubric.overall
        except RubricParseError as exc:
            row["score"] = {"error": str(exc), **exc.usage}
            row["quality"] = None
    return row


async def run_bench(
    variants: Sequence[Variant],
    items: Sequence[BenchItem],
    out_dir: Path,
    *,
    concurrency: int = 1,
    model_factory: ModelFactory | None = None,
    rubric_model: str | None = None,
    progress: bool = True,
    on_row: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_db: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Run every (variant, item) pair not done yet; return all successful rows (old and new).

    Unfinished pairs are checkpointed in ``out_dir/checkpoints.sqlite``, or in ``checkpoint_db``
    (a SQLite file or Postgres URL, possibly shared: its threads are scoped by ``out_dir``).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    factory = model_factory or default_model_factory
    out_dir.mkdir(parents=True, exist_ok=True)
    results_path = out_dir / RESULTS_FILE
    done = load_done(results_path)
    todo = [(v, i) for i in items for v in variants if (v.name, i.id) not in done]
    judge = None
    if rubric_model and any(i.kind == "open" for i in items):
        base = variants[0].config
        judge = factory(ModelRequest.for_config(base, rubric_model, 0.0, 400))
    semaphore = asyncio.Semaphore(concurrency)
    lock = asyncio.Lock()
    checkpoints = out_dir / CHECKPOINTS_FILE
    scope = "" if checkpoint_db is None else f"{out_dir.resolve()}:"

    async def task(variant: Variant, item: BenchItem, saver: BaseCheckpointSaver[Any]) -> None:
        async with semaphore:
            row = await run_one(variant, item, factory, judge, saver, scope)
        async with lock:
            with results_path.open("a", encoding="utf-8") as handle:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            if row["error"] is None:
                done[(variant.name, item.id)] = row
                await saver.adelete_thread(thread_id(variant, item, scope))
            if on_row is not None:
                on_row(row)

    if todo:
        await asyncio.to_thread(build_widest_models, [v.config for v in variants], factory)
    async with open_persistence(checkpoint_db or checkpoints) as (saver, _):
        # Tasks made in order take the semaphore in order (tqdm.gather would start them in a
        # set's order), so a run stopped midway leaves whole items behind it.
        tasks = [asyncio.create_task(task(v, i, saver)) for v, i in todo]
        try:
            for finished in tqdm.as_completed(
                tasks, desc="smoa bench", unit="run", disable=not progress
            ):
                await finished
        finally:
            for pending in tasks:
                pending.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    wanted = {(v.name, i.id) for v in variants for i in items}
    if wanted <= done.keys() and checkpoint_db is None:  # nothing left to resume
        checkpoints.unlink(missing_ok=True)
    return [row for key, row in done.items() if key in wanted]
