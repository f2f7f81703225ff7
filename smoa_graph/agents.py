"""Bring your own proposer: any LangChain Runnable or compiled LangGraph graph as an agent.

``build_smoa_graph(config, agents={"researcher": chain})`` makes ``"researcher"`` a model spec:
name it in ``proposer_models`` (or any ``*_model`` field) beside ordinary specs. The agent is
wrapped as a chat model, so it is timed, retried and recorded like one. It takes the messages
and returns a message; a graph (any runnable whose output is a dict with ``messages``) gets
``{"messages": [...]}`` and its last message is the answer. Its tokens are the usage that the
messages it returns report (every new AI message of a graph: a tool-using agent's turns too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from langchain_core.callbacks import AsyncCallbackManagerForLLMRun, CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.messages.ai import UsageMetadata, add_usage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable
from langgraph.graph.state import CompiledStateGraph
from pydantic import ConfigDict

from smoa_graph.models import ModelFactory, ModelRequest


def _answer(output: Any, sent: int) -> AIMessage:
    """The agent's output as one AI message, its usage summed over every new AI message."""
    if isinstance(output, dict) and "messages" in output:
        new = [m for m in output["messages"][sent:] if isinstance(m, AIMessage)]
        if not new:
            raise ValueError("the agent graph returned no AI message")
        usage: UsageMetadata | None = None
        for message in new:
            if message.usage_metadata:
                usage = add_usage(usage, message.usage_metadata)
        return AIMessage(new[-1].text, usage_metadata=usage)
    if isinstance(output, BaseMessage):
        return AIMessage(output.text, usage_metadata=getattr(output, "usage_metadata", None))
    if isinstance(output, str):
        return AIMessage(output)
    raise TypeError(f"an agent must return a message, a string or a graph state, got {output!r}")


class AgentChatModel(BaseChatModel):
    """A Runnable or graph that answers messages, as a chat model (see the module docstring)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    agent: Runnable[Any, Any]
    name_: str = "agent"

    @property
    def _llm_type(self) -> str:
        return "smoa-agent"

    @property
    def model_name(self) -> str:
        """The agent's name, for call records."""
        return self.name_

    def _input(self, messages: list[BaseMessage]) -> Any:
        return {"messages": messages} if isinstance(self.agent, CompiledStateGraph) else messages

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        output = self.agent.invoke(self._input(messages))
        return ChatResult(generations=[ChatGeneration(message=_answer(output, len(messages)))])

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: AsyncCallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        output = await self.agent.ainvoke(self._input(messages))
        return ChatResult(generations=[ChatGeneration(message=_answer(output, len(messages)))])


def with_agents(factory: ModelFactory, agents: Mapping[str, Runnable[Any, Any]]) -> ModelFactory:
    """``factory``, with each name of ``agents`` building that agent instead of a model."""
    if not agents:
        return factory

    def build(request: ModelRequest) -> BaseChatModel:
        agent = agents.get(request.spec)
        if agent is None:
            return factory(request)
        return AgentChatModel(agent=agent, name_=request.spec)

    return build
