"""Shared test setup: no tracing (a key-less LangSmith tracer delays exit)."""

from __future__ import annotations

import os

os.environ["LANGSMITH_TRACING"] = "false"
os.environ["LANGCHAIN_TRACING_V2"] = "false"
