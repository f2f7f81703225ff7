"""The graph's nodes: prepare (input + roles), propose, judge, moderate, aggregate.

Nodes are methods of ``SMoANodes`` so that one model factory and one default config serve them;
the per-run config comes from the LangGraph runtime context.

Every failed model-call attempt becomes a failed ``CallRecord`` in ``calls``, including attempts
that a ``RetryPolicy`` retried successfully; a node that fails for good goes to its error handler:
a proposer is recorded as a failed candidate, the judge falls back to its deterministic choice,
the moderator continues. If no proposer of a layer survives, the run ends with
``AllProposersFailedError``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal, TypeVar

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
    strip_marker_echoes,
    validate_verdict,
)
from smoa_graph.models import (
    ModelFactory,
    ModelRequest,
    call_record,
    describe_error,
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
T = TypeVar("T")


class InvalidInputError(ValueError):
    """The run's input cannot be answered (raised before any model call)."""


class UnusableResponseError(ValueError):
    """A model answered with no usable text (empty, or not a single letter or digit)."""


class AttemptTimeoutError(TimeoutError):
    """A model call gave no answer within its time limit (``proposer_timeout_s``); retried."""


class AllProposersFailedError(RuntimeError):
    """Every proposer of a layer failed, so the run cannot go on.

    ``calls`` holds that layer's call records (every failed attempt with its error).
    """

    def __init__(self, message: str, calls: Sequence[CallRecord] = ()) -> None:
        super().__init__(message)
        self.calls = list(calls)


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


def _task_id(runtime: Runtime[Any]) -> str:
    """The running task's id; LangGraph keeps it across retries and gives it to the handler."""
    info = runtime.execution_info
    return info.task_id if info is not None else ""


def _proposer_request(cfg: SMoAConfig, index: int) -> ModelRequest:
    return ModelRequest.for_config(
        cfg, cfg.proposer_model(index), cfg.proposer_temperature, cfg.max_tokens
    )


# Output cap of judge, moderator and role-generator calls: room for the longest answer their
# bounded schemas allow (a verdict's two 300-character strings even at a token per character),
# so that a verdict is not cut before it closes. Typical verdicts take 50-100 tokens.
CONTROL_MAX_TOKENS = 800


def _control_request(cfg: SMoAConfig, spec: str | None) -> ModelRequest:
    """Judge, moderator and role generator: deterministic, short JSON answers."""
    return ModelRequest.for_config(
        cfg, spec or cfg.model, cfg.control_temperature, CONTROL_MAX_TOKENS
    )


def _aggregator_request(cfg: SMoAConfig) -> ModelRequest:
    return ModelRequest.for_config(
        cfg,
        cfg.aggregator_model or cfg.model,
        cfg.aggregator_temperature,
        cfg.aggregator_max_tokens or cfg.max_tokens,
    )


