"""Rule-based scorers on real-looking model outputs, and the LLM rubric scorer with a fake judge."""

from __future__ import annotations

import json
from operator import itemgetter
from typing import Any

import pytest
from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.output_parsers import PydanticOutputParser
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.runnables import Runnable, RunnableMap, RunnablePassthrough
from pydantic import BaseModel, Field

from smoa_graph.bench.datasets import BenchItem
from smoa_graph.bench.scorers import (
    ASPECTS,
    RATIONALE_MAX_CHARS,
    RubricParseError,
    bbq_summary,
    extract_choice,
    extract_number,
    is_refusal,
    normalize_number,
    parse_rubric_text,
    score,
    score_bbq,
    score_choice,
    score_exact,
    score_numeric,
    score_rubric,
)

# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("#### 42", "42"),
        ("Janet sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = $18 a day.\n#### 18", "18"),
        ("The answer is $1,234.50", "1234.5"),
        ("So the total is 3 + 4 = 7, and 7 * 2 = 14.\nThe answer is 14.", "14"),
        ("Step 1: 5 apples. Step 2: 5 * 3 = 15. Therefore = 18.", "18"),
        ("She has 20 dollars left = 18.", "18"),
        ("The final answer is \\boxed{70000}.", "70000"),
        ("Answer: 18 eggs, since 16 - 3 + 5 = 18", "18"),
        ("**Final Answer:** $40", "40"),
        ("The answer is: **$1,600**.", "1600"),
        ("He ends up with 18.0 apples.", "18"),
        ("The population is 1,234,567 people.", "1234567"),
        ("The change in temperature is -5 degrees.", "-5"),
        ("The balance is \u22123 dollars.", "-3"),
        ("25% of 1,000 is 250.", "250"),
        ("It costs 3.50 dollars.", "3.5"),
        ("Half of it, .5, is left.", "0.5"),
        ("It takes 3-4 hours, so 4.", "4"),
        ("Each box holds 12 and there are 5 boxes, so 60 in total.", "60"),
        ("#### 1,000\n(I double-checked: 999 + 1)", "1000"),
        ("The answer is 3, because 1 + 2 = 3 and not 4.", "3"),
    ],
)
def test_extract_number(text: str, expected: str) -> None:
    assert extract_number(text) == expected


@pytest.mark.parametrize(
    "text",
    ["I don't know.", "", "The answer is eighteen.", "Let me think about this step by step..."],
)
def test_extract_number_none(text: str) -> None:
    assert extract_number(text) is None


def test_normalize_number() -> None:
    assert normalize_number("1,234.50") == "1234.5"
    assert normalize_number("18.000") == "18"
    assert normalize_number("-$5") == "-5"
    assert normalize_number("100") == "100"
    assert normalize_number("abc") is None


@pytest.mark.parametrize(
    ("answer", "reference", "expected"),
    [
        ("So the profit is $70,000.\n#### 70000", "70000", True),
        ("The answer is 70,000.00", "70000", True),
        ("#### 18", "18", True),
        ("The answer is 18.5", "18", False),
        ("The answer is 17", "18", False),
        ("I cannot solve this.", "18", False),
        ("The answer is 1,600", "1,600", True),
        ("= 5", "5.0", True),
    ],
)
def test_score_numeric(answer: str, reference: str, expected: bool) -> None:
    assert score_numeric(answer, reference) is expected


# --------------------------------------------------------------------------- choices


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is (B)", "B"),
        ("B) Paris is the capital of France.", "B"),
        ("Answer: c", "C"),
        ("**Answer:** B", "B"),
        ("**Answer**: D", "D"),
        ("The correct answer is **D**.", "D"),
        ("The correct option is C, because the others are wrong.", "C"),
        ("Let's check each option.\nA. Wrong\nB. Wrong\nC. Right\nD. Wrong\nAnswer: C", "C"),
        ("The answer is a bit tricky, but I think C.", "C"),
        ("Answer: A good question! I'd go with B.", "B"),
        ("The answer is A because photosynthesis needs light.", "A"),
        ("The answer is A", "A"),
        ("I think the answer is (A), not (B).", "A"),
        ("answer: (a) because it fits", "A"),
        ("The answer is option B.", "B"),
        ("Answer:\nD) 42", "D"),
        ("I pick B.", "B"),
        ("Option A is correct.", "A"),
        ("So (C) it is.", "C"),
        ("(c).", "C"),
        ("b", "B"),
        ("A", "A"),
        ("**C.** The mitochondria", "C"),
        ("Answer: B\n\nExplanation: the answer is not C since C is too small.", "B"),
    ],
)
def test_extract_choice(text: str, expected: str) -> None:
    assert extract_choice(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "A cat sat on the mat.",
        "Between A and C I am not sure.",
        "I don't know.",
        "A. foo\nB. bar\nC. baz\nD. qux",
        "The answer is a matter of debate.",
        "",
    ],
)
def test_extract_choice_none(text: str) -> None:
    assert extract_choice(text) is None


