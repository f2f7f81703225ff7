"""Accounting summaries of a run: tokens, calls and latency per role, per layer, and in total."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from smoa_graph.state import CallRecord


def _bucket() -> dict[str, Any]:
    return {
        "calls": 0,
        "failed_calls": 0,
        "input_tokens": 0,
        "cached_input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
        "latency_s": 0.0,
    }


def _add(bucket: dict[str, Any], call: CallRecord) -> None:
    bucket["calls"] += 1
    bucket["failed_calls"] += 0 if call["ok"] else 1
    bucket["input_tokens"] += call["input_tokens"]
    bucket["cached_input_tokens"] += call.get("cached_input_tokens", 0)
    bucket["output_tokens"] += call["output_tokens"]
    bucket["total_tokens"] += call["input_tokens"] + call["output_tokens"]
    bucket["latency_s"] = round(bucket["latency_s"] + call["latency_s"], 4)


def usage_summary(calls: Iterable[CallRecord]) -> dict[str, Any]:
    """Sum tokens, calls and model latency by role, by layer and overall.

    ``latency_s`` adds up the latency of each call (model time), not the wall time of the run;
    ``cached_input_tokens`` is the part of ``input_tokens`` the backend read from its prompt cache.
    """
    total = _bucket()
    by_role: dict[str, dict[str, Any]] = {}
    by_layer: dict[str, dict[str, Any]] = {}
    for call in calls:
        _add(total, call)
        _add(by_role.setdefault(call["role"], _bucket()), call)
        _add(by_layer.setdefault(str(call["layer"]), _bucket()), call)
    return {"total": total, "by_role": by_role, "by_layer": by_layer}
