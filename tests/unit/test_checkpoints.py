"""Checkpoint targets: a bad one, Postgres without its extra, an unreachable server.

Each fails with one line that names the fix, before any model call, and never shows the
password of a connection string. Runs on a real server: tests/integration/test_postgres.py.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from smoa_graph.checkpoints import CheckpointDBError, open_persistence
from smoa_graph.cli import main
from smoa_graph.local_server import free_port
from smoa_graph.testing import fake_factory

PASSWORD = "topsecret-pw"


@pytest.fixture
def models(monkeypatch: pytest.MonkeyPatch) -> Any:
    factory = fake_factory()
    monkeypatch.setattr("smoa_graph.graph.default_model_factory", factory)
    return factory


def ask(db: str, tmp_path: Path) -> list[str]:
    return ["ask", "q", "--model", "fake", "--thread-id", "t", "--checkpoint-db", db]


def bench(db: str, tmp_path: Path) -> list[str]:
    out = ["--out", str(tmp_path / "out"), "--limit", "1", "--variants", "single"]
    return ["bench", "--model", "fake", *out, "--checkpoint-db", db]


@pytest.mark.parametrize("target", [f"mysql://u:{PASSWORD}@h/db", "", "FOLDER"])
async def test_a_target_that_is_neither_a_file_nor_a_postgres_url(
    target: str, tmp_path: Path
) -> None:
    target = str(tmp_path) if target == "FOLDER" else target
    with pytest.raises(CheckpointDBError, match="expected a SQLite file path or a postgresql://"):
        async with open_persistence(target):
            pass


@pytest.mark.parametrize("command", [ask, bench])
def test_cli_rejects_a_bad_target_before_any_model_call(
    command: Any, tmp_path: Path, models: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(command(f"mysql://u:{PASSWORD}@h/db", tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "expected a SQLite file path or a postgresql://" in err and "u:***@h" in err
    assert PASSWORD not in err and not models.models


def test_postgres_without_the_extra_names_the_fix(
    tmp_path: Path, models: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "langgraph.checkpoint.postgres.aio", None)  # not installed
    code = main(ask(f"postgresql://u:{PASSWORD}@127.0.0.1:{free_port()}/db", tmp_path))
    err = capsys.readouterr().err
    assert code == 2 and "needs the postgres extra" in err
    assert "pip install 'smoa-graph[postgres]'" in err and not models.models


@pytest.mark.parametrize("command", [ask, bench])
def test_an_unreachable_postgres_server_is_one_redacted_line(
    command: Any, tmp_path: Path, models: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"postgresql://smoa:{PASSWORD}@127.0.0.1:{free_port()}/runs"
    code = main(command(url, tmp_path))
    err = capsys.readouterr().err
    assert code == 1 and err.count("\n") == 1, err
    assert "smoa: error: checkpoint database postgresql://smoa:***@127.0.0.1:" in err
    assert "OperationalError" in err and "check that the server runs" in err
    assert "--resume" not in err  # nothing was checkpointed: no hint to resume
    assert PASSWORD not in err and not models.models
