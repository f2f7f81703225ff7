"""Sparse Mixture-of-Agents (SMoA) as a LangGraph workflow."""

from smoa_graph.chat_model import SMoAChatModel
from smoa_graph.config import SMoAConfig
from smoa_graph.graph import build_smoa_graph
from smoa_graph.models import ModelConfigError, ModelFactory, ModelRequest, default_model_factory
from smoa_graph.nodes import AllProposersFailedError, InvalidInputError
from smoa_graph.summary import usage_summary

__all__ = [
    "AllProposersFailedError",
    "InvalidInputError",
    "ModelConfigError",
    "ModelFactory",
    "ModelRequest",
    "SMoAChatModel",
    "SMoAConfig",
    "build_smoa_graph",
    "default_model_factory",
    "usage_summary",
]
