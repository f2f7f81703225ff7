"""Checkpoints: a killed or failed run resumes without repeating finished model calls; review.

Async runs use ``AsyncSqliteSaver``; sync runs (``invoke``) the sync ``SqliteSaver``.
"""

from __future__ import annotations

import json
import sqlite3
import textwrap
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from kill_resume import (
    ASK_ARGV,
    CLI_WORKER,
    FAKES,
    RESUMED_CALLS,
    kill_after_the_fast_proposers,
)
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.checkpoint.sqlite import SqliteSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver

from smoa_graph import AllProposersFailedError, build_smoa_graph
from smoa_graph.bench.datasets import BenchItem
from smoa_graph.bench.runner import CHECKPOINTS_FILE, parse_variant, run_bench
from smoa_graph.checkpoints import open_persistence
from smoa_graph.cli import main
from smoa_graph.resume import aprepare_resume, prepare_resume
from smoa_graph.testing import EVERY_ROLE, FakeCall, default_responder, every_role, fake_factory

THREAD: Any = {"configurable": {"thread_id": "t"}}

# Runs the graph with sync ``invoke`` and the sync ``SqliteSaver`` on file argv[2].
SYNC_WORKER = FAKES + textwrap.dedent(
    """
    from langgraph.checkpoint.sqlite import SqliteSaver
    from smoa_graph import build_smoa_graph
    from smoa_graph.testing import every_role

    config = every_role(
        model="fast", n_proposers=4, k=2, max_layers=1,
        proposer_models=["fast", "fast", "slow", "slow"],
    )
    with SqliteSaver.from_conn_string(sys.argv[2]) as saver:
        graph = build_smoa_graph(config, model_factory=factory).compile(checkpointer=saver)
        graph.invoke({"prompt": "What is 6*7?"}, {"configurable": {"thread_id": "t"}})
    """
)


def finished_proposers(db: Path) -> int:
    """Proposer results saved as pending writes of the interrupted superstep."""
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            return int(
                conn.execute("SELECT count(*) FROM writes WHERE channel = 'candidates'").fetchone()[
                    0
                ]
            )
        except sqlite3.OperationalError:  # tables not created yet
            return 0


def roles_called(factory: Any) -> Counter[tuple[str, int | None]]:
    return Counter((c.role, c.index) for c in factory.models["fake"].calls)


@pytest.fixture
def fresh_models() -> Any:
    """The CLI's models, as one recording fake for every spec."""
    return fake_factory()


def test_a_killed_ask_resumes_without_repeating_finished_calls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "c.sqlite"
    argv = [*ASK_ARGV, "--thread-id", "t", "--checkpoint-db", str(db)]
    kill_after_the_fast_proposers(tmp_path, CLI_WORKER, argv, lambda: finished_proposers(db))
    factory = fake_factory()
    resume = ["ask", "--resume", "--thread-id", "t", "--checkpoint-db", str(db), "--json"]
    code = main(resume, model_factory=factory)
    out, err = capsys.readouterr()
    assert code == 0, err
    made = Counter((c.role, c.index) for m in factory.models.values() for c in m.calls)
    assert made == RESUMED_CALLS
    data = json.loads(out)
    assert data["answer"].endswith("Final answer: 42") and data["thread_id"] == "t"
    proposers = [c["index"] for c in data["calls"] if c["role"] == "proposer"]
    assert sorted(proposers) == [0, 1, 2, 3]  # each once: the killed run's two are kept
    assert data["config"]["proposer_models"] == ["fast", "fast", "slow", "slow"]  # as stored


def test_a_killed_sync_run_resumes_with_the_sync_sqlite_saver(tmp_path: Path) -> None:
    db = tmp_path / "c.sqlite"
    kill_after_the_fast_proposers(tmp_path, SYNC_WORKER, [str(db)], lambda: finished_proposers(db))
    factory = fake_factory()
    config = every_role(model="fake", n_proposers=4, k=2, max_layers=1)
    with SqliteSaver.from_conn_string(str(db)) as saver:
        graph = build_smoa_graph(config, model_factory=factory).compile(checkpointer=saver)
        assert prepare_resume(graph, THREAD)
        out = graph.invoke(None, THREAD)
        assert not prepare_resume(graph, THREAD)  # nothing left to do
    made = Counter((c.role, c.index) for m in factory.models.values() for c in m.calls)
    assert made == RESUMED_CALLS
    assert sorted(c["index"] for c in out["calls"] if c["role"] == "proposer") == [0, 1, 2, 3]
    assert out["answer"].endswith("Final answer: 42")


