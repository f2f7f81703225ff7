"""``smoa serve``: the OpenAI-compatible server, over real HTTP on loopback, with fake models."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.messages import BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from langchain_openai import ChatOpenAI
from pydantic import Field
from starlette.applications import Starlette

from smoa_graph import SMoAConfig, build_smoa_graph
from smoa_graph.cli import main
from smoa_graph.config import PRESET_DEFAULTS
from smoa_graph.models import ModelConfigError, ModelRequest
from smoa_graph.server import ServerSettings, create_app, loopback_hosts
from smoa_graph.testing import FakeChatModel

ANSWER = "I am proposer 0 in layer 1. Final answer: 42"  # the fakes agree: proposer 0's stands
AGGREGATED = "I am aggregator None in layer 1. Final answer: 42"  # with finish='aggregate'
JUDGED = {"selection": "judge", "activation": "all", "final_layer_judge": True}
QUESTION = [{"role": "user", "content": "What is 6 * 7?"}]


@dataclass
class Recorder:
    """A model factory that records every request and hands out one shared fake model."""

    model: FakeChatModel = field(default_factory=FakeChatModel)
    requests: list[ModelRequest] = field(default_factory=list)

    def __call__(self, request: ModelRequest) -> FakeChatModel:
        self.requests.append(request)
        return self.model


@contextmanager
def serving(app: Starlette) -> Iterator[str]:
    """``app`` on uvicorn on a free loopback port in a thread; yields its base URL."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def make_app(
    factory: Callable[[ModelRequest], Any], base: dict[str, Any] | None = None, **settings: Any
) -> Starlette:
    return create_app(
        {"model": "fake", **(base or {})}, ServerSettings(**settings), model_factory=factory
    )


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def url(recorder: Recorder) -> Iterator[str]:
    with serving(make_app(recorder)) as base_url:
        yield base_url


def direct_counts(config: SMoAConfig) -> dict[str, Any]:
    """Calls and tokens, by role and in total, of the same run made on the graph directly."""
    graph = build_smoa_graph(config, model_factory=Recorder()).compile()
    state = asyncio.run(graph.ainvoke({"messages": [("user", QUESTION[0]["content"])]}))
    return counts(state["summary"])


def counts(summary: dict[str, Any]) -> dict[str, Any]:
    """Calls and tokens by role and in total (model latencies differ from run to run)."""
    buckets = {"total": summary["total"], **summary["by_role"]}
    return {name: {k: v for k, v in b.items() if k != "latency_s"} for name, b in buckets.items()}


# -- clients -----------------------------------------------------------------------------------