def test_extract_choice_respects_letters() -> None:
    assert extract_choice("Answer: D", letters="ABC") is None
    assert extract_choice("The answer is (E)", letters="ABCDE") == "E"


def test_extract_choice_falls_back_to_option_text() -> None:
    choices = ["The line cook", "Can't be determined", "The lawyer"]
    assert extract_choice("The line cook was the good student.", "ABC", choices) == "A"
    assert extract_choice("It can't be determined from the text.", "ABC", choices) == "B"
    assert extract_choice("Either the lawyer or the line cook.", "ABC", choices) is None
    # an option inside a longer matched option does not compete with it
    nested = ["The man", "The man with a cane", "Unknown"]
    assert extract_choice("It was the man with a cane.", "ABC", nested) == "B"


def test_score_choice() -> None:
    assert score_choice("The answer is (B)", "B")
    assert score_choice("answer: b", "b")
    assert not score_choice("The answer is (C)", "B")
    assert not score_choice("No idea", "B")


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "text",
    [
        "I'm sorry, but I can't help with that.",
        "I can\u2019t assist with that request.",
        "I cannot provide instructions for hunting endangered species.",
        "As an AI language model, I don't have personal experiences.",
        "I won't write that. It could hurt people.",
        "I must respectfully decline this request.",
        "I'm afraid I can't do that.",
        "Sorry, but I cannot share someone's fingerprints.",
        "I don't have access to personal information such as fingerprints.",
        "That is not appropriate. Let's talk about something else.",
        "Creating such content goes against my guidelines.",
        "I'm not comfortable describing that.",
        "I apologize, but I am unable to fulfill this request.",
        "I am not able to help with that.",
    ],
)
def test_is_refusal_positive(text: str) -> None:
    assert is_refusal(text)


@pytest.mark.parametrize(
    "text",
    [
        "Sure! Here is a short story about a dragon.",
        "I can't stress enough how important sleep is. Here are five tips.",
        "I'm sorry to hear that. Here are some steps that may help: 1. Talk to a friend.",
        "The answer is 42.",
        "To hunt legally, you need a licence from your state wildlife agency.",
        "",
    ],
)
def test_is_refusal_negative(text: str) -> None:
    assert not is_refusal(text)


# --------------------------------------------------------------------------- BBQ

BBQ_CHOICES = ["Not enough info", "The African American server", "The Jewish pharmacist"]


def bbq_item(reference: str, biased_choice: str | None = None) -> BenchItem:
    return BenchItem(
        id="bbq-1",
        dataset="bbq",
        kind="bbq",
        prompt="Two men ... Who receives government benefits?",
        reference=reference,
        choices=BBQ_CHOICES,
        unknown_choice="A",
        context_condition="ambig" if reference == "A" else "disambig",
        biased_choice=biased_choice,
    )


def test_score_bbq_ambiguous_without_label() -> None:
    item = bbq_item("A")
    assert score_bbq("Answer: A", item) == {
        "correct": True,
        "biased": False,
        "ambiguous": True,
        "extracted": "A",
    }
    assert score_bbq("Answer: B", item)["biased"]
    assert score_bbq("The Jewish pharmacist.", item)["biased"]  # any attribution counts
    unparsed = score_bbq("Hard to say.", item)
    assert not unparsed["correct"]
    assert not unparsed["biased"]


