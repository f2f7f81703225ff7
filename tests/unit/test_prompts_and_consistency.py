"""Every prompt renders with its declared variables; agreement is measured without a model."""

from __future__ import annotations

import pytest

from smoa_graph.answers import extract_final_answer
from smoa_graph.consistency import lexical_similarity, measure_agreement
from smoa_graph.prompts import PROMPT_VARIABLES, load_template, prompts_dir, render


@pytest.mark.parametrize("name", sorted(PROMPT_VARIABLES))
def test_every_prompt_renders(name: str) -> None:
    variables = {v: f"<{v}>" for v in PROMPT_VARIABLES[name]}
    text = render(name, **variables)
    for value in variables.values():
        assert value in text
    assert "$" not in text.replace("$name", "")
    identifiers = set(load_template(name).get_identifiers())
    assert identifiers == PROMPT_VARIABLES[name]


def test_render_rejects_missing_or_extra_variables() -> None:
    with pytest.raises(TypeError, match="takes"):
        render("aggregator", prompt="p")
    with pytest.raises(KeyError, match="unknown prompt"):
        render("nope")


def test_prompts_folder_is_found() -> None:
    assert (prompts_dir() / "judge.md").is_file()


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("So 6*7 = 42.\nFinal answer: 42", "42"),
        ("Final answer: **1,234.50**", "1234.5"),
        ("Final answer: Paris", "paris"),
        ("He has 3 apples and buys 15 more, so 18.", "18"),
        ("No numbers here", None),
    ],
)
def test_final_answer_extraction(text: str, answer: str | None) -> None:
    assert extract_final_answer(text) == answer


def test_agreement_on_final_answers_and_on_words() -> None:
    agree = measure_agreement(["x Final answer: 18", "y so 18.0"], 0.9)
    assert agree.agree and agree.answer == "18" and agree.method == "final answers"
    disagree = measure_agreement(["Final answer: 18", "Final answer: 17"], 0.9)
    assert not disagree.agree and disagree.score == 0.5
    words = measure_agreement(["the sky is blue", "The sky is blue!"], 0.8)
    assert words.agree and words.method == "lexical similarity"
    assert not measure_agreement(["the sky is blue", "grass grows green"], 0.8).agree
    assert lexical_similarity(["one"]) == 1.0
