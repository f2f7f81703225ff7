"""Run contexts: the fields a context sets are laid over the builder's config, nothing else."""

from __future__ import annotations

from typing import Any

import pytest

from smoa_graph import InvalidInputError, ModelRequest, SMoAConfig, build_smoa_graph
from smoa_graph.testing import every_role, fake_factory

BUILT = SMoAConfig(model="openai:gpt-4o-mini", n_proposers=3, k=2, max_layers=2)


class Recording:
    """A fake model factory that remembers every request it builds a model for."""

    def __init__(self) -> None:
        self.requests: list[ModelRequest] = []
        self._fakes = fake_factory()

    def __call__(self, request: ModelRequest) -> Any:
        self.requests.append(request)
        return self._fakes(request)

    def proposer_calls(self) -> int:
        return sum(c.role == "proposer" for m in self._fakes.models.values() for c in m.calls)


async def run(context: Any, config: SMoAConfig = BUILT) -> tuple[dict[str, Any], Recording]:
    factory = Recording()
    graph = build_smoa_graph(config, model_factory=factory).compile()
    return await graph.ainvoke({"prompt": "What is 6 * 7?"}, context=context), factory


@pytest.mark.parametrize("context", [{"k": 1}, SMoAConfig(k=1)], ids=["dict", "model"])
async def test_a_partial_context_keeps_the_builders_models_and_n(context: Any) -> None:
    state, factory = await run(context)
    assert {r.spec for r in factory.requests} == {"openai:gpt-4o-mini"}
    assert [len(layer["candidates"]) for layer in state["layers"]] == [3] * len(state["layers"])
    assert all(len(layer["judge"]["selected"]) == 1 for layer in state["layers"])  # k=1


@pytest.mark.parametrize("context", [None, {}, SMoAConfig()], ids=["none", "empty", "blank"])
async def test_no_fields_set_means_the_builders_config(context: Any) -> None:
    state, factory = await run(context)
    assert {r.spec for r in factory.requests} == {"openai:gpt-4o-mini"}
    assert len(state["layers"][0]["candidates"]) == 3


async def test_an_explicit_context_equal_to_the_defaults_is_honoured() -> None:
    default_n = SMoAConfig().n_proposers
    state, _ = await run(SMoAConfig(n_proposers=default_n, model="fake"))
    assert len(state["layers"][0]["candidates"]) == default_n == 4


async def test_a_context_that_changes_the_preset_takes_its_fixed_fields() -> None:
    state, factory = await run({"preset": "moa"})
    judge = state["layers"][0]["judge"]
    assert len(judge["selected"]) == 3 and not judge["called"]  # dense: k follows n = 3
    assert (
        len(state["layers"]) == 2 and state["decisions"][0]["reason"] == "preset runs every layer"
    )
    assert {r.spec for r in factory.requests} == {"openai:gpt-4o-mini"}  # not a preset field
    state, _ = await run({"preset": "single"})
    assert len(state["layers"]) == 1 and len(state["layers"][0]["candidates"]) == 1


async def test_retry_settings_are_read_per_run() -> None:
    factory = fake_factory(fail_rate=1.0)  # every call fails with a transient error
    graph = build_smoa_graph(
        SMoAConfig(model="fake", n_proposers=2, k=1, max_layers=1, retry_backoff_s=0),
        model_factory=factory,
    ).compile()
    for attempts in (1, 3):
        factory.models.clear()
        with pytest.raises(Exception) as info:
            await graph.ainvoke({"prompt": "q?"}, context={"max_attempts": attempts})
        calls = getattr(info.value, "calls", [])
        assert [c["index"] for c in calls].count(0) == attempts, calls


async def test_a_context_that_does_not_validate_fails_before_any_model_is_built() -> None:
    factory = Recording()
    graph = build_smoa_graph(BUILT, model_factory=factory).compile()
    with pytest.raises(InvalidInputError, match="k: k=5 is larger than n_proposers=3"):
        await graph.ainvoke({"prompt": "q?"}, context={"k": 5})
    assert factory.requests == []
    wide = build_smoa_graph(every_role(model="fake", n_proposers=8, k=2, max_layers=1))
    state = await wide.compile().ainvoke({"prompt": "q?"}, context={"k": 6})  # valid with n=8
    assert len(state["layers"][0]["judge"]["selected"]) == 6


def test_with_context_rules() -> None:
    assert BUILT.with_context(None) is BUILT and BUILT.with_context({}) is BUILT
    merged = BUILT.with_context(SMoAConfig(max_tokens=64))
    assert (merged.model, merged.n_proposers, merged.k, merged.max_tokens) == (
        "openai:gpt-4o-mini",
        3,
        2,
        64,
    )
    assert SMoAConfig(preset="moa").model_fields_set == {"preset"}  # preset defaults not "set"
    moa = BUILT.with_context({"preset": "moa", "n_proposers": 5})
    assert (moa.n_proposers, moa.k, moa.moderator, moa.max_layers) == (5, 5, "never", 2)
