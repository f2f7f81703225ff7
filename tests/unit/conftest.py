"""Unit tests run offline: an isolated cache folder for each test."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _isolated_cache(
    tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMOA_CACHE_DIR", str(tmp_path_factory.mktemp("smoa_cache")))