def test_openai_client_completion(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    reply = client.chat.completions.create(model="smoa", messages=QUESTION)  # type: ignore[arg-type]
    assert reply.choices[0].message.content == ANSWER
    assert reply.model == "smoa" and reply.choices[0].finish_reason == "stop"
    summary = reply.model_extra["smoa"] if reply.model_extra else None
    assert counts(summary) == direct_counts(SMoAConfig(model="fake"))
    assert reply.usage is not None
    assert reply.usage.total_tokens == summary["total"]["total_tokens"] > 0
    assert reply.usage.prompt_tokens == summary["total"]["input_tokens"]
    assert reply.usage.completion_tokens == summary["total"]["output_tokens"]


def test_openai_client_stream_yields_only_the_final_answer(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    chunks = list(
        client.chat.completions.create(
            model="smoa",
            messages=QUESTION,  # type: ignore[arg-type]
            stream=True,
            stream_options={"include_usage": True},
            extra_body={"smoa": {"finish": "aggregate"}},  # the aggregator streams its tokens
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == AGGREGATED  # no proposer, judge or moderator token
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason == "stop"]
    assert len(finish) == 1
    summary = (finish[0].model_extra or {})["smoa"]
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.total_tokens == summary["total"]["total_tokens"] > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_stream_without_usage_has_no_usage_chunk(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    chunks = list(
        client.chat.completions.create(model="smoa", messages=QUESTION, stream=True)  # type: ignore[arg-type]
    )
    assert all(c.choices for c in chunks) and chunks[-1].choices[0].finish_reason == "stop"


def test_chat_openai_invoke_and_stream(url: str) -> None:
    llm = ChatOpenAI(base_url=f"{url}/v1", api_key="unused", model="moa", stream_usage=True)  # type: ignore[arg-type]
    expected = direct_counts(SMoAConfig(model="fake", preset="moa"))["total"]["total_tokens"]
    reply = llm.invoke("What is 6 * 7?")
    assert reply.text == "I am aggregator None in layer 2. Final answer: 42"  # moa: 2 layers
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["total_tokens"] == expected
    pieces = list(llm.stream("What is 6 * 7?"))
    assert "".join(p.text for p in pieces) == reply.text
    streamed = sum(pieces[1:], pieces[0])
    assert streamed.usage_metadata is not None
    assert streamed.usage_metadata["total_tokens"] == expected


def test_models_are_the_presets(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    assert [m.id for m in client.models.list()] == list(PRESET_DEFAULTS)


def test_twenty_concurrent_clients() -> None:
    recorder = Recorder(FakeChatModel(latency_s=0.02))
    with serving(make_app(recorder, max_concurrent_runs=20)) as base_url:
        client = openai.AsyncOpenAI(base_url=f"{base_url}/v1", api_key="unused")

        async def one(i: int) -> str:
            question = [{"role": "user", "content": f"question {i}"}]
            if i % 2:
                reply = await client.chat.completions.create(model="smoa", messages=question)  # type: ignore[arg-type]
                return reply.choices[0].message.content or ""
            stream = await client.chat.completions.create(
                model="smoa",
                messages=question,  # type: ignore[arg-type]
                stream=True,
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

        async def all_of_them() -> list[str]:
            try:
                return await asyncio.gather(*(one(i) for i in range(20)))
            finally:
                await client.close()

        answers = asyncio.run(all_of_them())
    assert answers == [ANSWER] * 20
    proposer_prompts = {c.prompt for c in recorder.model.calls if c.role == "proposer"}
    assert all(any(f"question {i}" in p for p in proposer_prompts) for i in range(20))
    assert len(recorder.model.calls) == 20 * 4  # 4 proposers who agree: the first one stands


# -- per-request configuration -----------------------------------------------------------------


def post(base_url: str, body: Any, **kwargs: Any) -> httpx.Response:
    return httpx.post(f"{base_url}/v1/chat/completions", json=body, timeout=30, **kwargs)


def test_request_config_overlays_the_servers(recorder: Recorder) -> None:
    with serving(make_app(recorder, {"n_proposers": 3, "max_layers": 2})) as base_url:
        body = {
            "model": "smoa",
            "messages": QUESTION,
            "temperature": 0.2,
            "max_completion_tokens": 50,
            "smoa": {"k": 1, "moderator": "never", **JUDGED, "finish": "aggregate"},
        }
        reply = post(base_url, body)
    assert reply.status_code == 200, reply.text
    summary = reply.json()["smoa"]
    assert summary["by_role"]["proposer"]["calls"] == 3 * 2  # the server's n and layers
    assert summary["layers_run"] == 2  # the request's moderator
    proposers = [r for r in recorder.requests if r.temperature == 0.2]
    assert proposers and all(r.max_tokens == 50 for r in proposers)
    judged = [c for c in recorder.model.calls if c.role == "aggregator"]
    assert judged and judged[0].prompt.count("Final answer: 42") == 1  # k=1: one response


def test_a_request_config_equal_to_the_defaults_is_honoured(recorder: Recorder) -> None:
    base = {"model": "local", "k": 3, **JUDGED, "finish": "aggregate"}
    with serving(make_app(recorder, base)) as base_url:
        reply = post(base_url, {"model": "smoa", "messages": QUESTION, "smoa": {"k": 2}})
    assert reply.status_code == 200, reply.text
    aggregator = next(c for c in recorder.model.calls if c.role == "aggregator")
    assert aggregator.prompt.count("Final answer: 42") == 2  # k=2, not the server's 3


def test_trusted_clients_may_choose_models() -> None:
    recorder = Recorder()

    def factory(request: ModelRequest) -> FakeChatModel:
        if request.spec == "broken":
            raise ModelConfigError("model 'broken': no such provider")
        return recorder(request)

    with serving(make_app(factory, trust_request_models=True)) as base_url:
        chosen = post(base_url, {"model": "smoa", "messages": QUESTION, "smoa": {"model": "m2"}})
        broken = post(
            base_url, {"model": "smoa", "messages": QUESTION, "smoa": {"model": "broken"}}
        )
    assert chosen.status_code == 200 and {r.spec for r in recorder.requests} == {"m2"}
    assert broken.status_code == 400 and "no such provider" in broken.json()["error"]["message"]


def test_model_picks_the_preset(url: str, recorder: Recorder) -> None:
    reply = post(url, {"model": "single", "messages": QUESTION})
    assert reply.status_code == 200, reply.text
    assert set(reply.json()["smoa"]["by_role"]) == {"proposer"}  # no judge, moderator, aggregator
    assert [c.role for c in recorder.model.calls] == ["proposer"]


def test_system_and_assistant_messages_are_history(url: str, recorder: Recorder) -> None:
    messages = [
        {"role": "system", "content": "Answer tersely."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": [{"type": "text", "text": "What is 6 * 7?"}]},
    ]
    assert post(url, {"model": "single", "messages": messages}).status_code == 200
    prompt = recorder.model.calls[0].prompt
    assert "System: Answer tersely." in prompt and "Assistant: Hello!" in prompt
    assert prompt.endswith("Current request:\nWhat is 6 * 7?")  # after the history


# -- bad requests: an OpenAI-style error naming the field, and no model call -------------------

BAD_REQUESTS = [
    ({"model": "gpt-4o", "messages": QUESTION}, 404, "model", "unknown; the models are"),
    ({"messages": QUESTION}, 400, "model", "Field required"),
    ({"model": "smoa"}, 400, "messages", "Field required"),
    ({"model": "smoa", "messages": []}, 400, "messages", "at least 1 item"),
    ({"model": "smoa", "messages": QUESTION, "n": 2}, 400, "n", "only n=1"),
    ({"model": "smoa", "messages": QUESTION, "tools": [{}]}, 400, "tools", "run tools in your app"),
    ({"model": "smoa", "messages": QUESTION, "top_p": 0.5}, 400, "top_p", "remove it"),
    ({"model": "smoa", "messages": QUESTION, "temperature": 3}, 400, "temperature", "less than"),
    ({"model": "smoa", "messages": QUESTION, "smoa": {"k": 9}}, 400, "smoa.k", "k=9 is larger"),
    ({"model": "smoa", "messages": QUESTION, "smoa": {"kk": 1}}, 400, "smoa.kk", "unknown config"),
    (
        {"model": "smoa", "messages": QUESTION, "smoa": {"preset": "moa"}},
        400,
        "smoa.preset",
        "model",
    ),
    (
        {"model": "smoa", "messages": QUESTION, "smoa": {"max_attempts": 5}},
        400,
        "smoa.max_attempts",
        "set by the server (smoa serve --max-attempts)",
    ),
    (
        {"model": "smoa", "messages": QUESTION, "smoa": {"base_url": "http://example.com/v1"}},
        403,
        "smoa.base_url",
        "--trust-request-models",
    ),
    (
        {"model": "smoa", "messages": [*QUESTION, {"role": "assistant", "content": "42"}]},
        400,
        "messages",
        "last message must be the user's",
    ),
    (
        {"model": "smoa", "messages": [{"role": "tool", "content": "x"}]},
        400,
        "messages.0.role",
        "Input should be",
    ),
    (
        {
            "model": "smoa",
            "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}],
        },
        400,
        "messages.0.content",
        "only text parts",
    ),
    ({"model": "smoa", "messages": [{"role": "user", "content": " "}]}, 400, "messages", "empty"),
    (
        {"model": "smoa", "messages": [{"role": "user", "content": " "}], "stream": True},
        400,
        "messages",
        "empty",
    ),
]


@pytest.mark.parametrize(("body", "status", "param", "message"), BAD_REQUESTS)
def test_bad_request(
    url: str, recorder: Recorder, body: Any, status: int, param: str, message: str
) -> None:
    reply = post(url, body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param and message in error["message"]
    assert recorder.model.calls == []  # no model call


@pytest.mark.parametrize(
    ("content", "headers", "status", "message"),
    [
        (b'{"model": "smoa"', {"content-type": "application/json"}, 400, "not valid JSON"),
        (b"[1, 2]", {"content-type": "application/json"}, 400, "expected a JSON object"),
        (b'{"model": "smoa"}', {"content-type": "text/plain"}, 415, "application/json"),
        (b"\xff\xfe", {"content-type": "application/json"}, 400, "not valid JSON"),
    ],
)
def test_bad_body(
    url: str, recorder: Recorder, content: bytes, headers: dict[str, str], status: int, message: str
) -> None:
    reply = httpx.post(f"{url}/v1/chat/completions", content=content, headers=headers)
    assert reply.status_code == status and message in reply.json()["error"]["message"]
    assert recorder.model.calls == []


def test_body_over_the_limit_is_refused_before_parsing(recorder: Recorder) -> None:
    with serving(make_app(recorder, max_body_bytes=1000)) as base_url:
        big = {"model": "smoa", "messages": [{"role": "user", "content": "x" * 2000}]}
        reply = post(base_url, big)
        assert reply.status_code == 413 and "--max-body-bytes" in reply.json()["error"]["message"]

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit holds while reading
            yield b'{"model": "smoa", "messages": [{"role": "user", "content": "'
            yield from (b"x" * 100 for _ in range(20))
            yield b'"}]}'

        reply = httpx.post(
            f"{base_url}/v1/chat/completions",
            content=chunks(),
            headers={"content-type": "application/json"},
        )
        assert reply.status_code == 413
        assert post(base_url, {"model": "smoa", "messages": QUESTION}).status_code == 200
    assert len([c for c in recorder.model.calls if c.role == "proposer"]) == 4  # one run


def test_unknown_path_is_an_openai_error(url: str) -> None:
    reply = httpx.get(f"{url}/v1/completions")
    assert (
        reply.status_code == 404 and "POST /v1/chat/completions" in reply.json()["error"]["message"]
    )


def test_bearer_key(recorder: Recorder) -> None:
    key = "sk-server-key-0123456789"
    with serving(make_app(recorder, api_key=key)) as base_url:
        missing = post(base_url, {"model": "smoa", "messages": QUESTION})
        wrong = post(base_url, {"model": "smoa"}, headers={"authorization": "Bearer sk-wrong"})
        models = httpx.get(f"{base_url}/v1/models")
        assert missing.status_code == wrong.status_code == models.status_code == 401
        assert missing.json()["error"]["type"] == "authentication_error"
        assert (
            "give the client the key in SMOA_SERVER_API_KEY" in missing.json()["error"]["message"]
        )
        assert wrong.json()["error"]["message"] == "wrong API key"
        assert all(key not in r.text for r in (missing, wrong, models))
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key)
        reply = client.chat.completions.create(model="smoa", messages=QUESTION)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == ANSWER
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{base_url}/v1", api_key="sk-wrong").models.list()
    assert len([c for c in recorder.model.calls if c.role == "proposer"]) == 4  # one run


def test_loopback_server_answers_only_loopback_host_names(recorder: Recorder) -> None:
    with serving(make_app(recorder, allowed_hosts=loopback_hosts("127.0.0.1"))) as base_url:
        rebound = post(
            base_url, {"model": "smoa", "messages": QUESTION}, headers={"host": "a.test"}
        )
        assert rebound.status_code == 400 and rebound.json()["error"]["param"] == "Host"
        assert post(base_url, {"model": "smoa", "messages": QUESTION}).status_code == 200
        port = base_url.rsplit(":", 1)[1]
        named = post(
            base_url, {"model": "smoa", "messages": QUESTION}, headers={"host": f"localhost:{port}"}
        )
        assert named.status_code == 200
    assert loopback_hosts("0.0.0.0") is None


# -- runs in flight: capacity, disconnects, errors ---------------------------------------------


class PendingModel(FakeChatModel):
    """Streamed calls wait (up to 30 s) until released; records arrivals and cancellations."""

    started: threading.Event = Field(default_factory=threading.Event)
    release: threading.Event = Field(default_factory=threading.Event)
    cancelled: threading.Event = Field(default_factory=threading.Event)
    arrivals: list[float] = Field(default_factory=list)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        self.arrivals.append(time.monotonic())
        self.started.set()
        try:
            for _ in range(3000):
                if self.release.is_set():
                    break
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        async for chunk in super()._astream(messages, stop, run_manager, **kwargs):
            yield chunk


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_runs_over_the_bound_get_429_with_retry_after() -> None:
    recorder = Recorder(PendingModel())
    app = make_app(recorder, {"preset": "single"}, max_concurrent_runs=1)
    with serving(app) as base_url:
        first: list[httpx.Response] = []
        thread = threading.Thread(
            target=lambda: first.append(post(base_url, {"model": "single", "messages": QUESTION}))
        )
        thread.start()
        model = recorder.model
        assert isinstance(model, PendingModel)
        wait_for(model.started.is_set, "the first run's model call")
        busy = post(base_url, {"model": "single", "messages": QUESTION})
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["type"] == "rate_limit_error"
        model.release.set()
        thread.join(10)
        assert first[0].status_code == 200
        assert post(base_url, {"model": "single", "messages": QUESTION}).status_code == 200
    assert len(model.calls) == 2  # the refused request made none


@pytest.mark.parametrize("stream", [False, True])
def test_client_disconnect_cancels_the_run(stream: bool) -> None:
    recorder = Recorder(PendingModel())
    app = make_app(recorder, {"preset": "single"}, max_concurrent_runs=1)
    model = recorder.model
    assert isinstance(model, PendingModel)
    with serving(app) as base_url:

        async def leave_early() -> None:
            body = {"model": "single", "messages": QUESTION, "stream": stream}
            async with httpx.AsyncClient(timeout=30) as client:
                request = client.stream("POST", f"{base_url}/v1/chat/completions", json=body)
                task = asyncio.ensure_future(request.__aenter__())
                while not model.started.is_set():
                    await asyncio.sleep(0.01)
                if stream:
                    response = await task  # headers and the role chunk came: the run is on
                    assert response.status_code == 200
                    await request.__aexit__(None, None, None)
                else:
                    task.cancel()  # closes the connection while the answer is pending

        asyncio.run(leave_early())
        wait_for(model.cancelled.is_set, "the pending model call to be cancelled")
        server = app.state.smoa
        wait_for(lambda: server.in_flight == 0, "the run's slot to be freed")


class FailingModel(FakeChatModel):
    """Every proposer call fails with an error that quotes a secret."""

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        raise RuntimeError(f"upstream refused key {os.environ['TEST_UPSTREAM_API_KEY']}")
        yield  # an async generator


@pytest.mark.parametrize("stream", [False, True])
def test_model_errors_are_502_with_the_redacted_message(
    stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-upstream-secret-value-123"
    monkeypatch.setenv("TEST_UPSTREAM_API_KEY", secret)
    with serving(make_app(Recorder(FailingModel()), {"max_attempts": 1})) as base_url:
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.APIError) as caught:
            reply = client.chat.completions.create(model="smoa", messages=QUESTION, stream=stream)  # type: ignore[call-overload]
            list(reply) if stream else None
        raw = post(base_url, {"model": "smoa", "messages": QUESTION, "stream": stream})
    assert "all 4 proposers of layer 1 failed" in str(caught.value.message)
    assert secret not in str(caught.value.message) and "***" in str(caught.value.message)
    assert secret not in raw.text
    if stream:  # the stream had begun: the error is its last event
        assert raw.status_code == 200 and '"code": "model_error"' in raw.text
        assert "[DONE]" not in raw.text
    else:
        assert raw.status_code == 502 and raw.json()["error"]["code"] == "model_error"


def test_no_prompt_in_the_logs_unless_asked(caplog: pytest.LogCaptureFixture) -> None:
    question = [{"role": "user", "content": "my private question"}]
    caplog.set_level("INFO", logger="smoa_graph.server")
    for log_prompts in (False, True):
        caplog.clear()
        with serving(make_app(Recorder(), log_prompts=log_prompts)) as base_url:
            assert post(base_url, {"model": "smoa", "messages": question}).status_code == 200
        lines = [r.getMessage() for r in caplog.records if r.name == "smoa_graph.server"]
        assert any("ok," in line and "tokens" in line for line in lines)
        assert any("my private question" in line for line in lines) is log_prompts


# -- the command: a real process, SIGTERM ------------------------------------------------------


TERMINATED = -signal.SIGTERM
"""Exit status after SIGTERM: uvicorn re-raises the signal once it has shut down gracefully."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def smoa_serve(*flags: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``smoa serve`` in a subprocess on a free loopback port, up and answering."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2]), "SMOA_SERVER_API_KEY": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "smoa_graph.cli", "serve", "--port", str(port), *flags],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "smoa serve did not start"
            try:
                if httpx.get(f"{base_url}/v1/models", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield process, base_url
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=10)


def test_smoa_serve_answers_and_exits_on_sigterm() -> None:
    with smoa_serve("--model", "fake") as (process, base_url):
        client = openai.OpenAI(base_url=f"{base_url}/v1", api_key="unused")
        reply = client.chat.completions.create(model="smoa", messages=QUESTION)  # type: ignore[arg-type]
        assert reply.choices[0].message.content == ANSWER
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == TERMINATED


def gated_upstream() -> tuple[Starlette, PendingModel]:
    """An OpenAI-compatible endpoint (this server, ``single``) whose answers wait for a gate."""
    model = PendingModel()
    app = make_app(Recorder(model), {"preset": "single"}, max_concurrent_runs=10)
    return app, model


def test_sigterm_drains_runs_in_flight() -> None:
    upstream, gate = gated_upstream()
    with (
        serving(upstream) as upstream_url,
        smoa_serve(
            "--model", f"single@{upstream_url}/v1", "--preset", "single", "--drain-timeout-s", "20"
        ) as (process, base_url),
    ):
        replies: list[httpx.Response] = []
        body = {"model": "single", "messages": QUESTION}
        clients = [
            threading.Thread(
                target=lambda s=s: replies.append(post(base_url, {**body, "stream": s}))
            )
            for s in (False, True)
        ]
        for client in clients:
            client.start()
        wait_for(lambda: len(gate.arrivals) == 2, "both runs to reach the upstream model", 30)
        process.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        assert process.poll() is None  # draining: the runs are still going
        with pytest.raises(httpx.TransportError):  # no new connections while draining
            httpx.get(f"{base_url}/v1/models", timeout=2)
        gate.release.set()
        for client in clients:
            client.join(30)
        assert process.wait(timeout=20) == TERMINATED
    answers = sorted(r.text for r in replies)
    assert [r.status_code for r in replies] == [200, 200]
    streamed = next(a for a in answers if a.startswith("data:")).split("\r\n\r\n")
    assert streamed[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(event.removeprefix("data: ")) for event in streamed[:-2]]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == "I am proposer 0 in layer 1. Final answer: 42"
    plain = json.loads(next(a for a in answers if not a.startswith("data:")))
    assert (
        plain["choices"][0]["message"]["content"] == "I am proposer 0 in layer 1. Final answer: 42"
    )


def test_sigterm_cancels_runs_after_the_drain_bound() -> None:
    upstream, gate = gated_upstream()
    with (
        serving(upstream) as upstream_url,
        smoa_serve(
            "--model", f"single@{upstream_url}/v1", "--preset", "single", "--drain-timeout-s", "1"
        ) as (process, base_url),
    ):
        outcome: list[Any] = []

        def ask() -> None:
            try:
                outcome.append(post(base_url, {"model": "single", "messages": QUESTION}))
            except httpx.TransportError as exc:
                outcome.append(exc)

        client = threading.Thread(target=ask)
        client.start()
        wait_for(lambda: len(gate.arrivals) == 1, "the run to reach the upstream model", 30)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == TERMINATED
        stopped_after = time.monotonic() - signalled
        client.join(10)
        wait_for(gate.cancelled.is_set, "the upstream call to be abandoned")
    assert 1.0 <= stopped_after < 10, stopped_after
    assert not isinstance(outcome[0], httpx.Response) or outcome[0].status_code != 200
    gate.release.set()


def test_serve_rejects_a_bad_config_before_starting(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--model", "fake", "-k", "9"]) == 2
    assert "k: k=9 is larger than n_proposers=4" in capsys.readouterr().err


def test_a_voting_preset_streams_its_answer_too(url: str) -> None:
    client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
    chunks = list(
        client.chat.completions.create(
            model="self-consistency",
            messages=QUESTION,  # type: ignore[arg-type]
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.endswith("Final answer: 42") and "proposer" in text  # the winning response
