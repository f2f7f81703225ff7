"""The notebooks run top to bottom on the local model, and are stored without outputs.

Each notebook is executed in memory (the files are never rewritten) by nbclient on a ``python3``
kernel of this interpreter, with ``SMOA_LOCAL_BASE_URL`` pointing at the test session's server.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
CELL_TIMEOUT_S = 900  # one cell runs a whole benchmark; bounded so a hung cell fails


def text_of(nb: Any) -> str:
    """Every output of every cell as one text (stdout, stderr, display data, errors)."""
    parts: list[str] = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            parts.append(output.get("text", ""))
            for value in output.get("data", {}).values():
                parts.append(value if isinstance(value, str) else json.dumps(value))
    return "\n".join(parts)


def execute(name: str, tmp_path: Path, local_base_url: str) -> Any:
    """Run a notebook in a fresh kernel; fail with the cell's traceback on the first error."""
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    kernels = tmp_path / "jupyter" / "kernels" / "python3"
    kernels.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (this venv)",
        "language": "python",
        "env": {
            "SMOA_LOCAL_BASE_URL": local_base_url,
            "SMOA_BENCH_OUT": str(tmp_path / "bench"),
            "LANGSMITH_TRACING": "false",
            "SMOA_CACHE_DIR": str(tmp_path / "cache"),
        },
    }
    (kernels / "kernel.json").write_text(json.dumps(spec))
    client = NotebookClient(
        nb,
        kernel_name="python3",
        timeout=CELL_TIMEOUT_S,
        startup_timeout=120,
        resources={"metadata": {"path": str(NOTEBOOKS)}},
    )
    previous = os.environ.get("JUPYTER_PATH")
    os.environ["JUPYTER_PATH"] = str(tmp_path / "jupyter")  # our kernel spec comes first
    try:
        client.execute()  # raises CellExecutionError with the traceback
    finally:
        if previous is None:
            os.environ.pop("JUPYTER_PATH", None)
        else:
            os.environ["JUPYTER_PATH"] = previous
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    return nb


@pytest.mark.parametrize("name", ["quickstart.ipynb", "benchmark.ipynb"])
def test_notebooks_are_stored_without_outputs(name: str) -> None:
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, cell.source[:80]
    assert nb.metadata["kernelspec"]["name"] == "python3"


def test_quickstart_runs_every_preset(tmp_path: Path, local_base_url: str) -> None:
    nb = execute("quickstart.ipynb", tmp_path, local_base_url)
    text = text_of(nb)
    assert f"local model: {local_base_url}" in text
    assert "graph TD" in text and "subgraph layer" in text  # the diagram
    for preset in ("single", "moa", "smoa"):
        assert f"== {preset}: answer (streamed)" in text
        assert f"== {preset}: tokens per role" in text
    assert "judge selected" in text and "moderator after layer" in text
    assert "proposer 3:" in text  # moa and smoa show all four candidates
    for role in ("proposer", "aggregator", "TOTAL"):  # a judge call only when a vote cannot pick
        assert f"\n{role} " in text, role
    assert "stopped because" in text


def test_benchmark_runs_and_reports(tmp_path: Path, local_base_url: str) -> None:
    nb = execute("benchmark.ipynb", tmp_path, local_base_url)
    text = text_of(nb)
    assert "9 of 9 runs done" in text
    assert "| variant | items |" in text and "| smoa | 3 |" in text
    assert "smoa/moa" in text  # the ratio table
    images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
    assert len(images) == 1
    out = tmp_path / "bench"
    assert {"results.jsonl", "summary.md", "plot.png"} <= {p.name for p in out.iterdir()}
