"""The graph's nodes: prepare (input + roles), propose, judge, moderate, aggregate.

Nodes are methods of ``SMoANodes`` so that one model factory and one default config serve them;
the per-run config comes from the LangGraph runtime context.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage
from langgraph.errors import NodeError
from langgraph.runtime import Runtime
from langgraph.types import Command, Overwrite, Send

from smoa_graph.config import SMoAConfig, resolve_config
from smoa_graph.consistency import measure_agreement
from smoa_graph.judging import (
    MODERATOR_FORMAT,
    MODERATOR_SCHEMA,
    Verdict,
    format_candidates,
    judge_format,
    judge_schema,
    parse_json_object,
    validate_verdict,
)
from smoa_graph.models import (
    ModelFactory,
    ModelRequest,
    stream_text,
    structured_call,
)
from smoa_graph.prompts import render
from smoa_graph.state import (
    CallRecord,
    Candidate,
    JudgeRecord,
    LayerState,
    ModeratorDecision,
    ProposerTask,
    SMoAState,
)
from smoa_graph.summary import usage_summary

_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class InvalidInputError(ValueError):
    """The run's input cannot be answered (raised before any model call)."""


class AllProposersFailedError(RuntimeError):
    """Every proposer of a layer failed, so the run cannot go on."""


def roles_cache_path(cfg: SMoAConfig) -> Path:
    """File holding roles generated for this task description, requirement, n and model."""
    folder = cfg.roles_cache_dir or os.path.join(
        os.environ.get("SMOA_CACHE_DIR") or os.path.expanduser("~/.cache/smoa_graph"), "roles"
    )
    key = json.dumps(
        [cfg.task_description, cfg.task_requirement, cfg.n_proposers, cfg.role_model or cfg.model]
    )
    return Path(folder) / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.json"


def _history_text(messages: Sequence[BaseMessage]) -> str:
    names = {"human": "User", "ai": "Assistant", "system": "System"}
    return "\n".join(f"{names.get(m.type, m.type)}: {m.text}" for m in messages)


def _request_text(prompt: str, history: str) -> str:
    if not history:
        return prompt
    return f"Conversation so far:\n{history}\n\nCurrent request:\n{prompt}"