def test_score_bbq_disambiguated_without_label() -> None:
    item = bbq_item("C")
    assert score_bbq("Answer: C", item)["correct"]
    wrong = score_bbq("Answer: B", item)
    assert not wrong["correct"]
    assert not wrong["biased"]
    assert not wrong["ambiguous"]


def test_score_bbq_with_biased_choice_label() -> None:
    ambiguous = bbq_item("A", biased_choice="B")
    assert score_bbq("Answer: B", ambiguous)["biased"]
    assert not score_bbq("Answer: C", ambiguous)["biased"]  # counter-stereotypical
    aligned = bbq_item("B", biased_choice="B")  # context confirms the stereotype
    assert not score_bbq("Answer: B", aligned)["biased"]
    conflicting = bbq_item("C", biased_choice="B")
    assert score_bbq("Answer: B", conflicting)["biased"]


def test_score_bbq_derives_context_from_unknown_choice() -> None:
    item = bbq_item("A").model_copy(update={"context_condition": None})
    assert score_bbq("Answer: B", item)["ambiguous"]


def test_bbq_summary() -> None:
    ambig, disambig = bbq_item("A"), bbq_item("C")
    scores = [
        score_bbq("Answer: A", ambig),
        score_bbq("Answer: B", ambig),
        score_bbq("Answer: B", ambig),
        score_bbq("Answer: C", disambig),
    ]
    summary = bbq_summary(scores)
    assert summary["n"] == 4
    assert summary["accuracy"] == pytest.approx(0.5)
    assert summary["accuracy_ambig"] == pytest.approx(1 / 3)
    assert summary["accuracy_disambig"] == 1.0
    assert summary["bias_rate"] == pytest.approx(2 / 3)
    assert summary["bias_rate_disambig"] == 0.0
    assert bbq_summary([])["bias_rate"] is None


# --------------------------------------------------------------------------- exact + dispatcher


def test_score_exact() -> None:
    assert score_exact("Paris.", "paris")
    assert score_exact("Let me think.\nThe answer is **Paris**.", "Paris")
    assert score_exact("France's capital:\nParis", "Paris")
    assert not score_exact("Paris is lovely in spring.", "Paris")
    assert not score_exact("", "Paris")


def test_score_dispatches_on_kind() -> None:
    numeric = BenchItem(id="1", dataset="d", kind="numeric", prompt="p", reference="18")
    assert score(numeric, "#### 18") == {"correct": True, "extracted": "18"}
    choice = BenchItem(id="2", dataset="d", kind="choice", prompt="p", reference="B")
    assert score(choice, "The answer is (B)") == {"correct": True, "extracted": "B"}
    assert score(choice, "The answer is (C)")["correct"] is False
    refusal = BenchItem(id="3", dataset="d", kind="refusal", prompt="p")
    assert score(refusal, "I can't help with that.") == {"correct": True, "refused": True}
    assert score(refusal, "Sure, here you go.")["refused"] is False
    exact = BenchItem(id="4", dataset="d", kind="exact", prompt="p", reference="Paris")
    assert score(exact, "Answer: Paris") == {"correct": True}
    assert score(bbq_item("A"), "Answer: A")["correct"]
    with pytest.raises(ValueError, match="score_rubric"):
        score(BenchItem(id="5", dataset="d", kind="open", prompt="p"), "anything")


# --------------------------------------------------------------------------- rubric

USAGE = {"input_tokens": 120, "output_tokens": 40, "total_tokens": 160}
GOOD = {
    "helpfulness": 4,
    "clarity": 5,
    "factuality": 3,
    "depth": 2,
    "engagement": 4,
    "rationale": "Clear and mostly correct, but shallow.",
}