@dataclass
class SMoANodes:
    """Node functions bound to a default config and a model factory."""

    default_config: SMoAConfig
    model_factory: ModelFactory
    # Failed attempts of tasks still running (retrying), by task id; the task's successful
    # attempt or its error handler moves them into the state.
    _failed_attempts: dict[str, list[CallRecord]] = field(default_factory=dict, repr=False)
    _built: set[ModelRequest] = field(default_factory=set, repr=False)  # by ``_preflight``

    def config(self, runtime: Runtime[SMoAConfig]) -> SMoAConfig:
        """This run's config: the runtime context, else the builder's default."""
        return resolve_config(runtime.context, self.default_config)

    async def _attempt(
        self,
        runtime: Runtime[SMoAConfig],
        call: Awaitable[T],
        *,
        role: str,
        layer: int,
        index: int | None,
        spec: str,
        timeout_s: float | None = None,
    ) -> T:
        """Await one model call (cut after ``timeout_s``); log a failed attempt and re-raise."""
        started = time.perf_counter()
        deadline = asyncio.timeout(timeout_s)
        try:
            async with deadline:
                return await call
        except Exception as exc:
            error = exc
            if deadline.expired():
                error = AttemptTimeoutError(f"no answer within {timeout_s:g} s (per attempt)")
            self._log_failed(
                runtime, call_record(role, layer, index, spec, None, started, None, error)
            )
            if error is not exc:
                raise error from None
            raise

    def _log_failed(self, runtime: Runtime[SMoAConfig], record: CallRecord) -> None:
        self._failed_attempts.setdefault(_task_id(runtime), []).append(record)

    def _earlier_failures(self, runtime: Runtime[SMoAConfig]) -> list[CallRecord]:
        """This task's failed attempts so far (removed from the log)."""
        return self._failed_attempts.pop(_task_id(runtime), [])

    def _final_failures(
        self,
        runtime: Runtime[SMoAConfig],
        error: BaseException,
        *,
        role: str,
        layer: int,
        index: int | None,
        spec: str,
    ) -> list[CallRecord]:
        """Every failed attempt of a task that failed for good, the last one with ``error``."""
        now = time.perf_counter()
        attempts = self._earlier_failures(runtime)
        attempts = attempts or [call_record(role, layer, index, spec, None, now, None, error)]
        attempts[-1] = {**attempts[-1], "ok": False, "error": describe_error(error)}
        return attempts

    async def _verdict(
        self,
        runtime: Runtime[SMoAConfig],
        cfg: SMoAConfig,
        spec: str,
        text: str,
        schema: dict[str, Any],
        *,
        role: str,
        layer: int,
    ) -> tuple[dict[str, Any] | None, CallRecord]:
        """One constrained call of a control model (roles, judge, moderator): its JSON, if any."""
        call = structured_call(
            self.model_factory(_control_request(cfg, spec)),
            [HumanMessage(text)],
            schema,
            spec=spec,
            role=role,
            layer=layer,
            use_schema=cfg.structured_output,
        )
        parsed, raw, record = await self._attempt(
            runtime, call, role=role, layer=layer, index=None, spec=spec
        )
        return parse_json_object(parsed, raw), record

    async def _preflight(self, cfg: SMoAConfig) -> None:
        """Build every role's model (no call), so that a bad spec fails before any call.

        New models are built off the event loop (the first one may start the local server);
        once every model of ``cfg`` has been built, nothing is done.
        """
        requests = {
            *(_proposer_request(cfg, i) for i in range(cfg.n_proposers)),
            _control_request(cfg, cfg.judge_model),
            _control_request(cfg, cfg.moderator_model),
            _aggregator_request(cfg),
        }
        new = requests - self._built
        if new:
            await asyncio.to_thread(lambda: [self.model_factory(r) for r in new])
            self._built |= new

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
        try:
            question.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise InvalidInputError(
                f"prompt: not valid Unicode text (character {exc.start}); pass UTF-8 text"
            ) from None
        if len(question) > cfg.max_prompt_chars:
            raise InvalidInputError(
                f"prompt: {len(question)} characters is over max_prompt_chars="
                f"{cfg.max_prompt_chars}; shorten it or raise the limit"
            )
        await self._preflight(cfg)
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
        roles, record = await self._generate_roles(cfg, runtime)
        if runtime.store is not None:
            await runtime.store.aput(namespace, path.stem, {"roles": roles})
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"roles": roles}, indent=1), encoding="utf-8")
        return roles, [*self._earlier_failures(runtime), record]

    async def _generate_roles(
        self, cfg: SMoAConfig, runtime: Runtime[SMoAConfig]
    ) -> tuple[list[str], CallRecord]:
        n = cfg.n_proposers
        spec = cfg.role_model or cfg.model
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
        data, record = await self._verdict(runtime, cfg, spec, text, schema, role="roles", layer=0)
        data = data or {}
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
        model = self.model_factory(_proposer_request(cfg, task["index"]))
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
        layer, index = task["layer"], task["index"]
        call = stream_text(
            model, messages, spec=spec, role="proposer", layer=layer, index=index, final=final
        )
        text, record = await self._attempt(
            runtime,
            call,
            role="proposer",
            layer=layer,
            index=index,
            spec=spec,
            timeout_s=cfg.proposer_timeout_s,
        )
        if not any(ch.isalnum() for ch in text):
            error = UnusableResponseError(f"no usable text in the response ({text[:40]!r})")
            self._log_failed(runtime, {**record, "ok": False, "error": describe_error(error)})
            raise error
        candidate = Candidate(
            index=task["index"],
            role=task["role"],
            model=record["model"],
            text=text,
            ok=True,
            error=None,
        )
        return {"candidates": [candidate], "calls": [*self._earlier_failures(runtime), record]}

    def proposer_failed(
        self, task: ProposerTask, error: NodeError, runtime: Runtime[SMoAConfig]
    ) -> Command[Literal["judge"]]:
        """Error handler: record the failed proposer; the layer goes on."""
        spec = self.config(runtime).proposer_model(task["index"])
        calls = self._final_failures(
            runtime,
            error.error,
            role="proposer",
            layer=task["layer"],
            index=task["index"],
            spec=spec,
        )
        candidate = Candidate(
            index=task["index"],
            role=task["role"],
            model=spec,
            text="",
            ok=False,
            error=calls[-1]["error"],
        )
        return Command(update={"candidates": [candidate], "calls": calls}, goto="judge")

    @staticmethod
    def _survivors(
        state: LayerState, cfg: SMoAConfig
    ) -> tuple[int, list[Candidate], list[Candidate], int]:
        """(layer, all candidates by index, the successful ones, k for them).

        With no successful candidate the run cannot go on: ``AllProposersFailedError``, raised
        in the judge (the proposers' fan-in) and again in its error handler, ends the run.
        """
        candidates = sorted(state["candidates"], key=lambda c: c["index"])
        ok = [c for c in candidates if c["ok"]]
        if not ok:
            errors = "; ".join(f"proposer {c['index']}: {c['error']}" for c in candidates)
            raise AllProposersFailedError(
                f"all {len(candidates)} proposers of layer {state['layer'] + 1} failed: {errors}",
                state.get("calls", []),
            )
        return state["layer"] + 1, candidates, ok, min(cfg.k, len(ok))

    @staticmethod
    def _judged(
        layer: int,
        candidates: list[Candidate],
        ok: list[Candidate],
        verdict: Verdict,
        calls: list[CallRecord],
        called: bool,
    ) -> dict[str, Any]:
        """The judge's update: the selection flows on, the layer's record is appended."""
        selected = [ok[i] for i in verdict.selected]
        judge_record = JudgeRecord(
            selected=[c["index"] for c in selected],
            reasoning=verdict.reasoning,
            critique=verdict.critique,
            called=called,
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

    async def judge(self, state: LayerState, runtime: Runtime[SMoAConfig]) -> dict[str, Any]:
        """Keep the best k of this layer's successful responses (all of them when <= k)."""
        cfg = self.config(runtime)
        layer, candidates, ok, k = self._survivors(state, cfg)
        if len(ok) <= k:
            verdict = Verdict(list(range(len(ok))), "", "", None, None)
            return self._judged(layer, candidates, ok, verdict, [], called=False)
        with_stop = cfg.merge_judge_moderator and cfg.moderator in ("model", "hybrid")
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
        data, record = await self._verdict(
            runtime, cfg, spec, text, judge_schema(len(ok), k, with_stop), role="judge", layer=layer
        )
        verdict = validate_verdict(data, texts, k)
        calls = [*self._earlier_failures(runtime), record]
        return self._judged(layer, candidates, ok, verdict, calls, called=True)

    def judge_failed(
        self, state: LayerState, error: NodeError, runtime: Runtime[SMoAConfig]
    ) -> dict[str, Any]:
        """Error handler: the judge's call failed for good, so its deterministic rule selects."""
        cfg = self.config(runtime)
        layer, candidates, ok, k = self._survivors(state, cfg)
        spec = cfg.judge_model or cfg.model
        calls = self._final_failures(
            runtime, error.error, role="judge", layer=layer, index=None, spec=spec
        )
        verdict = validate_verdict(None, [c["text"] for c in ok], k)
        verdict = replace(verdict, fallback=f"judge call failed ({calls[-1]['error']})")
        return self._judged(layer, candidates, ok, verdict, calls, called=False)

    # -- moderator and aggregator --------------------------------------------------------------

    def _decide(self, cfg: SMoAConfig, state: SMoAState) -> tuple[ModeratorDecision, bool]:
        """The decision without a model call, and whether the model must vote on it."""
        layer = state["layer"]
        calls = list(state.get("calls", []))
        tokens = sum(c["input_tokens"] + c["output_tokens"] for c in calls)
        texts = [c["text"] for c in state.get("selected", [])]
        decision = ModeratorDecision(
            layer=layer,
            stop=True,
            reason="",
            consistency=None,
            agreed_answer=None,
            model_vote=None,
            tokens_so_far=tokens,
        )
        if layer >= cfg.max_layers:
            return {**decision, "reason": f"reached max_layers={cfg.max_layers}"}, False
        if cfg.token_budget is not None and tokens >= cfg.token_budget:
            reason = f"token budget spent ({tokens} >= {cfg.token_budget})"
            return {**decision, "reason": reason}, False
        if cfg.moderator == "never":
            return {**decision, "stop": False, "reason": "preset runs every layer"}, False
        agreement = measure_agreement(texts, cfg.consistency_threshold) if len(texts) > 1 else None
        if agreement is not None:
            decision["consistency"] = round(agreement.score, 4)
            decision["agreed_answer"] = agreement.answer
        if agreement is not None and agreement.agree and cfg.moderator != "model":
            return {**decision, "reason": f"selected responses agree ({agreement.method})"}, False
        if cfg.moderator == "consistency":
            return {**decision, "stop": False, "reason": "selected responses do not agree"}, False
        return decision, True

    async def moderate(self, state: SMoAState, runtime: Runtime[SMoAConfig]) -> dict[str, Any]:
        """Decide stop/continue after a layer and record why."""
        cfg = self.config(runtime)
        decision, vote_needed = self._decide(cfg, state)
        calls: list[CallRecord] = []
        if vote_needed:
            vote, reason, record = await self._model_vote(cfg, state, runtime)
            decision = {**decision, "stop": vote, "model_vote": vote, "reason": reason}
            if record is not None:
                calls = [*self._earlier_failures(runtime), record]
        return {"decisions": [decision], "calls": calls}

    def moderator_failed(
        self, state: SMoAState, error: NodeError, runtime: Runtime[SMoAConfig]
    ) -> Command[Literal["layer"]]:
        """Error handler: the moderator's call failed for good, so the rounds continue."""
        cfg = self.config(runtime)
        decision, _ = self._decide(cfg, state)
        spec = cfg.moderator_model or cfg.model
        calls = self._final_failures(
            runtime, error.error, role="moderator", layer=state["layer"], index=None, spec=spec
        )
        reason = f"moderator call failed ({calls[-1]['error']}); continuing (fallback)"
        decision = {**decision, "stop": False, "reason": reason}
        return Command(update={"decisions": [decision], "calls": calls}, goto="layer")

    async def _model_vote(
        self, cfg: SMoAConfig, state: SMoAState, runtime: Runtime[SMoAConfig]
    ) -> tuple[bool, str, CallRecord | None]:
        """The model's stop vote: from the judge's merged verdict, or one moderator call."""
        layer = state["layer"]
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
        data, record = await self._verdict(
            runtime, cfg, spec, text, MODERATOR_SCHEMA, role="moderator", layer=layer
        )
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
            responses, nonce = format_candidates([c["text"] for c in selected])
            text = render(
                "aggregator",
                prompt=_request_text(state["question"], state.get("history", "")),
                responses=responses,
            )
            spec = cfg.aggregator_model or cfg.model
            call = stream_text(
                self.model_factory(_aggregator_request(cfg)),
                [HumanMessage(text)],
                spec=spec,
                role="aggregator",
                layer=layer,
                final=True,
            )
            streamed, record = await self._attempt(
                runtime, call, role="aggregator", layer=layer, index=None, spec=spec
            )
            answer = strip_marker_echoes(streamed, nonce)  # the stream itself is left as sent
            calls = [*self._earlier_failures(runtime), record]
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
