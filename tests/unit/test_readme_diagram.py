"""The README's Mermaid diagram is the graph's own drawing (``smoa graph`` prints it)."""

from __future__ import annotations

import re
from pathlib import Path

from smoa_graph.graph import draw_mermaid

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_diagram() -> str:
    """The first ```mermaid block of README.md."""
    match = re.search(
        r"^```mermaid[ \t]*\n(.*?)^```[ \t]*$", README.read_text("utf-8"), re.M | re.S
    )
    assert match, "README.md has no ```mermaid block"
    return match.group(1)


def test_readme_diagram_matches_the_graph() -> None:
    assert readme_diagram().strip() == draw_mermaid().strip(), (
        "README.md's diagram is out of date: paste the output of `smoa graph` into its first "
        "```mermaid block"
    )
