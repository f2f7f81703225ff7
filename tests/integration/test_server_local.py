"""``smoa serve`` on the embedded local model: a short run through the official client."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import openai
import pytest
import uvicorn

from smoa_graph.server import create_app


@pytest.fixture
def smoa_url(local_base_url: str) -> Iterator[str]:
    """The server (n=2, one layer, few tokens) on uvicorn on a free loopback port."""
    base = {"model": f"smollm2@{local_base_url}", "n_proposers": 2, "max_layers": 1}
    app = create_app({**base, "max_tokens": 24, "aggregator_max_tokens": 32})
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    server.should_exit = True
    thread.join(10)
    sock.close()


def test_local_model_through_the_server(smoa_url: str) -> None:
    client = openai.OpenAI(base_url=smoa_url, api_key="unused", timeout=120)
    question = [{"role": "user", "content": "What is 2 + 3? End with 'Final answer: <number>'."}]
    reply = client.chat.completions.create(model="smoa", messages=question)  # type: ignore[arg-type]
    summary = (reply.model_extra or {})["smoa"]
    assert (reply.choices[0].message.content or "").strip()
    assert reply.usage is not None
    assert reply.usage.total_tokens == summary["total"]["total_tokens"] > 0
    assert summary["by_role"]["proposer"]["calls"] == 2 and summary["layers_run"] == 1

    stream = client.chat.completions.create(
        model="smoa",
        messages=question,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
