"""Chat models named by strings, built lazily, and called with per-call accounting.

A model spec is one of:
- ``"local"``: the embedded SmolLM2 model on a llama-server started on demand;
- ``"provider:model"`` (e.g. ``"openai:gpt-4o-mini"``): LangChain's ``init_chat_model``;
- ``"model@http://host:port/v1"``: any OpenAI-compatible endpoint;
- a plain model name, served by the configured ``base_url``;
- ``"fake"``: a canned offline model (``smoa_graph.fake``) for demos and tests.

The factory builds a new model per call; the graph keeps one per event loop (each remote model
gets HTTP clients of its own, since an async client belongs to the loop that opened it).

API keys come from the environment only (``api_key_env``, or the provider's own variable); they
are held as ``SecretStr`` by the chat model and never enter a ``ModelRequest``, the state or a
call record. Error text that reaches the state, a log line or a message goes through ``redact``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from langchain_core.exceptions import ModelError
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.runnables import RunnableConfig
from pydantic import SecretStr

from smoa_graph.state import CallRecord

if TYPE_CHECKING:
    from smoa_graph.config import SMoAConfig

FINAL_ANSWER_TAG = "smoa:final"
"""Tag of the model call that writes the final answer (``stream_mode="messages"`` consumers)."""


class ModelConfigError(ValueError):
    """A model spec that cannot be turned into a chat model (raised before any call)."""


@dataclass(frozen=True)
class ModelRequest:
    """Everything needed to build one role's chat model."""

    spec: str
    temperature: float
    max_tokens: int
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    timeout_s: float | None = None
    frequency_penalty: float | None = None
    """OpenAI-style frequency penalty; None leaves the backend's default."""
    parallel: int = 1
    """Calls of the run that may reach this model at once (its ``n_proposers``)."""
    longest_output: int = 0
    """Longest output of any call of the run; with ``parallel`` it sizes a server the factory
    starts."""

    @classmethod
    def for_config(
        cls, cfg: SMoAConfig, spec: str, temperature: float, max_tokens: int
    ) -> ModelRequest:
        """A request for ``spec`` with the endpoint, key variable and timeout of ``cfg``."""
        return cls(
            spec,
            temperature,
            max_tokens,
            cfg.base_url,
            cfg.api_key_env,
            cfg.request_timeout_s,
            frequency_penalty=cfg.frequency_penalty,
            parallel=cfg.n_proposers,
            longest_output=max(cfg.max_tokens, cfg.aggregator_max_tokens or 0),
        )


ModelFactory = Callable[[ModelRequest], BaseChatModel]


