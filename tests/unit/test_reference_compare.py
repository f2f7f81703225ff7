"""benchmarks/reference_compare.py's pure parts: the HTTP redirect, their imports, the table."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
import reference_compare as rc

BODY = {
    "choices": [{"message": {"content": "4"}}],
    "usage": {"prompt_tokens": 30, "completion_tokens": 5, "prompt_tokens_details": {}},
    "timings": {"cache_n": 12},
}


class FakeResponse:
    def __init__(self, body: Any) -> None:
        self.body = body

    def json(self) -> Any:
        if self.body is None:
            raise ValueError("not JSON")
        return self.body


def test_usage_of_prefers_cached_tokens_then_cache_n() -> None:
    usage = {"prompt_tokens": 30, "completion_tokens": 5}
    details = {**usage, "prompt_tokens_details": {"cached_tokens": 20}}
    assert rc.usage_of({"usage": details, "timings": {"cache_n": 12}}) == (30, 5, 20)
    assert rc.usage_of(BODY) == (30, 5, 12)
    assert rc.usage_of({"usage": usage}) == (30, 5, 0)
    assert rc.usage_of({"error": {"type": "server_error"}}) == (0, 0, 0)


def test_redirect_rewrites_url_model_and_timeout_and_counts() -> None:
    sent: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    bodies = iter([BODY, None])

    def post(url: str, json: dict[str, Any], **kwargs: Any) -> FakeResponse:
        sent.append((url, json, kwargs))
        return FakeResponse(next(bodies))

    redirect = rc.Redirect("http://127.0.0.1:9/v1", 30.0, time.monotonic() + 600, post=post)
    body = {"model": "Qwen/Qwen2-72B-Instruct", "max_tokens": 2048, "messages": []}
    headers = {"Authorization": "Bearer "}
    assert redirect.post("https://api.together.xyz/v1/chat/completions", json=body).json() == BODY
    redirect.post("https://api.together.xyz/v1/chat/completions", json=body, headers=headers)
    url, json, kwargs = sent[0]
    assert url == "http://127.0.0.1:9/v1/chat/completions"
    assert json == {**body, "model": rc.MODEL_ALIAS} and body["model"] != rc.MODEL_ALIAS
    assert kwargs == {"timeout": 30.0} and sent[1][2]["headers"] == headers
    tally = redirect.take()
    assert (tally.calls, tally.tokens) == (2, 35)
    assert tally.cached_tokens == 12 and tally.max_tokens == {2048: 2}
    assert redirect.take() == rc.Tally()


def test_redirect_stops_past_the_deadline_through_their_except_exception() -> None:
    redirect = rc.Redirect("http://x/v1", 30.0, time.monotonic() - 1, post=None)
    with pytest.raises(rc.OutOfTime):
        try:
            redirect.post("url", json={})
        except Exception:  # what their retry loops catch
            pytest.fail("OutOfTime must not be an Exception")
    assert redirect.take().calls == 0


def test_load_reference_uses_stand_ins_and_restores_sys_modules(tmp_path: Path) -> None:
    (tmp_path / "utils.py").write_text("import requests\n\ndef where():\n    return 'theirs'\n")
    (tmp_path / "their_script.py").write_text(
        "import datasets\nfrom huggingface_hub import login\nfrom together import Together\n"
        "from transformers import AutoTokenizer\nfrom utils import *\nlogin('')\n"
        "client = Together(api_key='')\ntok = AutoTokenizer.from_pretrained('m')\n"
    )
    before = {name: sys.modules.get(name) for name in (*rc.STUBBED, "utils")}
    script, utils = rc.load_reference(tmp_path, "their_script")
    try:
        assert script.where() == "theirs" and utils.where is script.where
        assert script.tok.tokenize("two words") == ["two", "words"]
        assert {name: sys.modules.get(name) for name in before} == before
        assert str(tmp_path) not in sys.path and not (tmp_path / "__pycache__").exists()
    finally:
        sys.modules.pop("their_script", None)


def rows(system: str, walls: list[float], calls: int, tokens: int) -> list[dict[str, Any]]:
    return [
        {"item": f"i{n}", "system": system, "wall_s": wall, "calls": calls, "tokens": tokens,
         "cached_tokens": 10, "server_cpu_s": wall / 2}
        for n, wall in enumerate(walls)
    ]  # fmt: skip


def test_table_ratios_and_goals() -> None:
    data = [
        *rows("ref-moa", [10.0, 20.0, 30.0], 9, 1000),
        *rows("moa", [9.0, 22.0, 27.0], 9, 900),
        *rows("ref-smoa", [40.0, 40.0, 40.0], 11, 2000),
        *rows("smoa", [18.0, 22.0, 50.0], 8, 1000),
        {"item": "i3", "system": "smoa", "error": "TimeoutError: late"},
    ]
    lines = rc.table(data)
    assert "| moa | 3 | 22.0 (9.0-27.0) | 11.0 | 9 | 900 | 10 |" in lines
    moa = next(line for line in lines if line.startswith("| moa / ref-moa"))
    # medians 22 / 20 = 1.1 (not met); per-item ratios 0.9, 1.1, 0.9 -> 0.9 (met)
    assert moa == (
        "| moa / ref-moa | 3 | 1.100 (not met) | 0.900 (met) | 1.100 | 1.000 | 0.900 | <= 1 |"
    )
    smoa = next(line for line in lines if line.startswith("| smoa / ref-smoa"))
    assert smoa.startswith("| smoa / ref-smoa | 3 | 0.550 (not met) | 0.550 (not met) | 0.550 |")
    assert smoa.endswith("| 0.727 | 0.500 | <= 0.5 |")


def test_cpu_s_reads_this_process() -> None:
    assert 0 < rc.cpu_s(os.getpid()) < 1e6


def test_table_without_pairs_says_n_a() -> None:
    lines = rc.table(rows("moa", [5.0], 9, 900))
    assert "| smoa / ref-smoa | 0 | n/a | n/a | n/a | n/a | n/a | <= 0.5 |" in lines
    assert not any(line.startswith("| ref-moa |") for line in lines)
