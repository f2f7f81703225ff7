"""Sparse Mixture-of-Agents (SMoA) as a LangGraph workflow."""

from smoa_graph.attempts import failed_calls
from smoa_graph.chat_model import SMoAChatModel
from smoa_graph.config import SMoAConfig
from smoa_graph.errors import AllProposersFailedError, InvalidInputError
from smoa_graph.graph import build_smoa_graph
from smoa_graph.models import (
    FINAL_ANSWER_TAG,
    ModelConfigError,
    ModelFactory,
    ModelRequest,
    default_model_factory,
)
from smoa_graph.summary import usage_summary

__all__ = [
    "FINAL_ANSWER_TAG",
    "AllProposersFailedError",
    "InvalidInputError",
    "ModelConfigError",
    "ModelFactory",
    "ModelRequest",
    "SMoAChatModel",
    "SMoAConfig",
    "build_smoa_graph",
    "default_model_factory",
    "failed_calls",
    "usage_summary",
]
