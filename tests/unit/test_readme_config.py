"""The README's configuration table lists every ``SMoAConfig`` field with its default."""

from __future__ import annotations

import re
from pathlib import Path

from smoa_graph.config import PRESET_DEFAULTS, SMoAConfig

README = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")


def test_every_field_is_in_the_readme_with_its_default() -> None:
    rows = dict(re.findall(r"^\| `(\w+)` \| `(.*?)` \| ", README, re.M))
    expected = {name: repr(field.default) for name, field in SMoAConfig.model_fields.items()}
    assert rows == expected


def test_every_preset_is_in_the_readme() -> None:
    presets = re.findall(r"^\| `([\w-]+)` \| \d", README, re.M)
    assert presets == list(PRESET_DEFAULTS)
