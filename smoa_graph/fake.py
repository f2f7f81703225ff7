"""The canned offline chat model behind the ``fake`` spec (demo graph, docs, tests).

Unlike LangChain's ``GenericFakeChatModel`` it is safe across parallel proposers (no shared
iterator), streams, reports usage, and supports ``with_structured_output``. A ``responder``
scripts its answers by role; ``smoa_graph.testing`` builds fault-injecting fakes on it.
"""

from __future__ import annotations

import asyncio
import json
import random
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableLambda
from pydantic import ConfigDict, Field, PrivateAttr


@dataclass(frozen=True)
class FakeCall:
    """What the responder sees of one call."""

    role: str
    layer: int
    index: int | None
    prompt: str
    spec: str


Responder = Callable[[FakeCall], str]


def _words(text: str) -> int:
    return len(text.split())


_CALL_METADATA: ContextVar[dict[str, Any] | None] = ContextVar("smoa_fake_metadata", default=None)


def default_responder(call: FakeCall) -> str:
    """Proposers say 'Final answer: 42'; the judge picks the first two; the moderator stops."""
    if call.role == "judge":
        return '{"reasoning": "first ones are fine", "chosen": [1, 2], "critique": "ok"}'
    if call.role == "moderator":
        return '{"reason": "good", "quality": 8, "stop": true}'
    if call.role == "roles":
        return json.dumps({"roles": [f"expert number {i}" for i in range(64)]})
    return f"I am {call.role} {call.index} in layer {call.layer}. Final answer: 42"


class FakeChatModel(BaseChatModel):
    """Answers via ``responder`` after ``latency_s`` (plus seeded jitter); counts words as tokens.

    ``fail_rate`` makes calls raise ``ConnectionError`` at random (seeded) to inject faults;
    ``calls`` keeps every call seen unless ``record`` is False.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    responder: Responder = default_responder
    spec: str = "fake"
    latency_s: float = 0.0
    jitter_s: float = 0.0
    fail_rate: float = 0.0
    seed: int = 0
    structured: bool = True
    record: bool = True
    _rng: random.Random = PrivateAttr()
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    calls: list[FakeCall] = Field(default_factory=list)

    def model_post_init(self, context: Any) -> None:
        self._rng = random.Random(self.seed)

    @property
    def _llm_type(self) -> str:
        return "smoa-fake"

    async def ainvoke(self, input: Any, config: Any = None, **kwargs: Any) -> AIMessage:
        """Remember the call's metadata (role, layer, index) for the responder."""
        _CALL_METADATA.set((config or {}).get("metadata") or {})
        return await super().ainvoke(input, config, **kwargs)

    async def astream(
        self, input: Any, config: Any = None, **kwargs: Any
    ) -> AsyncIterator[AIMessageChunk]:
        """Remember the call's metadata (role, layer, index) for the responder."""
        _CALL_METADATA.set((config or {}).get("metadata") or {})
        async for chunk in super().astream(input, config, **kwargs):
            yield chunk

    def _call_info(self, messages: list[BaseMessage]) -> tuple[FakeCall, float]:
        metadata = _CALL_METADATA.get() or {}
        call = FakeCall(
            role=str(metadata.get("smoa_role", "unknown")),
            layer=int(metadata.get("smoa_layer", 0)),
            index=metadata.get("smoa_index"),
            prompt="\n".join(m.text for m in messages),
            spec=self.spec,
        )
        with self._lock:
            if self.record:
                self.calls.append(call)
            delay = self.latency_s + self._rng.uniform(0, self.jitter_s)
            failing = self._rng.random() < self.fail_rate
        if failing:
            raise ConnectionError(f"injected fault in {call.role} {call.index}")
        return call, delay

    def _message(self, call: FakeCall, text: str) -> dict[str, Any]:
        usage = {
            "input_tokens": _words(call.prompt),
            "output_tokens": _words(text),
            "total_tokens": _words(call.prompt) + _words(text),
        }
        return {"usage_metadata": usage, "response_metadata": {"model_name": self.spec}}

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        raise NotImplementedError("FakeChatModel is async-only; use ainvoke/astream")

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        call, delay = self._call_info(messages)
        await asyncio.sleep(delay)
        text = self.responder(call)
        return ChatResult(
            generations=[ChatGeneration(message=AIMessage(text, **self._message(call, text)))]
        )

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        raise NotImplementedError("FakeChatModel is async-only; use ainvoke/astream")

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        call, delay = self._call_info(messages)
        await asyncio.sleep(delay)
        text = self.responder(call)
        words = text.split(" ")
        for i, word in enumerate(words):
            last = i == len(words) - 1
            extra = self._message(call, text) if last else {}
            chunk = AIMessageChunk(content=word if last else word + " ", **extra)
            yield ChatGenerationChunk(message=chunk)

    def with_structured_output(
        self, schema: Any, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[Any, Any]:
        """Parse the responder's text as JSON, like a provider's JSON-schema mode."""
        if not self.structured:
            raise NotImplementedError("structured output disabled on this fake")

        async def run(messages: Any, config: Any = None) -> Any:
            raw = await self.ainvoke(messages, config=config)
            try:
                parsed = json.loads(raw.text)
            except json.JSONDecodeError as exc:
                return {"raw": raw, "parsed": None, "parsing_error": exc}
            return {"raw": raw, "parsed": parsed, "parsing_error": None} if include_raw else parsed

        return RunnableLambda(run)
