"""API keys stay secret: a sentinel key goes to the endpoint and nowhere else.

A loopback OpenAI-compatible server (``smoa_graph.testing.ScriptedEndpoint``) answers the real
``ChatOpenAI`` path offline. Every output is scanned for the key: final state, checkpoint and
store files, ``--json`` stdout and stderr, error messages (the server echoes the Authorization
header back in its 401 body, as a careless server would), call records and every log record at
DEBUG level.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from pydantic import SecretStr

from smoa_graph import (
    AllProposersFailedError,
    ModelRequest,
    build_smoa_graph,
    default_model_factory,
)
from smoa_graph import testing as faults
from smoa_graph.cli import main
from smoa_graph.models import redact
from smoa_graph.testing import every_role

SENTINEL = "sk-SENTINEL-3f9a1c7e5b2d4f6a8c0e"
SMALL = {"n_proposers": 2, "k": 1, "max_attempts": 1}


@pytest.fixture(autouse=True)
def _key_and_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> Iterator[None]:
    """The sentinel key in the environment; every log record kept; none may hold the key."""
    monkeypatch.setenv("OPENAI_API_KEY", SENTINEL)
    caplog.set_level(logging.DEBUG)
    yield
    for record in caplog.records:
        text = record.getMessage() + (caplog.handler.format(record) if record.exc_info else "")
        assert SENTINEL not in text, record.name


def files_text(folder: Path) -> bytes:
    """The bytes of every file under ``folder`` (SQLite file, its WAL, ...)."""
    return b"".join(p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file())


def test_the_key_is_a_secret_of_the_chat_model() -> None:
    with faults.ScriptedEndpoint() as endpoint:
        model: Any = default_model_factory(ModelRequest(f"m@{endpoint.base_url}", 0.0, 8))
    assert isinstance(model.openai_api_key, SecretStr)
    assert SENTINEL not in repr(model) and SENTINEL not in str(model.model_dump())


async def test_state_and_checkpoints_never_hold_the_key(tmp_path: Path) -> None:
    with faults.ScriptedEndpoint() as endpoint:
        config = every_role(
            model=f"m@{endpoint.base_url}", max_layers=2, moderator="model", **SMALL
        )
        async with AsyncSqliteSaver.from_conn_string(str(tmp_path / "c.sqlite")) as saver:
            graph = build_smoa_graph(config).compile(checkpointer=saver)
            thread: Any = {"configurable": {"thread_id": "s"}}
            state = await graph.ainvoke({"prompt": "What is 6 times 7?"}, thread)
            history = [s async for s in graph.aget_state_history(thread)]
    assert endpoint.authorizations == {f"Bearer {SENTINEL}"}  # the key was really used
    roles = {c["role"] for c in state["calls"]}
    assert roles == {"proposer", "judge", "moderator", "aggregator"} and state["answer"]
    assert all(c["input_tokens"] > 0 for c in state["calls"])  # the real ChatOpenAI path
    assert SENTINEL not in json.dumps(state, default=str)
    assert SENTINEL not in repr(history)
    assert SENTINEL.encode() not in files_text(tmp_path)


def test_cli_json_output_and_checkpoint_db_never_hold_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with faults.ScriptedEndpoint() as endpoint:
        code = main(
            [
                "ask",
                "What is 6 times 7?",
                "--model",
                f"m@{endpoint.base_url}",
                "-n",
                "2",
                "-k",
                "1",
                "--json",
                "--thread-id",
                "s",
                "--checkpoint-db",
                str(tmp_path / "c.sqlite"),
            ]
        )
    out, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(out)["config"]["api_key_env"] == "OPENAI_API_KEY"  # the name, not the key
    assert SENTINEL not in out + err
    assert SENTINEL.encode() not in files_text(tmp_path)


async def test_error_messages_and_records_never_hold_the_key() -> None:
    with faults.ScriptedEndpoint(401) as endpoint:
        config = every_role(model=f"m@{endpoint.base_url}", max_layers=1, **SMALL)
        with pytest.raises(AllProposersFailedError) as info:
            await build_smoa_graph(config).compile().ainvoke({"prompt": "q"})
    assert "got Authorization: ***" in str(info.value)  # the echoed header was redacted
    assert SENTINEL not in str(info.value) and SENTINEL not in json.dumps(info.value.calls)


def test_cli_error_lines_never_hold_the_key(capsys: pytest.CaptureFixture[str]) -> None:
    with faults.ScriptedEndpoint() as good, faults.ScriptedEndpoint(401) as bad:
        models = ["--model", f"m@{good.base_url}", "--aggregator-model", f"m@{bad.base_url}"]
        models += ["--finish", "aggregate"]
        code = main(["ask", "q", *models, "-n", "2", "-k", "1", "--max-attempts", "1"])
    out, err = capsys.readouterr()
    assert code == 1 and err.splitlines()[-1].startswith("smoa: error: model endpoint error: ")
    assert "OpenAIAuthenticationError" in err and "***" in err
    assert SENTINEL not in out + err


def test_redact_removes_keys_and_bearer_tokens(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MY_SERVICE_TOKEN", "tok-12345678")
    text = f"key {SENTINEL}, header Bearer abc.def, token tok-12345678, sk-otherkey123456"
    assert redact(text) == "key ***, header ***, token ***, ***"
    assert redact("nothing secret here") == "nothing secret here"


def test_redact_removes_passwords_of_connection_strings() -> None:
    url = "postgresql://smoa:pa@ss:w0rd@db.example:5432/runs?sslmode=require"
    assert redact(f"cannot open {url}") == (
        "cannot open postgresql://smoa:***@db.example:5432/runs?sslmode=require"
    )
    assert redact("postgres://:pw@h/db") == "postgres://:***@h/db"
    assert redact("host=h password=hunter2 user=u") == "host=h password=*** user=u"
    assert redact("postgresql://h/db?password=hunter2&x=1") == "postgresql://h/db?password=***&x=1"
    # a model endpoint spec and a URL without userinfo are left as they are
    assert redact("m@http://127.0.0.1:8080/v1") == "m@http://127.0.0.1:8080/v1"
    assert redact("postgresql://smoa@h:5432/db") == "postgresql://smoa@h:5432/db"
