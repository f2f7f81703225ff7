"""The ``smoa`` CLI, offline with the built-in fake model."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from smoa_graph.cli import _progress, main
from smoa_graph.testing import faulty_factory


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_ask_prints_answer_progress_and_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["ask", "What is 6*7?", "--model", "fake"], capsys)
    assert code == 0
    assert out.startswith("I am proposer 0 in layer 1. Final answer: 42\n")  # it stands
    assert "stopped: 100% of the layer's answers agree on 42" in out
    assert "answer: agreement: proposer 0's response stands (no call)" in out
    assert "4 calls (0 failed)" in out
    assert "layer 1: proposer 3 done" in err and "moderator after layer 1: stop" in err


def test_ask_json_has_the_whole_trace(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _err = run(["ask", "q", "--model", "fake", "--json", "-n", "3", "-k", "2"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["answer"].endswith("Final answer: 42")
    assert len(data["layers"][0]["candidates"]) == 3
    assert data["layers"][0]["judge"] | {"reasoning": ""} == {
        "selected": [0, 1],  # one answer for three: selected by vote, no judge call
        "method": "vote",
        "reasoning": "",
        "critique": "",
        "called": False,
        "fallback": None,
        "stop_vote": None,
    }
    assert data["decisions"][0]["stop"] is True
    assert data["summary"]["total"]["calls"] == len(data["calls"]) == 3
    assert data["config"]["n_proposers"] == 3


def test_ask_streams_the_final_answer(capsys: pytest.CaptureFixture[str]) -> None:
    ask = ["ask", "q", "--model", "fake", "--stream", "--quiet"]
    code, out, _ = run([*ask, "--finish", "aggregate"], capsys)
    assert code == 0
    assert out.startswith("I am aggregator None in layer 1. Final answer: 42\n")
    code, out, _ = run(ask, capsys)  # no call writes an agreed answer: printed whole
    assert code == 0 and out.startswith("I am proposer 0 in layer 1. Final answer: 42\n")


def test_question_from_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"Why?\n")))
    code, out, _ = run(["ask", "-", "--model", "fake", "--json", "--quiet"], capsys)
    assert code == 0 and json.loads(out)["question"] == "Why?"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["ask", "  ", "--model", "fake"], "prompt: empty or only whitespace"),
        (["ask", "q", "-k", "9"], "k: k=9 is larger than n_proposers=4"),
        (["ask", "q", "--preset", "moa", "-k", "2"], "k: the moa preset is dense"),
        (["ask", "q", "--model", "nope"], "model 'nope': name a provider"),
        (["ask", "q", "--model", "x@ftp://h"], "expected 'MODEL@http://host:port/v1'"),
        (["ask", "q", "--roles", "a", "b"], "roles: got 2 entries for n_proposers=4"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _out, err = run(argv, capsys)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert err.startswith("smoa: error: ") and err.count("\n") == 1


def test_invalid_utf8_on_stdin(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9?")))
    code, _, err = run(["ask", "-", "--model", "fake"], capsys)
    assert code == 2 and "stdin is not valid UTF-8 (byte 3)" in err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"k": "two"}', "k: Input should be a valid integer"),
        ('{"temperature": 0.2}', "temperature: Extra inputs are not permitted"),
        ("[1, 2]", "expected a JSON object"),
        ("{not json", "cannot read a JSON object"),
    ],
)
def test_config_file_errors(
    content: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "config.json"
    path.write_text(content)
    code, _, err = run(["ask", "q", "--model", "fake", "--config", str(path)], capsys)
    assert code == 2 and message in err


def test_config_file_and_flags_combine(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"preset": "moa", "n_proposers": 2, "k": 2, "model": "fake"}')
    code, out, _ = run(["ask", "q", "--config", str(path), "--layers", "3", "--json"], capsys)
    assert code == 0
    data = json.loads(out)
    assert len(data["layers"]) == 3 and data["config"]["preset"] == "moa"


def test_local_status_without_a_server(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["local", "status"], capsys)
    assert code == 3 and "no local server running" in out
    code, out, _ = run(["local", "stop"], capsys)
    assert code == 0 and "no local server running" in out


def test_graph_prints_mermaid(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["graph"], capsys)
    assert code == 0 and "moderator -.-> aggregator;" in out


def test_a_closed_stdout_ends_quietly_like_a_unix_tool() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "smoa_graph.cli", "graph"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()  # the reader is gone before the graph is printed (`| head -0`)
    err = process.stderr.read().decode()
    assert process.wait(timeout=60) == 141 and err == ""


def test_only_failed_model_calls_are_reported_as_endpoint_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ask = ["ask", "q?", "--model", "fake", "-n", "2", "-k", "1", "--layers", "1", "--quiet"]
    (tmp_path / "file").write_text("not a folder")
    code = main([*ask, "--thread-id", "t", "--checkpoint-db", str(tmp_path / "file" / "c.db")])
    err = capsys.readouterr().err
    assert code == 1 and "FileExistsError" in err
    assert "model endpoint error" not in err
    failing = faulty_factory(script=["error"])  # the aggregator's call: ConnectionError
    code = main(
        [*ask, "--max-attempts", "1", "--aggregator-model", "faulty", "--finish", "aggregate"],
        model_factory=failing,
    )
    err = capsys.readouterr().err
    assert code == 1 and "model endpoint error: ConnectionError: injected connection error" in err


def test_progress_says_when_a_layer_kept_the_earlier_selection() -> None:
    fallback = "all 2 proposers failed; layer 1's selection [0, 3] stands"
    judge = {"selected": [], "method": "kept", "called": False, "fallback": fallback}
    line = _progress({"judge": {"layers": [{"layer": 2, "judge": judge}]}}, time.perf_counter())
    assert line is not None and line.endswith(f"layer 2: {fallback}")