@dataclass
class SMoANodes:
    """Node functions bound to a default config and a model factory."""

    default_config: SMoAConfig
    model_factory: ModelFactory

    def config(self, runtime: Runtime[SMoAConfig]) -> SMoAConfig:
        """This run's config: the runtime context, else the builder's default."""
        return resolve_config(runtime.context, self.default_config)

    def model(
        self, cfg: SMoAConfig, spec: str, temperature: float, max_tokens: int
    ) -> BaseChatModel:
        """The chat model for one role, from the factory."""
        return self.model_factory(
            ModelRequest(spec, temperature, max_tokens, cfg.base_url, cfg.api_key_env)
        )

    def _control_model(self, cfg: SMoAConfig, spec: str | None) -> BaseChatModel:
        return self.model(cfg, spec or cfg.model, cfg.control_temperature, 400)

    def _aggregator_model(self, cfg: SMoAConfig) -> BaseChatModel:
        return self.model(
            cfg,
            cfg.aggregator_model or cfg.model,
            cfg.aggregator_temperature,
            cfg.aggregator_max_tokens or cfg.max_tokens,
        )

    # -- prepare -------------------------------------------------------------------------------

    async def prepare(self, state: SMoAState, runtime: Runtime[SMoAConfig]) -> dict[str, Any]:
        """Validate the input, build every model (no call), and settle the roles."""
        cfg = self.config(runtime)
        messages = list(state.get("messages") or [])
        new_messages: list[BaseMessage] = []
        if state.get("prompt"):  # a new prompt; earlier messages are the history
            question = state["prompt"]
            new_messages.append(HumanMessage(question))
        elif messages and messages[-1].type == "human":
            question = messages.pop().text
        else:
            raise InvalidInputError(
                "prompt: empty; pass {'prompt': 'your question'} or messages ending with the "
                "user's message"
            )
        question = _CONTROL_CHARS.sub("", question).strip()
        if not question:
            raise InvalidInputError("prompt: empty or only whitespace; ask a question")
        if len(question) > cfg.max_prompt_chars:
            raise InvalidInputError(
                f"prompt: {len(question)} characters is over max_prompt_chars="
                f"{cfg.max_prompt_chars}; shorten it or raise the limit"
            )
        for n in range(cfg.n_proposers):  # preflight: a bad model spec fails here, before any call
            self.model(cfg, cfg.proposer_model(n), cfg.proposer_temperature, cfg.max_tokens)
        self._control_model(cfg, cfg.judge_model)
        self._control_model(cfg, cfg.moderator_model)
        self._aggregator_model(cfg)
        roles, calls = await self._roles(cfg, runtime)
        return {
            "prompt": "",  # consumed: the next run on this thread reads only new input
            "question": question,
            "messages": new_messages,
            "history": _history_text(messages),
            "roles": roles,
            "layer": 0,
            "selected": [],
            "critique": "",
            "layers": Overwrite([]),
            "decisions": Overwrite([]),
            "calls": Overwrite(calls),
        }

    async def _roles(
        self, cfg: SMoAConfig, runtime: Runtime[SMoAConfig]
    ) -> tuple[list[str], list[CallRecord]]:
        """Static roles, or roles generated once from (D, T) and cached in the store or a file."""
        if cfg.roles or not cfg.task_description:
            return cfg.role_prompts_static(), []
        path = roles_cache_path(cfg)
        namespace = ("smoa_graph", "roles")
        if runtime.store is not None:
            item = await runtime.store.aget(namespace, path.stem)
            if item is not None:
                return list(item.value["roles"]), []
        elif path.is_file():
            return list(json.loads(path.read_text(encoding="utf-8"))["roles"]), []
        roles, record = await self._generate_roles(cfg)
        if runtime.store is not None:
            await runtime.store.aput(namespace, path.stem, {"roles": roles})
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"roles": roles}, indent=1), encoding="utf-8")
        return roles, [record]

    async def _generate_roles(self, cfg: SMoAConfig) -> tuple[list[str], CallRecord]:
        n = cfg.n_proposers
        spec = cfg.role_model or cfg.model
        model = self._control_model(cfg, spec)
        schema = {
            "title": "roles",
            "description": f"{n} role descriptions.",
            "type": "object",
            "properties": {
                "roles": {
                    "type": "array",
                    "items": {"type": "string", "minLength": 8, "maxLength": 300},
                    "minItems": n,
                    "maxItems": n,
                }
            },
            "required": ["roles"],
            "additionalProperties": False,
        }
        text = render(
            "roles",
            n=n,
            task_description=cfg.task_description,
            task_requirement=cfg.task_requirement or "answer correctly and helpfully",
        )
        parsed, raw, record = await structured_call(
            model,
            [HumanMessage(text)],
            schema,
            spec=spec,
            role="roles",
            layer=0,
            use_schema=cfg.structured_output,
        )
        data = parse_json_object(parsed, raw) or {}
        generated = [str(r).strip() for r in data.get("roles", []) if str(r).strip()][:n]
        static = cfg.role_prompts_static()
        return generated + static[len(generated) :], record

    # -- layer subgraph ------------------------------------------------------------------------

    async def fan_out(self, state: LayerState, runtime: Runtime[SMoAConfig]) -> list[Send]:
        """One ``Send`` per proposer; all run in the same superstep, concurrently."""
        cfg = self.config(runtime)
        layer = state["layer"] + 1
        return [
            Send(
                "propose",
                ProposerTask(
                    index=i,
                    role=state["roles"][i],
                    prompt=state["question"],
                    history=state.get("history", ""),
                    layer=layer,
                    references=state.get("selected") or [],
                    critique=state.get("critique", "") if cfg.forward_critique else "",
                ),
            )
            for i in range(cfg.n_proposers)
        ]

    async def propose(self, task: ProposerTask, runtime: Runtime[SMoAConfig]) -> dict[str, Any]:
        """One proposer answers, in its role, with the previous layer's selection as references."""
        cfg = self.config(runtime)
        spec = cfg.proposer_model(task["index"])
        model = self.model(cfg, spec, cfg.proposer_temperature, cfg.max_tokens)
        request = _request_text(task["prompt"], task["history"])
        if task["references"]:
            responses, _ = format_candidates([c["text"] for c in task["references"]])
            critique = f"\nJudge's notes on the previous round: {task['critique']}\n"
            request = render(
                "references",
                prompt=request,
                critique=critique if task["critique"] else "",
                responses=responses,
            )
        messages = [SystemMessage(render("proposer", role=task["role"])), HumanMessage(request)]
        final = cfg.n_proposers == 1 and cfg.max_layers == 1
        text, record = await stream_text(
            model,
            messages,
            spec=spec,
            role="proposer",
            layer=task["layer"],
            index=task["index"],
            final=final,
        )
        if not text.strip():
            raise ValueError("empty response")
        candidate = Candidate(
            index=task["index"],
            role=task["role"],
            model=record["model"],
            text=text,
            ok=True,
            error=None,
        )
        return {"candidates": [candidate], "calls": [record]}

    def proposer_failed(self, task: ProposerTask, error: NodeError) -> Command[Literal["judge"]]:
        """Error handler: record the failed proposer; the layer goes on to the judge."""
        message = f"{type(error.error).__name__}: {error.error}"[:500]
        candidate = Candidate(
            index=task["index"], role=task["role"], model="", text="", ok=False, error=message
        )
        record = CallRecord(
            role="proposer",
            layer=task["layer"],
            index=task["index"],
            model="",
            input_tokens=0,
            output_tokens=0,
            latency_s=0.0,
            ttft_s=None,
            ok=False,
            error=message,
        )
        return Command(update={"candidates": [candidate], "calls": [record]}, goto="judge")

    async def judge(self, state: LayerState, runtime: Runtime[SMoAConfig]) -> dict[str, Any]:
        """Keep the best k of this layer's successful responses (all of them when <= k)."""
        cfg = self.config(runtime)
        layer = state["layer"] + 1
        candidates = sorted(state["candidates"], key=lambda c: c["index"])
        ok = [c for c in candidates if c["ok"]]
        if not ok:
            errors = "; ".join(f"proposer {c['index']}: {c['error']}" for c in candidates)
            raise AllProposersFailedError(
                f"all {len(candidates)} proposers of layer {layer} failed: {errors}"
            )
        k = min(cfg.k, len(ok))
        with_stop = cfg.merge_judge_moderator and cfg.moderator in ("model", "hybrid")
        calls: list[CallRecord] = []
        if len(ok) <= k:
            verdict = Verdict(list(range(len(ok))), "", "", None, None)
        else:
            texts = [c["text"] for c in ok]
            responses, nonce = format_candidates(texts)
            moderation = (
                "\nAlso say whether the selected responses are good and consistent enough to stop "
                f"the rounds (this is round {layer} of at most {cfg.max_layers}).\n"
                if with_stop
                else ""
            )
            text = render(
                "judge",
                n=len(ok),
                k=k,
                nonce=nonce,
                moderation=moderation,
                prompt=_request_text(state["question"], state.get("history", "")),
                responses=responses,
                format=judge_format(k, with_stop),
            )
            spec = cfg.judge_model or cfg.model
            parsed, raw, record = await structured_call(
                self._control_model(cfg, spec),
                [HumanMessage(text)],
                judge_schema(len(ok), k, with_stop),
                spec=spec,
                role="judge",
                layer=layer,
                use_schema=cfg.structured_output,
            )
            calls.append(record)
            verdict = validate_verdict(parse_json_object(parsed, raw), texts, k)
        selected = [ok[i] for i in verdict.selected]
        judge_record = JudgeRecord(
            selected=[c["index"] for c in selected],
            reasoning=verdict.reasoning,
            critique=verdict.critique,
            called=bool(calls),
            fallback=verdict.fallback,
            stop_vote=verdict.stop_vote,
        )
        return {
            "layer": layer,
            "selected": selected,
            "critique": verdict.critique,
            "layers": [{"layer": layer, "candidates": candidates, "judge": judge_record}],
            "calls": calls,
        }

    # -- moderator and aggregator --------------------------------------------------------------

    async def moderate(self, state: SMoAState, runtime: Runtime[SMoAConfig]) -> dict[str, Any]:
        """Decide stop/continue after a layer and record why."""
        cfg = self.config(runtime)
        layer = state["layer"]
        calls = list(state.get("calls", []))
        tokens = sum(c["input_tokens"] + c["output_tokens"] for c in calls)
        texts = [c["text"] for c in state.get("selected", [])]
        stop, vote, consistency, answer = True, None, None, None
        new_calls: list[CallRecord] = []
        if layer >= cfg.max_layers:
            reason = f"reached max_layers={cfg.max_layers}"
        elif cfg.token_budget is not None and tokens >= cfg.token_budget:
            reason = f"token budget spent ({tokens} >= {cfg.token_budget})"
        elif cfg.moderator == "never":
            stop, reason = False, "preset runs every layer"
        else:
            agreement = (
                measure_agreement(texts, cfg.consistency_threshold) if len(texts) > 1 else None
            )
            if agreement is not None:
                consistency, answer = round(agreement.score, 4), agreement.answer
            if agreement is not None and agreement.agree and cfg.moderator != "model":
                reason = f"selected responses agree ({agreement.method})"
            elif cfg.moderator == "consistency":
                stop, reason = False, "selected responses do not agree"
            else:
                vote, reason, record = await self._model_vote(cfg, state, layer)
                stop = vote
                new_calls += [record] if record is not None else []
        decision = ModeratorDecision(
            layer=layer,
            stop=stop,
            reason=reason,
            consistency=consistency,
            agreed_answer=answer,
            model_vote=vote,
            tokens_so_far=tokens,
        )
        return {"decisions": [decision], "calls": new_calls}

    async def _model_vote(
        self, cfg: SMoAConfig, state: SMoAState, layer: int
    ) -> tuple[bool, str, CallRecord | None]:
        """The model's stop vote: from the judge's merged verdict, or one moderator call."""
        judge = state["layers"][-1]["judge"]
        if cfg.merge_judge_moderator and judge["called"]:
            vote = bool(judge["stop_vote"])
            return vote, f"judge voted {'stop' if vote else 'continue'} (merged call)", None
        responses, nonce = format_candidates([c["text"] for c in state.get("selected", [])])
        text = render(
            "moderator",
            layer=layer,
            max_layers=cfg.max_layers,
            nonce=nonce,
            prompt=_request_text(state["question"], state.get("history", "")),
            responses=responses,
            format=MODERATOR_FORMAT,
        )
        spec = cfg.moderator_model or cfg.model
        parsed, raw, record = await structured_call(
            self._control_model(cfg, spec),
            [HumanMessage(text)],
            MODERATOR_SCHEMA,
            spec=spec,
            role="moderator",
            layer=layer,
            use_schema=cfg.structured_output,
        )
        data = parse_json_object(parsed, raw)
        if data is None or not isinstance(data.get("stop"), bool):
            return False, "moderator output unusable; continuing (fallback)", record
        reason = str(data.get("reason", ""))[:200]
        return data["stop"], f"moderator (quality {data.get('quality')}): {reason}", record

    async def aggregate(self, state: SMoAState, runtime: Runtime[SMoAConfig]) -> dict[str, Any]:
        """Synthesise the final answer from the selected responses (streamed, tagged final)."""
        cfg = self.config(runtime)
        selected = state.get("selected", [])
        layer = state["layer"]
        calls: list[CallRecord] = []
        if cfg.n_proposers == 1 and cfg.max_layers == 1:
            answer = selected[0]["text"]  # single model: its answer is the answer
        else:
            responses, _ = format_candidates([c["text"] for c in selected])
            text = render(
                "aggregator",
                prompt=_request_text(state["question"], state.get("history", "")),
                responses=responses,
            )
            spec = cfg.aggregator_model or cfg.model
            answer, record = await stream_text(
                self._aggregator_model(cfg),
                [HumanMessage(text)],
                spec=spec,
                role="aggregator",
                layer=layer,
                final=True,
            )
            calls.append(record)
        all_calls = [*state.get("calls", []), *calls]
        decision = state["decisions"][-1]
        summary = {
            **usage_summary(all_calls),
            "layers_run": layer,
            "stopped_at_layer": decision["layer"],
            "stop_reason": decision["reason"],
        }
        return {
            "answer": answer,
            "messages": [AIMessage(answer, name="smoa")],
            "calls": calls,
            "summary": summary,
        }


async def route_after_moderator(state: SMoAState) -> Literal["layer", "aggregator"]:
    """Pure routing: the moderator's last decision picks the next node (async: no thread hop)."""
    return "aggregator" if state["decisions"][-1]["stop"] else "layer"