# Retried by the graph's RetryPolicy: the statuses the OpenAI SDK itself retries, and 5xx.
_TRANSIENT_STATUS = frozenset({408, 409, 429})
_TRANSIENT_NAMES = frozenset({"APIConnectionError", "APITimeoutError"})  # OpenAI-style SDKs


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: connection failures, timeouts, HTTP 408/409/429 and 5xx.

    Authentication, permission, bad request, not found and validation errors are not retried:
    a second attempt would fail the same way. LangChain's provider-neutral ``ModelError``
    classification decides where a provider package raises it; else the HTTP status, else the
    error's type.
    """
    if isinstance(exc, ModelError):
        return exc.is_retryable
    status = getattr(exc, "status_code", None)
    if status is None:
        status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        return status in _TRANSIENT_STATUS or status >= 500
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return True
    import httpx

    if isinstance(exc, httpx.TransportError):  # connect/read timeouts, refused, reset, protocol
        return True
    return any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__)


_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)
_SECRET_TEXT = re.compile(r"(?i)\bbearer\s+[^\s'\",}]+|\bsk-[A-Za-z0-9_\-]{8,}")
_URL_PASSWORD = re.compile(r"(?i)(\b[a-z][a-z0-9+.\-]*://[^:/@\s]*:)[^\s/]*@")
_PASSWORD_FIELD = re.compile(r"(?i)(\bpassword=)[^\s&'\"]+")  # libpq key=value, URL query


def redact(text: str) -> str:
    """``text`` without secrets: values of secret-named environment variables, bearer tokens,
    passwords in URLs (``postgresql://user:***@host``) and ``password=`` fields."""
    for name, value in os.environ.items():
        if len(value) >= 8 and _SECRET_NAME.search(name) and value in text:
            text = text.replace(value, "***")
    text = _URL_PASSWORD.sub(r"\1***@", text)
    text = _PASSWORD_FIELD.sub(r"\1***", text)
    return _SECRET_TEXT.sub("***", text)


def describe_error(error: BaseException | str) -> str:
    """One bounded, redacted line for an error: ``Type: message``."""
    text = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
    return redact(" ".join(text.split()))[:500]


def _own_http_clients(keepalive: bool = True) -> dict[str, Any]:
    """HTTP clients for one model, not LangChain's process-wide shared ones.

    An async client's pooled connections belong to the event loop that opened them, so a
    model used on another loop (a sync run's background loop, a new ``asyncio.run``) needs its
    own. ``keepalive=False`` opens a fresh connection per request: llama-server closes idle
    keep-alive connections after 5 s, the age at which httpx stops reusing them; on loopback a
    new connection costs well under a millisecond.
    """
    import httpx

    limits = httpx.Limits() if keepalive else httpx.Limits(max_keepalive_connections=0)
    return {
        "http_client": httpx.Client(limits=limits),
        "http_async_client": httpx.AsyncClient(limits=limits),
    }


def _openai_compatible(
    request: ModelRequest, model: str, base_url: str, api_key: str, *, keepalive: bool = True
) -> Any:
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=model,
        base_url=base_url,
        api_key=SecretStr(api_key),
        temperature=request.temperature,
        max_tokens=request.max_tokens,
        timeout=request.timeout_s,
        frequency_penalty=request.frequency_penalty,
        stream_usage=True,
        max_retries=0,  # retries belong to the graph (smoa_graph.attempts)
        **_own_http_clients(keepalive),
    )


def default_model_factory(request: ModelRequest) -> BaseChatModel:
    """Build the chat model a spec names (no call is made)."""
    spec = request.spec.strip()
    key = os.environ.get(request.api_key_env) or "not-needed"
    if spec == "local" or spec.startswith("local:"):
        from smoa_graph.local_server import MODEL_ALIAS, ensure_local_server

        base_url = ensure_local_server(
            parallel=request.parallel, max_tokens=request.longest_output or request.max_tokens
        )
        return _openai_compatible(request, MODEL_ALIAS, base_url, "local", keepalive=False)
    if spec == "fake":
        from smoa_graph.fake import FakeChatModel

        return FakeChatModel(spec="fake", record=False)
    if "@" in spec:
        model, _, base_url = spec.partition("@")
        if not model or not base_url.startswith(("http://", "https://")):
            raise ModelConfigError(
                f"model {spec!r}: expected 'MODEL@http://host:port/v1' for an OpenAI-compatible "
                "endpoint"
            )
        return _openai_compatible(request, model, base_url, key)
    if ":" not in spec:
        if request.base_url:
            return _openai_compatible(request, spec, request.base_url, key)
        raise ModelConfigError(
            f"model {spec!r}: name a provider ('openai:{spec}'), an endpoint "
            f"('{spec}@http://host:port/v1'), set base_url, or use 'local'"
        )
    from langchain.chat_models import init_chat_model

    extra: dict[str, Any] = _own_http_clients() if spec.startswith("openai:") else {}
    if request.frequency_penalty is not None:
        extra["frequency_penalty"] = request.frequency_penalty
    try:
        return init_chat_model(
            spec,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            timeout=request.timeout_s,
            max_retries=0,
            **extra,
        )
    except ImportError as exc:
        raise ModelConfigError(
            f"model {spec!r}: the provider's LangChain package is not installed ({exc})"
        ) from None
    except Exception as exc:  # provider SDKs raise their own types for a missing key
        raise ModelConfigError(f"model {spec!r}: {redact(str(exc))}") from None


