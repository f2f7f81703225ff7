"""An OpenAI-compatible HTTP server for SMoA (``smoa serve``; docs/serving.md).

Apps that speak the chat-completions API (the ``openai`` client, ``ChatOpenAI``, anything that
takes a base URL) use SMoA unchanged: the request's ``model`` names the preset, its ``smoa``
object carries config fields. One compiled graph serves every request; each request's
configuration (the server's, overlaid with the request's, validated) goes in the run context.

A request is checked before any model call, in the order a client can fix it: host, key, media
type, size (before parsing), fields, model, configuration, capacity. Each run is a task of its
own, so a client that goes away cancels it and its slot frees whatever ends it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import ipaddress
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any, Literal
from urllib.parse import urlsplit

import uvicorn
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage, SystemMessage
from langgraph.types import StreamMode
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sse_starlette import EventSourceResponse
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from smoa_graph.attempts import is_model_error
from smoa_graph.config import PRESET_DEFAULTS, SMoAConfig, validation_problems
from smoa_graph.errors import AllProposersFailedError, InvalidInputError
from smoa_graph.graph import build_smoa_graph
from smoa_graph.models import (
    ModelConfigError,
    ModelFactory,
    default_model_factory,
    describe_error,
    is_final_answer,
    redact,
)
from smoa_graph.nodes.kit import build_widest_models
from smoa_graph.state import SMoAInput

log = logging.getLogger("smoa_graph.server")

API_KEY_ENV = "SMOA_SERVER_API_KEY"
"""Environment variable of the optional bearer key that clients must send."""

SERVER_FIXED = ("max_attempts", "retry_backoff_s")
"""Config fields only the server's flags set: retries bound what one request may cost."""

OPERATOR_ONLY = (
    "model",
    "base_url",
    "api_key_env",
    "proposer_models",
    "judge_model",
    "moderator_model",
    "aggregator_model",
    "role_model",
    "roles_cache_dir",
)
"""Config fields that pick endpoints, keys or files: the server's choice unless it trusts clients
(a client that chooses ``base_url`` and ``api_key_env`` could have the server send it a key)."""

_TOOLS_FIX = "SMoA answers in text; run tools in your app and pass their results as messages"
_UNSUPPORTED = {
    "tools": _TOOLS_FIX,
    "tool_choice": _TOOLS_FIX,
    "parallel_tool_calls": _TOOLS_FIX,
    "functions": _TOOLS_FIX,
    "function_call": _TOOLS_FIX,
    "response_format": "ask for the format in the prompt and parse the answer",
}

_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
    500: "server_error",
    502: "server_error",
}


class APIError(Exception):
    """A request answered with an OpenAI-style error: status, message (with the fix), param."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.code = code
        self.headers = headers

    def body(self) -> dict[str, Any]:
        """The JSON error object, its message redacted."""
        return {
            "error": {
                "message": redact(str(self)),
                "type": _ERROR_TYPES.get(self.status, "invalid_request_error"),
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> JSONResponse:
        return JSONResponse(self.body(), status_code=self.status, headers=self.headers)


# -- the request -------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TextPart(_Strict):
    """A text part of a message's content (the only kind SMoA reads)."""

    type: Literal["text"]
    text: str


_MESSAGE_TYPES: dict[str, type[SystemMessage] | type[HumanMessage] | type[AIMessage]] = {
    "system": SystemMessage,
    "developer": SystemMessage,
    "user": HumanMessage,
    "assistant": AIMessage,
}


