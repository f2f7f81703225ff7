"""Errors a run can end with, raised before or instead of a model call where possible.

Which model errors are retried is decided by ``models.is_transient``; the others end the call.
"""

from __future__ import annotations

from collections.abc import Sequence

from smoa_graph.state import CallRecord


class InvalidInputError(ValueError):
    """The run's input or context cannot be answered (raised before any model call)."""


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