def is_final_answer(metadata: dict[str, Any]) -> bool:
    """Whether a ``messages``-mode stream chunk comes from the call writing the final answer."""
    return FINAL_ANSWER_TAG in metadata.get("tags", [])


def model_name(model: BaseChatModel, spec: str) -> str:
    """A readable model name for traces (never contains a key)."""
    for attr in ("model_name", "model"):
        value = getattr(model, attr, None)
        if isinstance(value, str) and value:
            return value
    return spec


def call_config(role: str, layer: int, index: int | None, final: bool = False) -> RunnableConfig:
    """Tags and metadata that let stream consumers tell model calls apart."""
    tags = [f"smoa:{role}", f"smoa:layer:{layer}"]
    if final:
        tags.append(FINAL_ANSWER_TAG)
    return {
        "tags": tags,
        "metadata": {
            "smoa_role": role,
            "smoa_layer": layer,
            "smoa_index": index,
            "smoa_final": final,
        },
        "run_name": f"smoa_{role}",
    }


def _cached(usage: UsageMetadata | None) -> int:
    """Input tokens the backend served from its prompt cache (0 when it does not say)."""
    if not usage:
        return 0
    details = usage.get("input_token_details") or {}
    return int(details.get("cache_read") or 0)


def call_record(
    role: str,
    layer: int,
    index: int | None,
    name: str,
    usage: UsageMetadata | None,
    started: float,
    ttft: float | None,
    error: BaseException | str | None = None,
) -> CallRecord:
    """Accounting for one model call (``error`` set: a failed call)."""
    return {
        "role": role,
        "layer": layer,
        "index": index,
        "model": name,
        "input_tokens": int(usage["input_tokens"]) if usage else 0,
        "cached_input_tokens": _cached(usage),
        "output_tokens": int(usage["output_tokens"]) if usage else 0,
        "latency_s": round(time.perf_counter() - started, 4),
        "ttft_s": None if ttft is None else round(ttft, 4),
        "ok": error is None,
        "error": None if error is None else describe_error(error),
    }


async def stream_text(
    model: BaseChatModel,
    messages: Sequence[BaseMessage],
    *,
    spec: str,
    role: str,
    layer: int,
    index: int | None = None,
    final: bool = False,
) -> tuple[str, CallRecord]:
    """Stream one completion; return its text and its accounting (tokens, latency, TTFT)."""
    started = time.perf_counter()
    ttft: float | None = None
    parts: list[str] = []
    usage: UsageMetadata | None = None
    async for chunk in model.astream(list(messages), config=call_config(role, layer, index, final)):
        if ttft is None and chunk.content:
            ttft = time.perf_counter() - started
        parts.append(chunk.text)
        if chunk.usage_metadata:  # usually only the last chunk has it; summed like LangChain
            usage = add_usage(usage, chunk.usage_metadata)
    record = call_record(role, layer, index, model_name(model, spec), usage, started, ttft)
    return "".join(parts), record


async def structured_call(
    model: BaseChatModel,
    messages: Sequence[BaseMessage],
    schema: dict[str, Any],
    *,
    spec: str,
    role: str,
    layer: int,
    use_schema: bool,
) -> tuple[Any, str, CallRecord]:
    """Ask for JSON; constrain it with ``schema`` where the model supports it.

    Returns (parsed object or None, raw text, accounting). Never raises for bad output: the
    caller validates and falls back deterministically.
    """
    started = time.perf_counter()
    config = call_config(role, layer, None)
    runnable: Any = None
    if use_schema:
        try:
            runnable = model.with_structured_output(schema, method="json_schema", include_raw=True)
        except (NotImplementedError, ValueError, TypeError):
            runnable = None
    if runnable is not None:
        result = await runnable.ainvoke(list(messages), config=config)
        raw: AIMessage = result["raw"]
        parsed = result.get("parsed")
    else:
        raw = await model.ainvoke(list(messages), config=config)
        parsed = None
    record = call_record(
        role, layer, None, model_name(model, spec), raw.usage_metadata, started, None
    )
    return parsed, raw.text, record