async def test_a_failed_aggregator_resumes_alone_and_sync_saver_reads_the_file(
    tmp_path: Path,
) -> None:
    broken = {"on": True}

    def responder(call: FakeCall) -> str:
        if call.role == "aggregator" and broken["on"]:
            raise PermissionError("aggregator endpoint refused")  # not transient: no retry
        return default_responder(call)

    factory = fake_factory(responder=responder)
    config = every_role(model="fake", n_proposers=3, k=2, max_layers=1, retry_backoff_s=0)
    db = tmp_path / "c.sqlite"
    async with AsyncSqliteSaver.from_conn_string(str(db)) as saver:
        graph = build_smoa_graph(config, model_factory=factory).compile(checkpointer=saver)
        with pytest.raises(PermissionError):
            await graph.ainvoke({"prompt": "q"}, THREAD)
        before = roles_called(factory)
        broken["on"] = False
        assert await aprepare_resume(graph, THREAD)
        out = await graph.ainvoke(None, THREAD)
        assert roles_called(factory) - before == {("aggregator", None): 1}
        assert not await aprepare_resume(graph, THREAD)  # nothing left to do
    with SqliteSaver.from_conn_string(str(db)) as sync_saver:
        reader = build_smoa_graph(config, model_factory=factory).compile(checkpointer=sync_saver)
        snapshot = reader.get_state(THREAD)
        assert snapshot.next == () and snapshot.values["answer"] == out["answer"]
        assert len(list(reader.get_state_history(THREAD))) > 3


async def test_a_first_layer_whose_proposers_all_failed_restarts_on_resume() -> None:
    broken = {"on": True}

    def responder(call: FakeCall) -> str:
        if call.role == "proposer" and call.layer == 1 and broken["on"]:
            raise ValueError("down")
        if call.role == "proposer":
            return f"P{call.index}. Final answer: {call.index}"
        if call.role == "moderator":
            return '{"reason": "they differ", "quality": 3, "stop": false}'
        return default_responder(call)

    factory = fake_factory(responder=responder)
    config = every_role(model="fake", n_proposers=3, k=2, max_layers=2, max_attempts=1)
    graph = build_smoa_graph(config, model_factory=factory).compile(checkpointer=InMemorySaver())
    with pytest.raises(AllProposersFailedError, match="layer 1"):
        await graph.ainvoke({"prompt": "q"}, THREAD)
    before = roles_called(factory)
    broken["on"] = False
    assert await aprepare_resume(graph, THREAD)
    out = await graph.ainvoke(None, THREAD)
    again = roles_called(factory) - before
    assert again == {
        ("proposer", 0): 2,
        ("proposer", 1): 2,
        ("proposer", 2): 2,
        ("judge", None): 2,
        ("moderator", None): 1,
        ("aggregator", None): 1,
    }  # the failed layer 1 once more, then layer 2 and the aggregator, each once
    assert [layer["layer"] for layer in out["layers"]] == [1, 2]
    assert all(c["ok"] for c in out["calls"])


async def test_review_before_the_aggregator_can_change_the_selection() -> None:
    factory = fake_factory()
    config = every_role(model="fake", n_proposers=4, k=2, max_layers=1)
    graph = build_smoa_graph(config, model_factory=factory).compile(
        checkpointer=InMemorySaver(), interrupt_before=["aggregator"]
    )
    paused = await graph.ainvoke({"prompt": "q"}, THREAD)
    snapshot = await graph.aget_state(THREAD)
    assert snapshot.next == ("aggregator",) and "answer" not in paused
    assert [c["index"] for c in snapshot.values["selected"]] == [0, 1]
    last = snapshot.values["layers"][-1]["candidates"][3]
    await graph.aupdate_state(THREAD, {"selected": [last]}, as_node="moderator")
    out = await graph.ainvoke(None, THREAD)
    aggregator = next(c for c in factory.models["fake"].calls if c.role == "aggregator")
    assert "I am proposer 3" in aggregator.prompt and "I am proposer 0" not in aggregator.prompt
    assert out["answer"] and [c["index"] for c in out["selected"]] == [3]


