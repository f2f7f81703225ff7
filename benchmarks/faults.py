"""Fault injection: proposers that fail, hang or babble, and model endpoints that misbehave.

1. Agent faults (fake models, seeded): many runs in which a share of the proposer calls fail at
   random (connection error, hang past the timeout, empty text, garbage text). Every run must
   end with an answer, or with ``AllProposersFailedError`` when a layer lost every proposer
   (counted apart: that is the documented outcome, not a crash). Anything else is a crash, a
   run past its deadline is a hang, and every injected failure must be exactly one failed call
   record in the run's state.
2. Endpoint faults (OpenAI-compatible servers on 127.0.0.1 started here): nothing listening,
   401, 429, 500, a body that is not JSON, a server that never answers. Each must end with one
   clear error within the bound of ``docs/reliability.md``, retrying only what is transient.

    PYTHONPATH=. .venv/bin/python benchmarks/faults.py [--runs 200] [--rate 0.3] [--seed 0]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal, Self

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGenerationChunk
from langgraph.checkpoint.memory import InMemorySaver
from pydantic import Field, PrivateAttr

from smoa_graph import AllProposersFailedError, ModelRequest, SMoAConfig, build_smoa_graph
from smoa_graph.local_server import free_port
from smoa_graph.state import CallRecord
from smoa_graph.testing import FakeChatModel

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


# -- a misbehaving OpenAI-compatible endpoint --------------------------------------------------

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


# -- 1. agent faults ---------------------------------------------------------------------------


@dataclass
class Tally:
    """Outcomes of a batch of runs with injected proposer faults."""

    runs: int = 0
    answered: int = 0
    all_failed: int = 0
    crashed: int = 0
    hung: int = 0
    injected: Counter[str] = field(default_factory=Counter)
    recorded: int = 0
    unaccounted_runs: int = 0
    crashes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No crash, no hang, every injected failure recorded."""
        return not (self.crashed or self.hung or self.unaccounted_runs)


async def _faulty_run(config: SMoAConfig, tally: Tally, run: int, rate: float, seed: int) -> None:
    factory = faulty_factory(rate=rate, seed=seed * 1_000_003 + run)
    graph = build_smoa_graph(config, model_factory=factory).compile(checkpointer=InMemorySaver())
    thread: Any = {"configurable": {"thread_id": f"run-{run}"}}
    deadline = config.max_layers * (config.max_attempts * config.proposer_timeout_s + 2) + 10
    calls: list[CallRecord] = []
    tally.runs += 1
    try:
        state = await asyncio.wait_for(
            graph.ainvoke({"prompt": f"question {run}"}, thread), deadline
        )
        calls = state["calls"]
        tally.answered += 1
    except AllProposersFailedError as exc:  # earlier layers are in the checkpoint, this one here
        calls = [*(await graph.aget_state(thread)).values.get("calls", []), *exc.calls]
        tally.all_failed += 1
    except TimeoutError:
        tally.hung += 1
    except Exception as exc:
        tally.crashed += 1
        tally.crashes.append(f"run {run}: {type(exc).__name__}: {exc}"[:200])
    model = factory.models.get("faulty")  # type: ignore[attr-defined]
    injected = model.injected if model is not None else Counter()
    recorded = sum(1 for c in calls if c["role"] == "proposer" and not c["ok"])
    tally.injected.update(injected)
    tally.recorded += recorded
    tally.unaccounted_runs += recorded != sum(injected.values())


async def agent_faults(
    config: SMoAConfig, runs: int, rate: float, seed: int, concurrency: int = 25
) -> Tally:
    """``runs`` runs of ``config`` whose proposers (spec ``faulty``) fail at ``rate``."""
    tally = Tally()
    semaphore = asyncio.Semaphore(concurrency)

    async def bounded(run: int) -> None:
        async with semaphore:
            await _faulty_run(config, tally, run, rate, seed)

    await asyncio.gather(*(bounded(run) for run in range(runs)))
    return tally


# -- 2. endpoint faults ------------------------------------------------------------------------

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


