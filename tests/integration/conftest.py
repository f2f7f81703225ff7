"""Integration fixtures: one real ``llama-server`` + SmolLM2 for the whole test session.

Every test under this directory is marked ``integration`` (deselect with ``-m "not
integration"``). Without the local runtime installed they fail with the fix (never a silent skip).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from smoa_graph.local_server import LocalServer, LocalServerError

os.environ["LANGSMITH_TRACING"] = "false"  # tracing without a key delays exit by ~13 s

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test collected from this directory as ``integration``."""
    for item in items:
        if item.path.is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def local_server() -> Iterator[LocalServer]:
    """A llama-server owned by the test session, stopped when the session ends."""
    try:
        server = LocalServer()
    except LocalServerError as exc:
        pytest.fail(str(exc), pytrace=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def local_base_url(local_server: LocalServer) -> str:
    """OpenAI-compatible base URL of the session's local server."""
    return local_server.base_url