def test_cli_review_then_resume_with_a_new_selection(
    tmp_path: Path, fresh_models: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ["--checkpoint-db", str(tmp_path / "c.sqlite")]
    ask = ["ask", "q", "--model", "fake", "-n", "3", "-k", "2", "--quiet", *db]
    ask += ["--selection", "judge", "--finish", "aggregate"]  # the judge's pick, then aggregated
    assert main([*ask, "--review", "--thread-id", "r"], model_factory=fresh_models) == 0
    out = capsys.readouterr().out
    assert "paused before the aggregator" in out and " * proposer 0: " in out
    assert "go on with: smoa ask --resume --thread-id r --checkpoint-db" in out
    assert roles_called(fresh_models)[("aggregator", None)] == 0
    # a new question cannot start on a thread with a run pending
    assert main([*ask, "--thread-id", "r"], model_factory=fresh_models) == 2
    assert "unfinished run" in capsys.readouterr().err
    assert (
        main(
            model_factory=fresh_models,
            argv=["ask", "--resume", "--thread-id", "r", "--select", "9", *db],
        )
        == 2
    )
    assert "choose distinct proposers among [0, 1, 2]" in capsys.readouterr().err
    assert (
        main(
            model_factory=fresh_models,
            argv=["ask", "--resume", "--thread-id", "r", "--select", "2", "--json", *db],
        )
        == 0
    )
    data = json.loads(capsys.readouterr().out)
    assert [c["index"] for c in data["selected"]] == [2] and data["paused_before"] == []
    aggregator = next(c for c in fresh_models.models["fake"].calls if c.role == "aggregator")
    assert "I am proposer 2" in aggregator.prompt


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ask", "--resume"], "--resume continues a stored run: give --thread-id ID"),
        (["ask", "q", "--resume", "--thread-id", "x"], "give --thread-id ID and no question"),
        (["ask", "--resume", "--thread-id", "none"], "--resume: no run under thread 'none'"),
        (["ask", "q", "--select", "1"], "--select goes with --resume"),
        (["ask"], "a question is required"),
    ],
)
def test_resume_usage_errors(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main([*argv, "--model", "fake", "--checkpoint-db", str(tmp_path / "c.sqlite")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


async def test_a_failed_bench_pair_resumes_mid_item(tmp_path: Path) -> None:
    broken = {"on": True}

    def responder(call: FakeCall) -> str:
        if call.role == "aggregator" and broken["on"]:
            raise PermissionError("down")
        return default_responder(call)

    factory = fake_factory(responder=responder)
    variants = [parse_variant("smoa", {"model": "fake", "retry_backoff_s": 0, **EVERY_ROLE})]
    items = [BenchItem(id="q1", dataset="t", kind="numeric", prompt="q", reference="42")]
    assert await run_bench(variants, items, tmp_path, model_factory=factory, progress=False) == []
    assert (tmp_path / CHECKPOINTS_FILE).exists()  # the unfinished pair's thread is kept
    before = roles_called(factory)
    broken["on"] = False
    rows = await run_bench(variants, items, tmp_path, model_factory=factory, progress=False)
    assert roles_called(factory) - before == {("aggregator", None): 1}
    assert rows[0]["resumed"] is True and rows[0]["score"]["correct"] is True
    assert not (tmp_path / CHECKPOINTS_FILE).exists()  # every pair done: nothing to resume


async def test_bench_runs_sharing_a_checkpoint_db_keep_their_threads_apart(tmp_path: Path) -> None:
    broken = {"on": True}

    def responder(call: FakeCall) -> str:
        if call.role == "aggregator" and broken["on"]:
            raise PermissionError("down")
        return default_responder(call)

    factory = fake_factory(responder=responder)
    variants = [parse_variant("smoa", {"model": "fake", "retry_backoff_s": 0, **EVERY_ROLE})]
    items = [BenchItem(id="q1", dataset="t", kind="numeric", prompt="q", reference="42")]
    shared, first, second = tmp_path / "shared.sqlite", tmp_path / "a", tmp_path / "b"

    async def bench(out: Path) -> list[dict[str, Any]]:
        return await run_bench(
            variants, items, out, model_factory=factory, progress=False, checkpoint_db=shared
        )

    async def threads() -> set[str]:
        async with open_persistence(shared) as (saver, _):
            return {c.config["configurable"]["thread_id"] async for c in saver.alist(None)}

    assert await bench(first) == [] and await bench(second) == []
    assert await threads() == {f"{out.resolve()}:smoa:q1" for out in (first, second)}
    assert not (first / CHECKPOINTS_FILE).exists()  # the given database, not OUT's own file
    before = roles_called(factory)
    broken["on"] = False
    rows = await bench(first)
    assert roles_called(factory) - before == {("aggregator", None): 1}  # its own pair, mid-item
    assert rows[0]["resumed"] is True
    assert await threads() == {f"{second.resolve()}:smoa:q1"}  # the other run's pair is kept