async def endpoint_fault(mode: Mode, **fields: Any) -> dict[str, Any]:
    """Run one layer against an endpoint failing as ``mode``: error, time, requests."""
    with ScriptedEndpoint(mode) as endpoint:
        config = SMoAConfig(model=f"m@{endpoint.base_url}", **fields)
        graph = build_smoa_graph(config).compile()
        started = time.perf_counter()
        try:
            await graph.ainvoke({"prompt": "What is 6 times 7?"})
            error = None
        except Exception as exc:
            error = exc
        elapsed = time.perf_counter() - started
        requests = endpoint.requests
    attempts = config.max_attempts if retried(mode) else 1
    return {
        "error": error,
        "seconds": elapsed,
        "bound_s": time_bound_s(config),
        "requests": requests,
        "expected_requests": 0 if mode == "closed" else config.n_proposers * attempts,
    }


ENDPOINT_FIELDS: dict[str, Any] = {
    "n_proposers": 2,
    "k": 1,
    "max_layers": 1,
    "max_attempts": 2,
    "retry_backoff_s": 0.2,
    "request_timeout_s": 1.0,
    "proposer_timeout_s": 5.0,
}


# -- report ------------------------------------------------------------------------------------


def _tally_line(name: str, tally: Tally, seconds: float) -> str:
    kinds = ", ".join(f"{k} {tally.injected[k]}" for k in FAULTS)
    injected = sum(tally.injected.values())
    return (
        f"| {name} | {tally.runs} | {tally.answered} | {tally.all_failed} | {tally.crashed} | "
        f"{tally.hung} | {injected} ({kinds}) | {tally.recorded} | "
        f"{'yes' if tally.recorded == injected and not tally.unaccounted_runs else 'NO'} | "
        f"{seconds:.1f} |"
    )


async def main(args: argparse.Namespace) -> int:
    """Run both parts and print their tables; exit status 1 if any guarantee failed."""
    common = {
        "model": "fake",
        "moderator": "never",
        "max_layers": 2,
        "retry_backoff_s": 0.0,
        "proposer_timeout_s": 0.5,
    }
    scenarios = {
        "n=4 k=2, 3 attempts": SMoAConfig(
            **common, n_proposers=4, k=2, max_attempts=3, proposer_models=["faulty"] * 4
        ),
        "n=2 k=1, 1 attempt": SMoAConfig(
            **common, n_proposers=2, k=1, max_attempts=1, proposer_models=["faulty"] * 2
        ),
    }
    print(
        f"## Agent faults: {args.runs} runs per scenario, {args.rate:.0%} of proposer calls fail "
        f"(seed {args.seed}), 2 layers, proposer timeout 0.5 s\n"
    )
    print(
        "| scenario | runs | answered | all proposers failed | crashed | hung | "
        "failures injected | failures recorded | all accounted | seconds |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    healthy = True
    for name, config in scenarios.items():
        started = time.perf_counter()
        tally = await agent_faults(config, args.runs, args.rate, args.seed)
        print(_tally_line(name, tally, time.perf_counter() - started))
        for crash in tally.crashes[:5]:
            print(f"  crash: {crash}")
        healthy &= tally.ok
    print(
        "\n'all proposers failed' runs end with AllProposersFailedError (a clear error, the "
        "documented outcome); a crash is any other exception; hung = past its deadline.\n"
    )
    fields = ENDPOINT_FIELDS
    print(
        f"## Endpoint faults: n={fields['n_proposers']}, max_attempts={fields['max_attempts']}, "
        f"request_timeout_s={fields['request_timeout_s']}, "
        f"proposer_timeout_s={fields['proposer_timeout_s']}, "
        f"retry_backoff_s={fields['retry_backoff_s']}\n"
    )
    print("| endpoint | error | seconds | hard bound | requests (expected) | ok |")
    print("|---|---|---|---|---|---|")
    for name, mode in ENDPOINT_CASES:
        result = await endpoint_fault(mode, **fields)
        error = result["error"]
        fine = (
            isinstance(error, AllProposersFailedError)
            and result["seconds"] <= result["bound_s"]
            and result["requests"] == result["expected_requests"]
        )
        healthy &= fine
        text = "none" if error is None else f"{type(error).__name__}: {error}"
        print(
            f"| {name} | {text[:110].replace('|', '/')} | {result['seconds']:.2f} | "
            f"{result['bound_s']:.1f} | {result['requests']} ({result['expected_requests']}) | "
            f"{'yes' if fine else 'NO'} |"
        )
    return 0 if healthy else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=200, help="runs per agent-fault scenario")
    parser.add_argument("--rate", type=float, default=0.3, help="share of proposer calls failing")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    raise SystemExit(asyncio.run(main(parser.parse_args())))
