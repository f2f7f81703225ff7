"""SMoA as a LangChain chat model: any chain, agent or app that takes a chat model takes SMoA.

``SMoAChatModel(model="fake", n_proposers=3)`` takes the ``SMoAConfig`` fields as keyword
arguments and runs one compiled graph per instance. The messages are the chat history (the last
one is the user's); the reply is the final answer, with the run's total tokens as
``usage_metadata`` and the trace summary in ``response_metadata["smoa"]``. Streaming yields the
final answer's tokens only (the proposers', judge's and moderator's calls stay inside).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

from langchain_core.callbacks import (
    AsyncCallbackManager,
    AsyncCallbackManagerForLLMRun,
    CallbackManager,
    CallbackManagerForLLMRun,
)
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage
from langchain_core.messages.ai import UsageMetadata
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult
from langchain_core.runnables import Runnable, RunnableConfig
from langchain_core.tools import BaseTool
from langgraph.graph.state import CompiledStateGraph
from pydantic import ConfigDict, Field, PrivateAttr, model_validator

from smoa_graph.config import SMoAConfig
from smoa_graph.graph import build_smoa_graph
from smoa_graph.models import ModelFactory, is_final_answer

_NO_TOOLS = (
    "SMoAChatModel does not support tools: its answer is a synthesis of several models' text, "
    "never a tool call. Give the tool steps to a tool-calling chat model and SMoAChatModel the "
    "answers, or give the agent SMoA as a tool (a @tool that calls it; docs/embedding.md, "
    "'As a tool for an agent')."
)


class SMoAChatModel(BaseChatModel):
    """A chat model that answers with a Sparse Mixture-of-Agents run.

    Args:
        config: the run's configuration; or give its fields as keyword arguments instead
            (``SMoAChatModel(model="openai:gpt-4o-mini", n_proposers=4, k=2)``).
        model_factory: builds the role models from specs (tests inject fakes).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    config: SMoAConfig = Field(default_factory=SMoAConfig)
    model_factory: ModelFactory | None = Field(default=None, exclude=True)
    _graph: CompiledStateGraph[Any, Any, Any, Any] = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _gather_config(cls, data: Any) -> Any:
        """Config fields given as keyword arguments become ``config``."""
        if not isinstance(data, dict):
            return data
        fields = {k: data[k] for k in data if k in SMoAConfig.model_fields}
        if not fields:
            return data
        if "config" in data:
            raise ValueError(
                f"give either config= or config fields ({', '.join(fields)}), not both"
            )
        rest = {k: v for k, v in data.items() if k not in fields}
        return {**rest, "config": fields}

    def model_post_init(self, context: Any) -> None:
        # checkpointer=False: the run is private to this call, never a subgraph checkpointed
        # (or resumed) by the graph of an app that calls the model from one of its nodes
        self._graph = build_smoa_graph(self.config, model_factory=self.model_factory).compile(
            checkpointer=False, name="smoa"
        )

    @property
    def _llm_type(self) -> str:
        return "smoa"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return self.config.model_dump()

    @property
    def _model_name(self) -> str:
        return f"smoa-{self.config.preset}"

    # -- running the graph ---------------------------------------------------------------------

    @staticmethod
    def _check(stop: list[str] | None) -> None:
        if stop:
            raise ValueError("SMoAChatModel does not support stop sequences; leave stop unset")

    @staticmethod
    def _run_config(
        run_manager: CallbackManagerForLLMRun | AsyncCallbackManagerForLLMRun | None,
    ) -> RunnableConfig:
        """The graph runs as a child of this model's run (so traces nest its calls)."""
        if run_manager is None:
            return {}
        sync = isinstance(run_manager, CallbackManagerForLLMRun)
        child = (CallbackManager if sync else AsyncCallbackManager)(
            handlers=[], parent_run_id=run_manager.run_id
        )
        child.set_handlers(run_manager.inheritable_handlers)
        child.add_tags(run_manager.inheritable_tags)
        child.add_metadata(run_manager.inheritable_metadata)
        return {"callbacks": child}

    def _result(self, state: dict[str, Any]) -> ChatResult:
        message = AIMessage(
            state["answer"],
            usage_metadata=_usage(state["summary"]),
            response_metadata=self._metadata(state["summary"]),
        )
        return ChatResult(generations=[ChatGeneration(message=message)])

    def _metadata(self, summary: dict[str, Any]) -> dict[str, Any]:
        return {"model_name": self._model_name, "finish_reason": "stop", "smoa": summary}

    def _last_chunk(self, end: dict[str, Any]) -> ChatGenerationChunk:
        """The stream's closing chunk: no text; the usage and trace summary of the aggregator's
        update (read from updates: the graph's namespace is nested when an app's node runs it)."""
        summary = end["summary"]
        message = AIMessageChunk(
            content="",
            usage_metadata=_usage(summary),
            response_metadata=self._metadata(summary),
            chunk_position="last",
        )
        return ChatGenerationChunk(message=message)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._check(stop)
        state = self._graph.invoke({"messages": messages}, self._run_config(run_manager))
        return self._result(state)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self._check(stop)
        state = await self._graph.ainvoke({"messages": messages}, self._run_config(run_manager))
        return self._result(state)

    def _stream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> Iterator[ChatGenerationChunk]:
        self._check(stop)
        answer = _AnswerStream()
        data: Any
        for _, mode, data in self._graph.stream(
            {"messages": messages}, self._run_config(run_manager), **_STREAM_MODES
        ):
            if (chunk := answer.token(mode, data)) is not None:
                yield chunk  # the base class reports each chunk to the callbacks
        yield from answer.unstreamed()
        yield self._last_chunk(answer.end)

    async def _astream(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> AsyncIterator[ChatGenerationChunk]:
        self._check(stop)
        answer = _AnswerStream()
        data: Any
        async for _, mode, data in self._graph.astream(
            {"messages": messages}, self._run_config(run_manager), **_STREAM_MODES
        ):
            if (chunk := answer.token(mode, data)) is not None:
                yield chunk  # the base class reports each chunk to the callbacks
        for chunk in answer.unstreamed():
            yield chunk
        yield self._last_chunk(answer.end)

    # -- not supported -------------------------------------------------------------------------

    def bind_tools(
        self,
        tools: Sequence[dict[str, Any] | type | Callable[..., Any] | BaseTool],
        *,
        tool_choice: str | None = None,
        **kwargs: Any,
    ) -> Runnable[Any, AIMessage]:
        """Not supported: SMoA answers in text (see the error for what to do instead)."""
        raise NotImplementedError(_NO_TOOLS)

    def with_structured_output(self, schema: Any, **kwargs: Any) -> Runnable[Any, Any]:
        """Not supported: it needs tool calling or a JSON mode of one model."""
        raise NotImplementedError(
            "SMoAChatModel does not support with_structured_output (it needs tool calling or "
            "a JSON mode of a single model); ask for the format in the prompt and parse the "
            "answer, e.g. with langchain_core.output_parsers.JsonOutputParser"
        )


def _usage(summary: dict[str, Any]) -> UsageMetadata:
    """The run's total tokens (every call of every role) as LangChain usage."""
    total = summary["total"]
    return UsageMetadata(
        input_tokens=total["input_tokens"],
        output_tokens=total["output_tokens"],
        total_tokens=total["total_tokens"],
    )


_STREAM_MODES: dict[str, Any] = {"stream_mode": ["messages", "updates"], "subgraphs": True}
"""What a stream of the model reads from the graph: tokens, and node updates for the end."""


class _AnswerStream:
    """Reads the graph's stream: the final answer's tokens as they come, and the aggregator's
    update that ends the run (``end``)."""

    def __init__(self) -> None:
        self.end: dict[str, Any] = {}
        self.streamed = False

    def token(self, mode: str, data: Any) -> ChatGenerationChunk | None:
        """A chunk of the final answer's text from one stream item, else None."""
        if mode == "updates":
            self.end = data.get("aggregator", self.end)
            return None
        message, metadata = data
        if not is_final_answer(metadata) or not message.text:
            return None
        self.streamed = True
        return ChatGenerationChunk(message=AIMessageChunk(content=message.text))

    def unstreamed(self) -> list[ChatGenerationChunk]:
        """The whole answer in one chunk when no model call wrote it (a vote, an agreed
        response), else nothing."""
        if self.streamed or not self.end.get("answer"):
            return []
        return [ChatGenerationChunk(message=AIMessageChunk(content=self.end["answer"]))]
