"""Fakes for tests and benchmarks: scripted and fault-injecting models, a scripted endpoint.

- ``fake_factory``: one shared ``FakeChatModel`` per spec, every call recorded;
- ``disagreeing_responder``: proposers that never agree, so every run goes to ``max_layers``;
- ``FaultyModel`` / ``faulty_factory``: proposer calls that fail, hang or babble (seeded);
- ``ScriptedEndpoint``: an OpenAI-compatible HTTP endpoint on 127.0.0.1 that answers, fails
  with a status, sends garbage, hangs, or is closed.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from pydantic import Field, PrivateAttr

from smoa_graph.config import SMoAConfig
from smoa_graph.fake import FakeCall, FakeChatModel, Responder, default_responder
from smoa_graph.local_server import free_port
from smoa_graph.models import ModelRequest

__all__ = [
    "ENDPOINT_CASES",
    "FAULTS",
    "FakeCall",
    "FakeChatModel",
    "FaultyModel",
    "Mode",
    "Responder",
    "ScriptedEndpoint",
    "default_responder",
    "disagreeing_responder",
    "fake_factory",
    "faulty_factory",
    "retried",
    "time_bound_s",
]


def disagreeing_responder(call: FakeCall) -> str:
    """Proposer i answers i + 10 (no agreement) and the moderator votes to go on: every run
    goes to ``max_layers``. Other roles answer as ``default_responder``."""
    if call.role == "proposer" and call.index is not None:
        return f"Proposer {call.index} thinks differently. Final answer: {call.index + 10}"
    if call.role == "moderator":
        return '{"reason": "they disagree", "quality": 3, "stop": false}'
    return default_responder(call)


EVERY_ROLE: dict[str, Any] = {
    "max_layers": 3,
    "moderator": "hybrid",
    "selection": "judge",
    "activation": "all",
    "judge_view_chars": None,
    "stop_share": None,
    "final_layer_judge": True,
    "finish": "aggregate",
    "role_prompts": True,
}
"""SMoA with every role at work: the judge selects, the moderator model votes when the selection
disagrees, the aggregator synthesises. Tests of those roles start from it; the ``smoa`` preset's
own defaults skip calls that measured not to pay."""


def every_role(**fields: Any) -> SMoAConfig:
    """A config of :data:`EVERY_ROLE` with ``fields`` laid over it."""
    return SMoAConfig(**{**EVERY_ROLE, **fields})


def fake_factory(**fake_options: Any) -> Callable[[ModelRequest], FakeChatModel]:
    """A model factory that builds one shared ``FakeChatModel`` per spec."""
    models: dict[str, FakeChatModel] = {}

    def factory(request: ModelRequest) -> FakeChatModel:
        if request.spec not in models:
            models[request.spec] = FakeChatModel(spec=request.spec, **fake_options)
        return models[request.spec]

    factory.models = models  # type: ignore[attr-defined]
    return factory


Fault = Literal["error", "timeout", "empty", "garbage"]
FAULTS: tuple[Fault, ...] = ("error", "timeout", "empty", "garbage")
GARBAGE = "\x00\ufffd ?! \x1b"


class FaultyModel(FakeChatModel):
    """A fake chat model that injects faults: first those of ``script``, then at random.

    ``error`` raises ``ConnectionError``, ``timeout`` sleeps ``hang_s`` (``proposer_timeout_s``
    cuts it), ``empty`` and ``garbage`` answer with no usable text. ``injected`` counts what was
    injected.
    """

    script: list[Fault | None] = Field(default_factory=list)
    rate: float = 0.0
    hang_s: float = 30.0
    injected: Counter[str] = Field(default_factory=Counter)
    _faults: random.Random = PrivateAttr()

    def model_post_init(self, context: Any) -> None:
        super().model_post_init(context)
        self._faults = random.Random(self.seed)

    def _next_fault(self) -> Fault | None:
        if self.script:
            fault = self.script.pop(0)
        elif self._faults.random() < self.rate:
            fault = self._faults.choice(FAULTS)
        else:
            fault = None
        if fault is not None:
            self.injected[fault] += 1
        return fault

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        fault = self._next_fault()
        if fault == "timeout":
            await asyncio.sleep(self.hang_s)
        if fault == "error":
            raise ConnectionError("injected connection error")
        chunks = [c async for c in super()._astream(messages, stop, run_manager, **kwargs)]
        if fault in ("empty", "garbage"):
            last = chunks[-1].message
            assert isinstance(last, AIMessageChunk)
            text = "" if fault == "empty" else GARBAGE
            message = AIMessageChunk(
                content=text,
                usage_metadata=last.usage_metadata,
                response_metadata=last.response_metadata,
            )
            chunks = [ChatGenerationChunk(message=message)]
        for chunk in chunks:
            yield chunk


def faulty_factory(**faulty: Any) -> Callable[[ModelRequest], BaseChatModel]:
    """Models by spec: ``faulty`` is a ``FaultyModel(**faulty)``, any other spec a plain fake."""
    models: dict[str, BaseChatModel] = {}

    def factory(request: ModelRequest) -> BaseChatModel:
        if request.spec not in models:
            kind = FaultyModel if request.spec == "faulty" else FakeChatModel
            options = faulty if request.spec == "faulty" else {}
            models[request.spec] = kind(spec=request.spec, **options)
        return models[request.spec]

    factory.models = models  # type: ignore[attr-defined]
    return factory


Mode = Literal["ok", "garbage", "hang", "closed"] | int


def _words(messages: list[dict[str, Any]]) -> int:
    return sum(len(str(m.get("content", "")).split()) for m in messages)


class ScriptedEndpoint:
    """An OpenAI-compatible chat endpoint on 127.0.0.1, answering as ``mode`` says.

    ``"ok"``: a valid completion with usage, streamed or not (a JSON verdict when the request
    asks for a JSON schema); an ``int``: that HTTP status, echoing the request's Authorization
    header in the body like a careless server would; ``"garbage"``: 200 with a body that is not
    JSON; ``"hang"``: read the request, never answer; ``"closed"``: nothing listens on the port.
    ``requests`` counts the chat requests received, ``authorizations`` keeps their distinct
    Authorization headers (to check a key was sent). Use it as a context manager.
    """

    def __init__(self, mode: Mode = "ok", answer: str = "Final answer: 42") -> None:
        self.mode = mode
        self.answer = answer
        self.requests = 0
        self.authorizations: set[str] = set()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.port = free_port()

    @property
    def base_url(self) -> str:
        """The ``/v1`` URL to give ``MODEL@BASE_URL``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> Self:
        if self.mode != "closed":
            self._server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
            self._server.daemon_threads = True
            self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop serving: later connections are refused (a killed server)."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _reply(self, request: dict[str, Any]) -> tuple[str, dict[str, int]]:
        text = self.answer
        if "response_format" in request:  # judge / moderator: a verdict that always parses
            text = json.dumps({"reasoning": "r", "chosen": [1], "critique": "c", "stop": True})
        prompt, completion = _words(request.get("messages", [])), len(text.split())
        usage = {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
        return text, usage

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as real endpoints do

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet: no access log on stderr."""

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                endpoint.requests += 1
                endpoint.authorizations.add(self.headers.get("Authorization", ""))
                mode = endpoint.mode
                if mode == "hang":
                    endpoint._stop.wait(60)
                    return
                if mode == "garbage":
                    self._send(200, b"<html>502 Bad Gateway</html>", "application/json")
                    return
                if isinstance(mode, int):
                    message = f"error {mode}; got Authorization: {self.headers['Authorization']}"
                    error = {"error": {"message": message, "type": "scripted", "code": mode}}
                    self._send(mode, json.dumps(error).encode(), "application/json")
                    return
                request = json.loads(body)
                text, usage = endpoint._reply(request)
                base = {"id": "c1", "created": 0, "model": request.get("model", "m")}
                if not request.get("stream"):
                    choice = {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                    reply = {**base, "object": "chat.completion", "choices": [choice]}
                    self._send(
                        200, json.dumps({**reply, "usage": usage}).encode(), "application/json"
                    )
                    return
                chunk = {**base, "object": "chat.completion.chunk"}
                delta = {"role": "assistant", "content": text}
                events = [
                    {**chunk, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]},
                    {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
                    {**chunk, "choices": [], "usage": usage},
                ]
                data = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
                self._send(200, data.encode(), "text/event-stream")

        return Handler


ENDPOINT_CASES: tuple[tuple[str, Mode], ...] = (
    ("nothing listening", "closed"),
    ("401 unauthorized", 401),
    ("429 rate limited", 429),
    ("500 server error", 500),
    ("200, body not JSON", "garbage"),
    ("never answers", "hang"),
)


def retried(mode: Mode) -> bool:
    """Whether a failure of this kind is transient, hence retried."""
    return mode in ("closed", "hang", 429, 500)


def time_bound_s(config: SMoAConfig) -> float:
    """Worst case until a layer whose endpoint fails gives up (see docs/reliability.md)."""
    waits = sum(config.retry_backoff_s * 2**i + 1 for i in range(config.max_attempts - 1))
    return config.max_attempts * config.proposer_timeout_s + waits
