"""Config validation: nonsense is rejected with a message naming the field and the fix."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from smoa_graph import SMoAConfig, build_smoa_graph
from smoa_graph.config import DEFAULT_ROLES
from smoa_graph.graph import graph


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"k": 5, "n_proposers": 4}, "k: k=5 is larger than n_proposers=4; set k <= n_proposers"),
        ({"n_proposers": 0}, "n_proposers"),
        ({"max_layers": 0}, "max_layers"),
        ({"preset": "dense"}, "preset: unknown preset 'dense'; choose one of single, moa, smoa"),
        ({"roles": ["a", "b"]}, "roles: got 2 entries for n_proposers=4; give exactly one"),
        ({"proposer_models": ["x"] * 3}, "proposer_models: got 3 entries for n_proposers=4"),
        ({"model": "  "}, "model: must not be empty"),
        ({"preset": "moa", "k": 2}, "k: the moa preset is dense, so k must equal n_proposers"),
        ({"preset": "moa", "moderator": "hybrid"}, "moderator: the moa preset always runs"),
        ({"preset": "single", "n_proposers": 3}, "the single preset is one proposer"),
        ({"temperatur": 0.3}, "temperatur"),
        ({"k": "two"}, "k"),
    ],
)
def test_nonsense_is_rejected(fields: dict, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        SMoAConfig(**fields)
    assert message in str(info.value)


def test_presets_follow_the_paper() -> None:
    smoa = SMoAConfig()  # the paper's n and k; the rest measured (README, Benchmarks)
    assert (smoa.n_proposers, smoa.k, smoa.max_layers, smoa.moderator) == (4, 2, 2, "consistency")
    assert (smoa.selection, smoa.activation, smoa.finish) == ("vote", "selected", "agreement")
    assert (smoa.proposer_temperature, smoa.control_temperature) == (0.7, 0.0)
    moa = SMoAConfig(preset="moa")
    assert (moa.n_proposers, moa.k, moa.moderator) == (4, 4, "never")
    single = SMoAConfig(preset="single")
    assert (single.n_proposers, single.k, single.max_layers) == (1, 1, 1)
    assert SMoAConfig(preset="moa", n_proposers=6, k=6).k == 6


def test_default_roles_cycle_to_n() -> None:
    roles = SMoAConfig(n_proposers=10, k=2).role_prompts_static()
    assert len(roles) == 10 and roles[8] == DEFAULT_ROLES[0] and len(set(roles)) == 8


def test_every_field_has_a_description() -> None:
    schema = graph.get_context_jsonschema()
    assert schema is not None
    for name, field in schema["properties"].items():
        assert field.get("description"), name


def test_import_and_build_need_no_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    compiled = build_smoa_graph(SMoAConfig(model="openai:gpt-4o-mini")).compile()
    assert {"prepare", "layer", "moderator", "aggregator"} <= set(compiled.get_graph().nodes)


def test_the_frequency_penalty_reaches_every_chat_model() -> None:
    from smoa_graph import ModelRequest, default_model_factory

    for penalty in (0.4, None):
        cfg = SMoAConfig(model="m@http://127.0.0.1:9/v1", frequency_penalty=penalty)
        model: Any = default_model_factory(ModelRequest.for_config(cfg, cfg.model, 0.7, 32))
        assert model.frequency_penalty == penalty
        assert ("frequency_penalty" in model._default_params) is (penalty is not None)
