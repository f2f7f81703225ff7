"""The embedded local model end to end: plumbing, not answer quality (SmolLM2 is 135M)."""

from __future__ import annotations

import json
import os
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from langchain_openai import ChatOpenAI

from smoa_graph.local_server import MODEL_ALIAS, LocalServer, process_rss_mb

BOUNDED_VERDICT = {
    "title": "Verdict",
    "description": "A short judgement.",
    "type": "object",
    "properties": {
        "answer": {"type": "string", "maxLength": 40},
        "score": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
        "tags": {
            "type": "array",
            "items": {"type": "string", "enum": ["good", "bad", "unsure"]},
            "maxItems": 2,
        },
    },
    "required": ["answer", "score", "tags"],
    "additionalProperties": False,
}


def _chat(base_url: str, max_tokens: int = 32, **kwargs: Any) -> ChatOpenAI:
    return ChatOpenAI(
        base_url=base_url,
        model=MODEL_ALIAS,
        api_key="local",
        stream_usage=True,
        max_tokens=max_tokens,
        temperature=0.7,
        **kwargs,
    )


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def test_server_is_healthy_and_serves_the_alias(local_server: LocalServer) -> None:
    root = local_server.base_url.removesuffix("/v1")
    assert _get_json(f"{root}/health")["status"] == "ok"
    models = _get_json(f"{local_server.base_url}/models")
    assert MODEL_ALIAS in [m["id"] for m in models["data"]]
    assert local_server.pid is not None
    rss = process_rss_mb(local_server.pid)
    assert rss is not None and rss > 50


def test_chat_completion_has_text_and_usage(local_base_url: str) -> None:
    reply = _chat(local_base_url).invoke("Say hello in one short sentence.")
    assert isinstance(reply.content, str) and reply.content.strip()
    assert reply.usage_metadata is not None
    assert 0 < reply.usage_metadata["output_tokens"] <= 32
    assert reply.usage_metadata["input_tokens"] > 0


def test_streaming_reports_usage(local_base_url: str) -> None:
    chunks = list(_chat(local_base_url, max_tokens=16).stream("Name three colors."))
    assert len(chunks) > 1
    merged = chunks[0]
    for chunk in chunks[1:]:
        merged += chunk
    assert merged.usage_metadata is not None and merged.usage_metadata["output_tokens"] > 0


def test_structured_output_parses_with_bounded_schema(local_base_url: str) -> None:
    judge = _chat(local_base_url, max_tokens=96).with_structured_output(
        BOUNDED_VERDICT, method="json_schema"
    )
    verdict = judge.invoke("Is 2+2=4 correct? Give a verdict.")
    assert isinstance(verdict, dict)
    assert isinstance(verdict["answer"], str) and len(verdict["answer"]) <= 40
    assert verdict["score"] in {1, 2, 3, 4, 5}
    assert set(verdict["tags"]) <= {"good", "bad", "unsure"}


def test_parallel_requests_overlap_on_server_slots(local_server: LocalServer) -> None:
    """Four requests sent together occupy several llama-server slots at the same time."""
    model = _chat(local_server.base_url, max_tokens=48, extra_body={"ignore_eos": True})
    prompts = [f"Tell a story about {topic}." for topic in ("a cat", "a ship", "rain", "a key")]
    slots_url = local_server.base_url.removesuffix("/v1") + "/slots"
    max_busy = 0
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = [pool.submit(model.invoke, prompt) for prompt in prompts]
        while not all(f.done() for f in futures):
            busy = sum(slot["is_processing"] for slot in _get_json(slots_url))
            max_busy = max(max_busy, busy)
            time.sleep(0.02)
        replies = [f.result() for f in futures]
    assert all(r.usage_metadata and r.usage_metadata["output_tokens"] == 48 for r in replies)
    assert max_busy >= 2, f"at most {max_busy} slot busy at once: requests were serialized"


def test_stop_leaves_no_process_behind(
    local_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second, short-lived server (same binary and model) is fully gone after stop()."""
    monkeypatch.setenv("SMOA_CACHE_DIR", str(tmp_path))
    server = LocalServer(
        model=local_server.model, binary=local_server.binary, parallel=1, startup_timeout=60
    )
    server.start()
    pid = server.pid
    assert pid is not None and server.startup_seconds is not None
    server.stop()
    assert not server.running
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