class ChatMessage(_Strict):
    """One message of the conversation; system and assistant messages are history."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str
    name: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, value: Any) -> Any:
        """Content given as parts is their text; other kinds of part are refused."""
        if not isinstance(value, list):
            return value
        kinds = {part.get("type") if isinstance(part, dict) else None for part in value}
        if kinds - {"text"}:
            raise ValueError(
                f"only text parts are supported (got {sorted(map(str, kinds - {'text'}))}); "
                "SMoA's models read text"
            )
        return "".join(TextPart.model_validate(part).text for part in value)

    def to_message(self) -> AnyMessage:
        return _MESSAGE_TYPES[self.role](self.content, name=self.name)


class StreamOptions(_Strict):
    include_usage: bool = False


class ChatRequest(_Strict):
    """The chat-completions fields this server takes (others are refused, naming the field)."""

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    n: int = 1
    user: str | None = None
    smoa: dict[str, Any] = Field(default_factory=dict)


_FIELDS = ", ".join(ChatRequest.model_fields)


def _request_error(exc: ValidationError) -> APIError:
    """The first problem of a request body, naming the field and the fix."""
    problems = []
    for error in exc.errors():
        loc = ".".join(map(str, error["loc"]))
        if error["type"] == "extra_forbidden":
            fix = _UNSUPPORTED.get(loc, f"remove it (this server takes: {_FIELDS})")
            problems.append((loc, f"{loc}: not supported by this server; {fix}"))
        else:
            problems.append((loc, f"{loc}: {error['msg'].removeprefix('Value error, ')}"))
    return APIError(400, "; ".join(text for _, text in problems), param=problems[0][0])


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """How the server treats requests (the ``smoa serve`` flags beyond the config)."""

    max_concurrent_runs: int = 8
    max_body_bytes: int = 2 * 1024 * 1024
    drain_timeout_s: int = 30
    log_prompts: bool = False
    trust_request_models: bool = False
    api_key: str | None = dataclasses.field(default=None, repr=False)
    allowed_hosts: frozenset[str] | None = None
    """Host names a request may address (None: any); loopback only on a loopback server, so a
    web page cannot reach it through a rebound DNS name."""


def loopback_hosts(host: str) -> frozenset[str] | None:
    """The Host names a server bound to ``host`` answers: loopback names, or any (None)."""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    return frozenset({"localhost", "127.0.0.1", "::1", host}) if loopback else None


# -- runs --------------------------------------------------------------------------------------


class _Run:
    """One graph run in a task of its own, which returns ``("done", state)`` or ``("error", exc)``.

    ``ready`` is set once the input is validated and the models are built (``prepared``; no
    model call yet), or once the run ended before that; ``tokens`` receives each token of the
    final answer, then None when the run has ended.
    """

    def __init__(
        self, server: _Server, inputs: SMoAInput, config: SMoAConfig, *, tokens: bool
    ) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex}"
        self.ready = asyncio.Event()
        self.prepared = False
        self.tokens: asyncio.Queue[str | None] = asyncio.Queue()
        self._server = server
        self._started = time.perf_counter()
        self._preset = config.preset
        self.task = asyncio.create_task(self._drive(inputs, config, tokens))
        self.task.add_done_callback(self._ended)  # also runs if cancelled before it started

    async def _drive(self, inputs: SMoAInput, config: SMoAConfig, tokens: bool) -> tuple[str, Any]:
        state: dict[str, Any] = {}
        modes: list[StreamMode] = (
            ["updates", "values", "messages"] if tokens else ["updates", "values"]
        )
        chunk: Any
        streamed = False
        try:
            async for namespace, mode, chunk in self._server.graph.astream(
                inputs, context=config, stream_mode=modes, subgraphs=True
            ):
                if mode == "values" and not namespace:
                    state = chunk
                elif mode == "updates" and not namespace and "prepare" in chunk:
                    self.prepared = True
                    self.ready.set()
                elif mode == "messages":
                    message, metadata = chunk
                    if is_final_answer(metadata) and message.text:
                        self.tokens.put_nowait(message.text)
                        streamed = True
        except Exception as exc:
            return "error", exc
        if tokens and not streamed and state.get("answer"):  # a vote writes no tokens: send it
            self.tokens.put_nowait(state["answer"])
        return "done", state

    def _ended(self, task: asyncio.Task[tuple[str, Any]]) -> None:
        self._server.in_flight -= 1
        self.ready.set()
        self.tokens.put_nowait(None)
        if task.cancelled():
            outcome = "cancelled"
        else:
            kind, value = task.result()
            outcome = (
                f"ok, {value['summary']['total']['total_tokens']} tokens"
                if kind == "done"
                else f"failed: {describe_error(value)}"
            )
        wall = time.perf_counter() - self._started
        log.info("%s: %s, preset %s, %.2f s", self.id, outcome, self._preset, wall)


async def _until_disconnect(request: Request, waiting: asyncio.Future[Any]) -> bool:
    """Wait for ``waiting``; False if the client disconnected first."""

    async def disconnected() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(disconnected())
    try:
        await asyncio.wait({watcher, waiting}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
    return waiting.done()


def _usage(summary: dict[str, Any]) -> dict[str, int]:
    """The run's total tokens, in OpenAI's terms."""
    total = summary["total"]
    return {
        "prompt_tokens": total["input_tokens"],
        "completion_tokens": total["output_tokens"],
        "total_tokens": total["total_tokens"],
    }


def _failure(exc: BaseException, chat: ChatRequest) -> APIError:
    """The error reply for a run that raised ``exc``."""
    if isinstance(exc, InvalidInputError):
        return APIError(400, str(exc), param="messages")
    if isinstance(exc, ModelConfigError):
        chosen = any(name in chat.smoa for name in OPERATOR_ONLY)  # the request's own model spec
        return APIError(400 if chosen else 500, f"model configuration: {exc}", code="model_config")
    if isinstance(exc, AllProposersFailedError) or is_model_error(exc):
        return APIError(502, f"model endpoint error: {describe_error(exc)}", code="model_error")
    log.error("run failed", exc_info=exc)
    return APIError(500, f"internal error: {describe_error(exc)}", code="internal_error")


# -- the app -----------------------------------------------------------------------------------


class _Server:
    """The app's state: the base config, the compiled graph, the runs in flight."""

    def __init__(
        self,
        base_values: dict[str, Any],
        settings: ServerSettings,
        model_factory: ModelFactory | None,
    ) -> None:
        self.base_values = dict(base_values)
        self.base_config = SMoAConfig.model_validate(self.base_values)
        self.settings = settings
        # Each run passes its whole config (base + request, validated) as its context.
        self.graph = build_smoa_graph(self.base_config, model_factory=model_factory).compile(
            name="smoa"
        )
        self.in_flight = 0
        self.created = int(time.time())

    def guard(self, request: Request) -> None:
        """401/400 before anything else: the Host a request addresses, and its bearer key."""
        allowed = self.settings.allowed_hosts
        host = urlsplit("//" + request.headers.get("host", "")).hostname
        if allowed is not None and host not in allowed:
            raise APIError(
                400,
                "Host header: this server listens on loopback and answers only loopback names "
                "(127.0.0.1, localhost)",
                param="Host",
            )
        key = self.settings.api_key
        if key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not given:
            raise APIError(
                401,
                f"no API key: give the client the key in {API_KEY_ENV} on the server as its "
                "api_key (the header Authorization: Bearer, then the key)",
                code="invalid_api_key",
            )
        if not hmac.compare_digest(given.strip().encode(), key.encode()):
            raise APIError(401, "wrong API key", code="invalid_api_key")

    async def read_body(self, request: Request) -> dict[str, Any]:
        """The JSON body: 415 unless JSON, 413 over the size limit (before parsing), 400 if bad."""
        media = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media != "application/json":
            raise APIError(415, "Content-Type: send the body as application/json")
        limit = self.settings.max_body_bytes
        too_large = APIError(
            413,
            f"request body over {limit} bytes; shorten the conversation, or start the server "
            "with a larger --max-body-bytes",
            code="request_too_large",
        )
        length = request.headers.get("content-length", "0")
        if not length.isdigit():
            raise APIError(400, "Content-Length: not a number of bytes", param="Content-Length")
        if int(length) > limit:
            raise too_large
        body = bytearray()
        async for part in request.stream():
            body += part
            if len(body) > limit:
                raise too_large
        try:
            data = json.loads(body)
        except ValueError as exc:  # not UTF-8 or not JSON
            raise APIError(400, f"request body: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise APIError(400, "request body: expected a JSON object")
        return {key: value for key, value in data.items() if value is not None}  # null: unset

    def request_config(self, chat: ChatRequest) -> SMoAConfig:
        """The server's config overlaid with the request's preset and fields, validated."""
        if chat.model not in PRESET_DEFAULTS:
            raise APIError(
                404,
                f"model {chat.model!r}: unknown; the models are the presets "
                f"{', '.join(PRESET_DEFAULTS)} (GET /v1/models)",
                param="model",
                code="model_not_found",
            )
        if chat.n != 1:
            raise APIError(400, "n: only n=1 is supported; send separate requests", param="n")
        params: dict[str, str] = {}  # config field -> request field that set it
        values: dict[str, Any] = {}
        tokens = "max_completion_tokens" if chat.max_completion_tokens is not None else "max_tokens"
        for name, param, value in (
            ("proposer_temperature", "temperature", chat.temperature),
            ("max_tokens", tokens, getattr(chat, tokens)),
        ):
            if value is not None:
                params[name], values[name] = param, value
        for name, value in chat.smoa.items():
            param = f"smoa.{name}"
            if name == "preset":
                raise APIError(400, f"{param}: the preset is the request's model", param=param)
            if name not in SMoAConfig.model_fields:
                raise APIError(
                    400,
                    f"{param}: unknown configuration field (the fields are the flags of "
                    "`smoa ask -h`, e.g. n_proposers, k, max_layers)",
                    param=param,
                )
            if name in OPERATOR_ONLY and not self.settings.trust_request_models:
                raise APIError(
                    403,
                    f"{param}: models, endpoints and key variables are set by the server "
                    f"(smoa serve {_flag(name)}); start it with --trust-request-models to let "
                    "clients choose them",
                    param=param,
                )
            params[name], values[name] = param, value
        try:
            config = SMoAConfig.model_validate({**self.base_values, "preset": chat.model, **values})
        except ValidationError as exc:
            problems = []
            for problem in validation_problems(exc):
                name = problem.partition(":")[0].split("/")[0].split(".")[0]
                problems.append(
                    (params.get(name, name), params.get(name, name) + problem[len(name) :])
                )
            raise APIError(
                400,
                "invalid configuration: " + "; ".join(text for _, text in problems),
                param=problems[0][0],
            ) from None
        for name in SERVER_FIXED:
            if getattr(config, name) != getattr(self.base_config, name):
                raise APIError(
                    400,
                    f"smoa.{name}: set by the server (smoa serve {_flag(name)}); "
                    "leave it out of the request",
                    param=f"smoa.{name}",
                )
        return config

    def start(self, chat: ChatRequest, config: SMoAConfig) -> _Run:
        """A run of the chat, or 429 when the bounded number of runs is in flight."""
        if chat.messages[-1].role != "user":
            raise APIError(
                400,
                "messages: the last message must be the user's (role 'user'); the earlier ones "
                "are the history",
                param="messages",
            )
        messages = [m.to_message() for m in chat.messages]
        if self.in_flight >= self.settings.max_concurrent_runs:
            raise APIError(
                429,
                f"{self.in_flight} runs in flight, the most this server runs at once "
                "(smoa serve --max-concurrent-runs); retry after a moment",
                code="too_many_runs",
                headers={"Retry-After": "1"},
            )
        self.in_flight += 1
        run = _Run(self, {"messages": messages}, config, tokens=chat.stream)
        if self.settings.log_prompts:
            log.info("%s: question %r", run.id, redact(messages[-1].text))
        return run

    async def chat_completions(self, request: Request) -> Response:
        self.guard(request)
        body = await self.read_body(request)
        try:
            chat = ChatRequest.model_validate(body)
        except ValidationError as exc:
            raise _request_error(exc) from None
        config = self.request_config(chat)
        run = self.start(chat, config)
        head = {"id": run.id, "created": int(time.time()), "model": chat.model}
        try:
            waiting = asyncio.ensure_future(run.ready.wait()) if chat.stream else run.task
            if not await _until_disconnect(request, waiting):
                run.task.cancel()
                return Response(status_code=499)  # nobody is listening
        except BaseException:
            run.task.cancel()
            raise
        if chat.stream and run.prepared:  # from now on, errors go in the stream
            return EventSourceResponse(
                self._chunks(run, chat, head),
                background=BackgroundTask(self._cancel, run),
                shutdown_grace_period=self.settings.drain_timeout_s,
            )
        kind, value = run.task.result()
        if kind == "error":
            raise _failure(value, chat)
        summary = value["summary"]
        choice = {
            "index": 0,
            "message": {"role": "assistant", "content": value["answer"]},
            "finish_reason": "stop",
            "logprobs": None,
        }
        return JSONResponse(
            {
                **head,
                "object": "chat.completion",
                "choices": [choice],
                "usage": _usage(summary),
                "smoa": summary,
            }
        )

    @staticmethod
    async def _cancel(run: _Run) -> None:
        """Cancel the run if it still goes on (the stream ended early: client gone, shutdown)."""
        run.task.cancel()

    async def _chunks(
        self, run: _Run, chat: ChatRequest, head: dict[str, Any]
    ) -> AsyncIterator[str]:
        """The SSE data: a role chunk, one chunk per token, the finish (and usage), ``[DONE]``."""
        include_usage = bool(chat.stream_options and chat.stream_options.include_usage)
        usage: dict[str, Any] = {"usage": None} if include_usage else {}

        def chunk(delta: dict[str, str], finish: str | None = None, **extra: Any) -> str:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            data = {**head, "object": "chat.completion.chunk", "choices": [choice]}
            return json.dumps({**data, **usage, **extra})

        try:
            yield chunk({"role": "assistant", "content": ""})
            while (token := await run.tokens.get()) is not None:
                yield chunk({"content": token})
            kind, value = await run.task
            if kind == "error":
                yield json.dumps(_failure(value, chat).body())
                return
            summary = value["summary"]
            yield chunk({}, "stop", smoa=summary)
            if include_usage:
                yield json.dumps(
                    {
                        **head,
                        "object": "chat.completion.chunk",
                        "choices": [],
                        "usage": _usage(summary),
                    }
                )
            yield "[DONE]"
        finally:
            run.task.cancel()

    async def models(self, request: Request) -> Response:
        self.guard(request)
        data = [
            {"id": name, "object": "model", "created": self.created, "owned_by": "smoa_graph"}
            for name in PRESET_DEFAULTS
        ]
        return JSONResponse({"object": "list", "data": data})


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, APIError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    hint = " (the API: POST /v1/chat/completions, GET /v1/models)" if exc.status_code == 404 else ""
    return APIError(
        exc.status_code, f"{request.method} {request.url.path}: {exc.detail}{hint}"
    ).response()


async def _internal_error(request: Request, exc: Exception) -> Response:
    return APIError(500, f"internal error: {describe_error(exc)}", code="internal_error").response()


def create_app(
    base_values: dict[str, Any],
    settings: ServerSettings | None = None,
    *,
    model_factory: ModelFactory | None = None,
) -> Starlette:
    """The ASGI app: ``base_values`` are the server's config fields (as ``smoa serve`` got them).

    Args:
        base_values: config fields every request starts from (validated here).
        settings: limits, logging and trust; by default no key and any Host header.
        model_factory: builds chat models from specs (tests inject fakes).
    """
    server = _Server(base_values, settings or ServerSettings(), model_factory)
    app = Starlette(
        routes=[
            Route("/v1/chat/completions", server.chat_completions, methods=["POST"]),
            Route("/v1/models", server.models, methods=["GET"]),
        ],
        exception_handlers={
            APIError: _api_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.smoa = server
    return app


def serve(
    base_values: dict[str, Any],
    settings: ServerSettings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> None:
    """Run the server until SIGINT/SIGTERM; then drain runs in flight for up to the bound."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s:     %(name)s: %(message)s")
    key = os.environ.get(API_KEY_ENV) or None
    allowed = loopback_hosts(host)
    if allowed is None and key is None:
        log.warning(
            "listening on %s without %s: anyone who reaches this port can spend your models' "
            "budget",
            host,
            API_KEY_ENV,
        )
    settings = dataclasses.replace(settings, api_key=key, allowed_hosts=allowed)
    app = create_app(base_values, settings)
    # A local model server starts now, sized for the base config, not on the first request.
    build_widest_models([app.state.smoa.base_config], default_model_factory)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        timeout_graceful_shutdown=settings.drain_timeout_s,
        log_level="info",
    )
    uvicorn.Server(config).run()
