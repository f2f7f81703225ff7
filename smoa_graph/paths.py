"""The one cache folder of smoa_graph: ``$SMOA_CACHE_DIR``, else ``~/.cache/smoa_graph``.

It holds generated roles, the default checkpoint file, and the local server's state and logs.
"""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The cache folder (created on demand by whoever writes into it)."""
    return Path(os.environ.get("SMOA_CACHE_DIR") or Path.home() / ".cache" / "smoa_graph")
