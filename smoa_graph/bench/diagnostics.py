"""Where a run loses the right answer, and whether its final answer echoes candidate markers.

Both read what a run already records: the layer trace (every candidate, the judge's selection)
and the final answer text. The benchmark counts them per variant so that a user sees which step
loses an answer one proposer had (selection, later layers, aggregator) and how often a small model
copies the markers it was shown into its answer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from smoa_graph.bench.datasets import BenchItem
from smoa_graph.bench.scorers import score
from smoa_graph.judging import marker_echoes

ANSWER_STAGES: tuple[str, ...] = (
    "first_candidates",
    "first_selected",
    "last_candidates",
    "last_selected",
    "final",
)
"""The steps a right answer passes, in order: layer 1's responses, layer 1's selection, the last
layer's responses and selection (what the aggregator reads), the final answer."""


def has_marker_echo(text: str) -> bool:
    """Whether ``text`` echoes candidate markers or block headers, in the forms small models
    produce (``judging.marker_echoes``)."""
    return bool(marker_echoes(text))


def raw_echoes(layers: Sequence[Mapping[str, Any]]) -> tuple[int, int]:
    """(responses that echo markers or headers, responses that read others' answers): the raw
    text of every successful proposer response after layer 1, before any cleaning."""
    read = [c["text"] for layer in layers[1:] for c in layer["candidates"] if c["ok"]]
    return sum(has_marker_echo(text) for text in read), len(read)


def answer_path(
    item: BenchItem, layers: Sequence[Mapping[str, Any]], final_correct: bool
) -> dict[str, bool] | None:
    """For each of :data:`ANSWER_STAGES`, whether the right answer was there.

    A stage holds the right answer when one of its successful candidate texts scores correct with
    the item's scorer. ``None`` for an open item (no rule scorer) and for a run that never had
    two candidates in a layer (a single model: nothing to lose between steps).
    """
    if item.kind == "open" or not any(len(layer["candidates"]) > 1 for layer in layers):
        return None

    def right(layer: Mapping[str, Any], selected_only: bool) -> bool:
        chosen = set(layer["judge"]["selected"])
        return any(
            c["ok"]
            and (not selected_only or c["index"] in chosen)
            and score(item, c["text"])["correct"]
            for c in layer["candidates"]
        )

    first, last = layers[0], layers[-1]
    return {
        "first_candidates": right(first, selected_only=False),
        "first_selected": right(first, selected_only=True),
        "last_candidates": right(last, selected_only=False),
        "last_selected": right(last, selected_only=True),
        "final": final_correct,
    }
