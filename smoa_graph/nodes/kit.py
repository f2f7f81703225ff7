"""What every node needs: the builder's config, the model factory, and the models it built.

Models are built once per event loop: an async HTTP client belongs to the loop that opened it, so
a sync run (on the background loop) and an async run (on the caller's loop) of one compiled graph
never share one.
"""

from __future__ import annotations

import asyncio
import json
import weakref
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import HumanMessage
from langgraph.runtime import Runtime
from pydantic import BaseModel

from smoa_graph.attempts import CallAttempts
from smoa_graph.config import Role, SMoAConfig
from smoa_graph.judging import parse_json_object
from smoa_graph.models import ModelFactory, ModelRequest, structured_call
from smoa_graph.nodes.dispatch import Dispatch, DispatchGate
from smoa_graph.state import CallRecord

# Output cap of judge, moderator and role-generator calls: room for the longest answer their
# bounded schemas allow (a verdict's two 300-character strings even at a token per character),
# so that a verdict is not cut before it closes. Typical verdicts take 50-100 tokens.
CONTROL_MAX_TOKENS = 800
_CONTEXT_CACHE_SIZE = 256


def proposer_request(cfg: SMoAConfig, index: int) -> ModelRequest:
    """Proposer ``index``'s model: its spec, temperature and output cap."""
    return ModelRequest.for_config(
        cfg, cfg.proposer_model(index), cfg.proposer_temperature, cfg.max_tokens
    )


def control_request(cfg: SMoAConfig, role: Role) -> ModelRequest:
    """Judge, moderator and role generator: deterministic, short JSON answers."""
    return ModelRequest.for_config(
        cfg, cfg.model_for(role), cfg.control_temperature, CONTROL_MAX_TOKENS
    )


def aggregator_request(cfg: SMoAConfig) -> ModelRequest:
    """The aggregator's model (streams the final answer)."""
    return ModelRequest.for_config(
        cfg,
        cfg.model_for("aggregator"),
        cfg.aggregator_temperature,
        cfg.aggregator_max_tokens or cfg.max_tokens,
    )


def all_requests(cfg: SMoAConfig) -> set[ModelRequest]:
    """Every model a run of ``cfg`` may call."""
    requests = {
        *(proposer_request(cfg, i) for i in range(cfg.n_proposers)),
        control_request(cfg, "judge"),
        control_request(cfg, "moderator"),
        aggregator_request(cfg),
    }
    if cfg.task_description and not cfg.roles:
        requests.add(control_request(cfg, "roles"))
    return requests


def build_widest_models(configs: Iterable[SMoAConfig], factory: ModelFactory) -> None:
    """Build the models of the config with the most proposers (no call is made).

    Done before the first run of several configs, so that a server the factory starts on first
    use (the embedded model) is sized for the widest of them, not for whichever runs first.
    """
    widest = max(configs, key=lambda cfg: (cfg.n_proposers, cfg.max_tokens))
    for request in all_requests(widest):
        factory(request)


def _context_key(context: Any) -> str:
    if isinstance(context, BaseModel):
        context = {name: getattr(context, name) for name in context.model_fields_set}
    return json.dumps(context, sort_keys=True, default=str)


@dataclass
class NodeKit:
    """Shared by the nodes of one built graph (and so by all its runs)."""

    default_config: SMoAConfig
    model_factory: ModelFactory
    _configs: dict[str, SMoAConfig] = field(default_factory=dict, repr=False)
    _models: weakref.WeakKeyDictionary[
        asyncio.AbstractEventLoop, dict[ModelRequest, BaseChatModel]
    ] = field(default_factory=weakref.WeakKeyDictionary, repr=False)
    # Held by the proposers of a layer while they run; gone with the last of them.
    _gates: weakref.WeakValueDictionary[str, DispatchGate] = field(
        default_factory=weakref.WeakValueDictionary, repr=False
    )

    def dispatch_gate(self, key: str, policy: Dispatch) -> DispatchGate:
        """The gate of one layer run's proposer calls (``ProposerTask.dispatch_key``)."""
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = DispatchGate(policy)
        return gate

    def config(self, runtime: Runtime[Any]) -> SMoAConfig:
        """This run's config: the builder's, with the fields the run context sets laid over it."""
        context = runtime.context
        if context is None:
            return self.default_config
        key = _context_key(context)
        config = self._configs.get(key)
        if config is None:
            if len(self._configs) >= _CONTEXT_CACHE_SIZE:
                self._configs.clear()
            config = self._configs[key] = self.default_config.with_context(context)
        return config

    def _built(self) -> dict[ModelRequest, BaseChatModel]:
        return self._models.setdefault(asyncio.get_running_loop(), {})

    def model(self, request: ModelRequest) -> BaseChatModel:
        """The chat model for ``request`` on the running event loop (built on first use)."""
        built = self._built()
        model = built.get(request)
        if model is None:
            model = built[request] = self.model_factory(request)
        return model

    async def preflight(self, cfg: SMoAConfig) -> None:
        """Build every model of ``cfg`` (no call), so that a bad spec fails before any call.

        New models are built off the event loop (the first one may start the local server).
        """
        built = self._built()
        new = all_requests(cfg) - built.keys()
        if new:
            built.update(await asyncio.to_thread(lambda: {r: self.model_factory(r) for r in new}))

    async def control_call(
        self, cfg: SMoAConfig, role: Role, layer: int, text: str, schema: dict[str, Any]
    ) -> tuple[dict[str, Any] | None, list[CallRecord]]:
        """One constrained call of a control model (roles, judge, moderator), retried on
        transient errors: its JSON object if any, and the records of its attempts."""
        request = control_request(cfg, role)
        attempts = CallAttempts(cfg, role, layer, None, request.spec)
        parsed, raw, record = await attempts.run(
            lambda: structured_call(
                self.model(request),
                [HumanMessage(text)],
                schema,
                spec=request.spec,
                role=role,
                layer=layer,
                use_schema=cfg.structured_output,
            )
        )
        return parse_json_object(parsed, raw), attempts.succeeded(record)
