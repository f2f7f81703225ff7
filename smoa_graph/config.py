"""One pydantic configuration for every preset: Studio form, CLI flags and graph context.

A preset is a set of defaults plus at most a strategy choice that the role modules read, never a
second code path: who a proposer reads (``reads``), how a layer selects (``selection``), how a
run ends (``finish``). ``single`` is one proposer in one layer; ``moa`` is dense (k = n, fixed
layers); ``smoa`` is sparse with a moderator; ``self-consistency`` votes over n samples;
``self-moa`` aggregates n samples of one model; ``mad`` is multi-agent debate; ``smoa-paper`` is
the paper's configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    create_model,
    model_validator,
)

Preset = Literal["single", "moa", "smoa", "self-consistency", "self-moa", "mad", "smoa-paper"]
ModeratorMode = Literal["consistency", "model", "hybrid", "never"]
Role = Literal["judge", "moderator", "aggregator", "roles"]

_SAMPLES = {"moderator": "never", "role_prompts": False, "selection": "all", "max_layers": 1}
PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "single": {"n_proposers": 1, "k": 1, "max_layers": 1, "moderator": "never"},
    "moa": {  # every proposer gets the same prompt, as in the reference code
        "n_proposers": 4,
        "k": 4,
        "max_layers": 2,
        "moderator": "never",
        "selection": "all",
        "role_prompts": False,
    },
    "smoa": {  # chosen by measurement on the arith tune split (README, Benchmarks)
        "n_proposers": 4,
        "k": 2,
        "max_layers": 2,
        "moderator": "consistency",
        "selection": "vote",
        "activation": "selected",
        "judge_view_chars": 200,
        "stop_share": 0.5,
        "final_layer_judge": False,
        "finish": "agreement",
        "role_prompts": False,
    },
    "self-consistency": {"n_proposers": 4, "k": 4, **_SAMPLES, "finish": "vote"},
    "self-moa": {"n_proposers": 4, "k": 4, **_SAMPLES, "finish": "aggregate"},
    "mad": {
        "n_proposers": 3,
        "k": 3,
        "max_layers": 2,
        "moderator": "never",
        "role_prompts": False,
        "selection": "all",
        "reads": "others",
        "finish": "vote",
    },
    "smoa-paper": {
        "n_proposers": 4,
        "k": 2,
        "max_layers": 2,
        "moderator": "model",
        "merge_judge_moderator": True,
        "control_temperature": 0.7,
        "aggregator_temperature": 0.7,
        "forward_critique": False,
        "judge_index_base": 0,
        "task_description": "questions and instructions that users ask an AI assistant",
        "task_requirement": "a correct, helpful, relevant and well-reasoned answer",
    },
}
"""Each preset's defaults for the fields a caller leaves unset."""

PRESET_FIXED: dict[str, frozenset[str]] = {
    "single": frozenset({"n_proposers", "k", "max_layers", "moderator"}),
    "moa": frozenset({"k", "moderator", "selection"}),
    "smoa": frozenset(),
    "self-consistency": frozenset({"k", "max_layers", "moderator", "selection", "finish"}),
    "self-moa": frozenset({"k", "max_layers", "moderator", "selection", "finish"}),
    "mad": frozenset({"k", "moderator", "selection", "reads", "finish"}),
    "smoa-paper": frozenset(
        {"moderator", "merge_judge_moderator", "control_temperature", "judge_index_base"}
    ),
}
"""Fields a preset decides itself: settings shared across presets (a bench's ``-n 6``, a run
context's base) do not carry into them, and a value that contradicts the preset is rejected.
Dense presets (``DENSE``) keep n and make k follow it."""

DENSE = frozenset({"moa", "self-consistency", "self-moa", "mad"})