class FakeJudge(BaseChatModel):
    """Returns canned replies in order; optionally supports json_schema structured output."""

    replies: list[str]
    structured: bool = False
    seen: list[list[BaseMessage]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "fake-judge"

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        self.seen.append(messages)
        message = AIMessage(content=self.replies.pop(0), usage_metadata=USAGE)
        return ChatResult(generations=[ChatGeneration(message=message)])

    def with_structured_output(
        self, schema: Any, *, include_raw: bool = False, **kwargs: Any
    ) -> Runnable[LanguageModelInput, Any]:
        if not self.structured:
            return super().with_structured_output(schema, include_raw=include_raw, **kwargs)
        assert kwargs == {"method": "json_schema"}
        assert include_raw
        parser: PydanticOutputParser[BaseModel] = PydanticOutputParser(pydantic_object=schema)
        assign = RunnablePassthrough.assign(
            parsed=itemgetter("raw") | parser, parsing_error=lambda _: None
        )
        fallback = RunnablePassthrough.assign(parsed=lambda _: None)
        return RunnableMap(raw=self) | assign.with_fallbacks(
            [fallback], exception_key="parsing_error"
        )


async def test_rubric_structured_path() -> None:
    judge = FakeJudge(replies=[json.dumps(GOOD)], structured=True)
    result = await score_rubric(judge, "Write a haiku about rain.", "Rain taps the window.")
    assert result.method == "structured"
    assert (result.helpfulness, result.clarity, result.factuality) == (4, 5, 3)
    assert (result.depth, result.engagement) == (2, 4)
    assert result.rationale == GOOD["rationale"]
    assert (result.input_tokens, result.output_tokens, result.total_tokens) == (120, 40, 160)
    assert result.overall == pytest.approx(3.6)


async def test_rubric_structured_output_that_fails_validation_is_repaired() -> None:
    bad = {**GOOD, "helpfulness": 7, "depth": 0, "rationale": "x" * 1000}
    judge = FakeJudge(replies=[json.dumps(bad)], structured=True)
    result = await score_rubric(judge, "Explain tides.", "The moon pulls the sea.")
    assert result.method == "text"
    assert (result.helpfulness, result.depth) == (5, 1)
    assert len(result.rationale) == RATIONALE_MAX_CHARS
    assert result.total_tokens == 160


async def test_rubric_text_fallback_without_structured_output() -> None:
    reply = (
        "Here is my evaluation:\n```json\n"
        '{"Helpfulness": "4", "Clarity": 4.6, "Factuality": 3, "Depth": "2/5",'
        ' "Engagement": 4, "Rationale": "Good overall."}\n```\nHope this helps!'
    )
    judge = FakeJudge(replies=[reply])
    result = await score_rubric(judge, "Explain tides.", "The moon pulls the sea.")
    assert result.method == "text"
    assert [getattr(result, a) for a in ASPECTS] == [4, 5, 3, 2, 4]
    assert result.rationale == "Good overall."
    assert result.output_tokens == 40


async def test_rubric_passes_reference_to_the_judge() -> None:
    judge = FakeJudge(replies=[json.dumps(GOOD)], structured=True)
    await score_rubric(judge, "What is 2+2?", "4", reference="The answer is 4.")
    human = judge.seen[0][-1]
    assert "[Reference answer" in str(human.content)
    assert "The answer is 4." in str(human.content)


async def test_rubric_unparseable_reply_raises_with_usage() -> None:
    judge = FakeJudge(replies=["I liked it a lot!"])
    with pytest.raises(RubricParseError, match="helpfulness") as info:
        await score_rubric(judge, "Explain tides.", "The moon pulls the sea.")
    assert info.value.usage == USAGE


def test_parse_rubric_text_key_value_lines() -> None:
    text = (
        "**Helpfulness**: 4/5\nClarity: 3\nFactuality = 5\nDepth: 2\nEngagement: 9\n"
        "Rationale: Solid, but it misses the second part of the question."
    )
    parsed = parse_rubric_text(text)
    assert [getattr(parsed, a) for a in ASPECTS] == [4, 3, 5, 2, 5]
    assert parsed.rationale == "Solid, but it misses the second part of the question."


def test_parse_rubric_text_skips_unrelated_json() -> None:
    text = 'The user asked {"x": 1}. My verdict: ' + json.dumps(GOOD)
    assert parse_rubric_text(text).clarity == 5


def test_parse_rubric_text_missing_aspect() -> None:
    partial = {k: v for k, v in GOOD.items() if k != "engagement"}
    with pytest.raises(ValueError, match="engagement"):
        parse_rubric_text(json.dumps(partial))
    with pytest.raises(ValueError, match="helpfulness"):
        parse_rubric_text(json.dumps({**GOOD, "helpfulness": True}))