# Diverse default personas (occupation, personality, social group), cycled when n > len.
DEFAULT_ROLES: tuple[str, ...] = (
    "a meticulous mathematician who checks every step and states the final answer plainly",
    "a pragmatic software engineer who prefers simple, concrete and verifiable explanations",
    "a patient school teacher who explains reasoning step by step for a curious student",
    "a skeptical scientist who questions assumptions and looks for errors before answering",
    "a concise business analyst who gets to the point and quantifies whenever possible",
    "a thoughtful philosopher who weighs different interpretations of the question",
    "a careful editor who values clarity, correct facts and well-structured prose",
    "an experienced physician used to making careful decisions from incomplete information",
)


class SMoAConfig(BaseModel):
    """Configuration of a Sparse Mixture-of-Agents run (also the graph's context schema)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    preset: Preset = Field(
        "smoa",
        description="single: one model answers; moa: dense Mixture-of-Agents (k = n, no early "
        "stop); smoa: sparse, k of n responses flow on and the run stops once a layer agrees; "
        "self-consistency: majority vote over n samples; self-moa: one aggregator over n samples "
        "of one model; mad: multi-agent debate; smoa-paper: the SMoA paper's configuration. "
        "Fields you leave unset take the preset's value.",
    )
    n_proposers: int = Field(
        4, ge=1, le=64, description="Proposers per layer (n). They run in parallel."
    )
    k: int = Field(
        2, ge=1, description="Responses the judge keeps per layer (k <= n, the sparsity knob)."
    )
    max_layers: int = Field(3, ge=1, le=20, description="Maximum number of proposer layers.")
    moderator: ModeratorMode = Field(
        "hybrid",
        description="When to stop early. consistency: stop when the selected responses agree "
        "(no model call); model: ask the moderator model; hybrid: consistency first, the model "
        "only when they disagree; never: always run max_layers.",
    )
    merge_judge_moderator: bool = Field(
        False,
        description="Let the judge's call also give the moderator's verdict (saves one call per "
        "layer, as in the reference code). The moderator node still decides and records it.",
    )
    consistency_threshold: float = Field(
        0.8,
        ge=0.0,
        le=1.0,
        description="Lexical similarity (0-1) above which responses without an extractable "
        "final answer count as agreeing.",
    )
    token_budget: int | None = Field(
        None, ge=1, description="Stop after the layer in which total tokens reach this budget."
    )
    forward_critique: bool = Field(
        True, description="Forward the judge's short critique to the next layer's proposers."
    )
    role_prompts: bool = Field(
        True,
        description="Give each proposer its role (persona). Off: every proposer gets the same "
        "prompt, i.e. plain samples of its model (an ablation; self-consistency, self-moa, mad).",
    )
    selection: Literal["judge", "vote", "all"] = Field(
        "judge",
        description="How a layer selects the responses that flow on. judge: the judge keeps k "
        "of them (no call when k or fewer succeeded); vote: without a call, one response for "
        "each of the k most-supported extracted answers (the judge decides ties at the cut and "
        "responses without an extractable answer); all: every response is forwarded, k is not "
        "used (dense, as MoA; an ablation of SMoA).",
    )
    activation: Literal["all", "selected"] = Field(
        "all",
        description="Which proposers answer in a later layer. all: every one (the paper); "
        "selected: only those whose responses the layer before selected, as a sparse mixture "
        "of experts activates its top-k experts.",
    )
    judge_view_chars: int | None = Field(
        None,
        ge=20,
        description="Show the judge each candidate cut to this many characters plus its "
        "final-answer line (a bounded judge view); default: whole responses.",
    )
    stop_share: float | None = Field(
        None,
        ge=0.5,
        le=1.0,
        description="Also stop when at least this share of the layer's responses give one "
        "extracted answer that no other answer ties (all of its responses, not only the "
        "selected ones; 0.5 of 4 is a plurality of 2); default: off.",
    )
    final_layer_judge: bool = Field(
        True,
        description="Call the judge on the last allowed layer too. Off: that layer forwards "
        "every response to the aggregator (no judge call; the aggregator reads more).",
    )
    early_stop: bool = Field(
        True,
        description="Let the moderator stop before max_layers. Off: every layer runs (an "
        "ablation); the moderator then makes no call.",
    )
    reads: Literal["selection", "others"] = Field(
        "selection",
        description="What a later layer's proposer reads. selection: the responses the layer "
        "before forwarded; others: every agent's previous answer, its own pointed out "
        "(multi-agent debate).",
    )
    finish: Literal["aggregate", "vote", "agreement", "plurality"] = Field(
        "aggregate",
        description="How the run ends. aggregate: the aggregator synthesises the final answer "
        "from the last selection; vote: the majority of the last layer's extracted final "
        "answers wins (no call; ties go to the lowest proposer index; when no answer can be "
        "extracted, one call picks the most consistent response, as in Universal "
        "Self-Consistency); agreement: when the last layer agrees (its selected responses give "
        "one extracted answer, or stop_share of its answers do), the first response giving that "
        "answer stands, with no call; otherwise the aggregator synthesises; plurality: the answer "
        "that most of all the run's responses (every layer's) give, when no other ties it, "
        "stands with its latest response, with no call; otherwise the aggregator synthesises.",
    )
    judge_index_base: Literal[0, 1] = Field(
        1,
        description="Number the candidates shown to the judge from 0 (the paper's reference "
        "code) or from 1.",
    )
    proposer_dispatch: Literal["auto", "parallel", "sequential", "prefix-first"] = Field(
        "auto",
        description="How a layer's proposer calls reach the backend. parallel: all at once; "
        "sequential: one after another, so a backend that caches prompt prefixes per slot "
        "(llama-server) reads the layer's shared prefix once; prefix-first: one call, then the "
        "rest together; auto: sequential on the embedded local model from layer 2 on (its "
        "proposers share the references to read), parallel elsewhere.",
    )
    model: str = Field(
        "local",
        description="Default model for every role: 'local' (embedded SmolLM2 server), a "
        "provider string such as 'openai:gpt-4o-mini', or 'MODEL@BASE_URL' for any "
        "OpenAI-compatible endpoint.",
    )
    base_url: str | None = Field(
        None,
        description="OpenAI-compatible endpoint for plain model names (no provider prefix).",
    )
    api_key_env: str = Field(
        "OPENAI_API_KEY",
        description="Environment variable holding the API key for base_url endpoints.",
    )
    proposer_models: list[str] | None = Field(
        None, description="One model per proposer (length n); default: model."
    )
    judge_model: str | None = Field(None, description="Judge model; default: model.")
    moderator_model: str | None = Field(None, description="Moderator model; default: model.")
    aggregator_model: str | None = Field(None, description="Aggregator model; default: model.")
    role_model: str | None = Field(None, description="Role-generation model; default: model.")
    proposer_temperature: float = Field(0.7, ge=0.0, le=2.0, description="Proposer temperature.")
    aggregator_temperature: float = Field(
        0.7, ge=0.0, le=2.0, description="Aggregator temperature."
    )
    control_temperature: float = Field(
        0.0, ge=0.0, le=2.0, description="Judge, moderator and role-generator temperature."
    )
    frequency_penalty: float | None = Field(
        None,
        ge=-2.0,
        le=2.0,
        description="OpenAI-style frequency penalty for every call (positive values discourage "
        "repeating tokens); default: the backend's own.",
    )
    max_tokens: int = Field(512, ge=1, le=32768, description="Output cap per proposer call.")
    aggregator_max_tokens: int | None = Field(
        None, ge=1, le=32768, description="Output cap of the aggregator; default: max_tokens."
    )
    structured_output: bool = Field(
        True,
        description="Use JSON-schema constrained output for judge, moderator and roles where "
        "the model supports it; text parsing is the fallback either way.",
    )
    roles: list[str] | None = Field(
        None, description="Static role prompts, one per proposer (length n)."
    )
    task_description: str | None = Field(
        None,
        description="Dataset/task description D. With it, roles are generated once by the role "
        "model and cached.",
    )
    task_requirement: str | None = Field(
        None, description="Task requirement T for role generation (what a good answer does)."
    )
    roles_cache_dir: str | None = Field(
        None, description="Folder for generated roles; default: $SMOA_CACHE_DIR/roles."
    )
    max_prompt_chars: int = Field(
        200_000, ge=1, description="Longest accepted prompt, in characters."
    )
    proposer_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Timeout per proposer attempt in seconds; a timed-out attempt is retried.",
    )
    request_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Timeout of one HTTP request to a model endpoint in seconds: to connect, "
        "or waiting for the next bytes (the whole answer when it is not streamed).",
    )
    max_attempts: int = Field(
        3, ge=1, le=10, description="Attempts per model call on transient errors."
    )
    retry_backoff_s: float = Field(
        0.5,
        ge=0,
        le=60,
        description="Wait before the first retry of a transient error, doubled for each further "
        "retry; up to 1 s of random jitter is added unless it is 0.",
    )

    @model_validator(mode="wrap")
    @classmethod
    def _apply_preset(cls, data: Any, handler: ModelWrapValidatorHandler[SMoAConfig]) -> Any:
        """Fill fields the caller left unset from the preset's defaults.

        ``model_fields_set`` stays the fields the caller gave (not the preset's), so that a run
        context can say exactly which of the builder's settings it replaces.
        """
        if not isinstance(data, dict):
            return handler(data)
        preset = data.get("preset", "smoa")
        if preset not in PRESET_DEFAULTS:
            raise ValueError(
                f"preset: unknown preset {preset!r}; choose one of {', '.join(PRESET_DEFAULTS)}"
            )
        defaults = dict(PRESET_DEFAULTS[preset])
        if preset in DENSE and "n_proposers" in data:
            defaults["k"] = data["n_proposers"]  # dense: k follows n
        config = handler({**defaults, **data})
        object.__setattr__(config, "__pydantic_fields_set__", set(data) & set(cls.model_fields))
        return config

    @model_validator(mode="after")
    def _check_consistency(self) -> SMoAConfig:
        """Reject combinations that cannot run, naming the field and the fix."""
        n = self.n_proposers
        if self.k > n:
            raise ValueError(f"k: k={self.k} is larger than n_proposers={n}; set k <= n_proposers")
        preset = self.preset
        if preset in DENSE and self.k != n:
            raise ValueError(f"k: the {preset} preset is dense, so k must equal n_proposers ({n})")
        if preset == "moa" and self.moderator != "never":
            raise ValueError(
                "moderator: the moa preset always runs max_layers; use preset 'smoa' to stop early"
            )
        if preset == "single" and (n != 1 or self.max_layers != 1):
            raise ValueError(
                "n_proposers/max_layers: the single preset is one proposer in one layer; "
                "use preset 'moa' or 'smoa' for more"
            )
        for name in sorted(PRESET_FIXED[preset] - {"k"}):
            wanted = PRESET_DEFAULTS[preset][name]
            if getattr(self, name) != wanted:
                raise ValueError(
                    f"{name}: the {preset} preset uses {name}={wanted!r}; leave it unset, or "
                    f"use preset 'smoa' with {name}={getattr(self, name)!r}"
                )
        if self.finish == "vote" and self.selection != "all" and self.k != n:
            raise ValueError(
                "finish: a vote counts the answers of the last layer; with "
                f"selection={self.selection!r} it "
                "would count only k of them: set selection='all' or finish='aggregate'"
            )
        for name in ("roles", "proposer_models"):
            value = getattr(self, name)
            if value is not None:
                if len(value) != n:
                    raise ValueError(
                        f"{name}: got {len(value)} entries for n_proposers={n}; give exactly "
                        f"one per proposer"
                    )
                if any(not str(v).strip() for v in value):
                    raise ValueError(f"{name}: entries must not be empty")
        for name in ("model", "judge_model", "moderator_model", "aggregator_model", "role_model"):
            value = getattr(self, name)
            if value is not None and not value.strip():
                raise ValueError(f"{name}: must not be empty; e.g. 'local' or 'openai:gpt-4o-mini'")
        return self

    @property
    def is_single(self) -> bool:
        """One proposer in one layer: its answer is the answer (no judge, no aggregator)."""
        return self.n_proposers == 1 and self.max_layers == 1

    def proposer_model(self, index: int) -> str:
        """Model spec for proposer ``index``."""
        return self.proposer_models[index] if self.proposer_models else self.model

    def model_for(self, role: Role) -> str:
        """Model spec of a control role (judge, moderator, aggregator, roles): its own, else
        ``model``."""
        own = {
            "judge": self.judge_model,
            "moderator": self.moderator_model,
            "aggregator": self.aggregator_model,
            "roles": self.role_model,
        }[role]
        return own or self.model

    def with_context(self, context: BaseModel | Mapping[str, Any] | None) -> SMoAConfig:
        """This config with the fields a run context explicitly sets laid over it, validated.

        ``context`` is a ``SMoAContext`` (LangGraph builds one from a dict context), an
        ``SMoAConfig`` or a dict; its set, non-null fields are what the caller meant. A context
        that changes the preset takes that preset's fixed fields (``PRESET_FIXED``) unless it sets
        them itself; everything else (models, endpoints, limits) stays this config's. An empty
        context (Studio sends one) changes nothing.
        """
        if context is None:
            return self
        if isinstance(context, BaseModel):
            given = {name: getattr(context, name) for name in context.model_fields_set}
        else:
            given = dict(context)
        if isinstance(context, SMoAContext):
            given = {name: value for name, value in given.items() if value is not None}
        if not given:
            return self
        base = {name: getattr(self, name) for name in self.model_fields_set}
        preset = given.get("preset", self.preset)
        if preset != self.preset:
            base = {k: v for k, v in base.items() if k not in PRESET_FIXED.get(preset, ())}
        return SMoAConfig.model_validate({**base, "preset": preset, **given})

    def role_prompts_static(self) -> list[str]:
        """Static roles: the configured ones, else the built-in personas cycled to n."""
        if self.roles:
            return list(self.roles)
        return [DEFAULT_ROLES[i % len(DEFAULT_ROLES)] for i in range(self.n_proposers)]


def validation_problems(error: ValidationError) -> list[str]:
    """Each problem of a config ``ValidationError`` as ``field: what is wrong (and the fix)``."""
    problems = []
    for problem in error.errors():
        where = ".".join(map(str, problem["loc"]))
        problems.append(f"{where}: " * bool(where) + problem["msg"].removeprefix("Value error, "))
    return problems


def config_problems(error: ValidationError) -> str:
    """A validation error as one line: ``field: what is wrong and the fix; ...``."""
    return "; ".join(validation_problems(error))


def _context_fields() -> dict[str, Any]:
    """Every ``SMoAConfig`` field, optional: same type, bounds and description, default unset."""
    fields: dict[str, Any] = {}
    for name, info in SMoAConfig.model_fields.items():
        annotation: Any = info.annotation
        if info.metadata:
            annotation = Annotated[annotation, *info.metadata]
        fields[name] = (annotation | None, Field(None, description=info.description))
    return fields


SMoAContext = create_model(
    "SMoAContext",
    __config__=ConfigDict(extra="forbid"),
    __doc__="A run's context: the ``SMoAConfig`` fields to change for this run, all optional. "
    "Fields left empty keep the graph's configuration; the result is validated as a whole.",
    **_context_fields(),
)
"""The graph's context schema (the Studio form): see ``SMoAConfig.with_context``."""
