"""Where edgekit keeps what it builds on first use (the fine-tuned default model, latency tables)."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$EDGEKIT_CACHE``, else ``$XDG_CACHE_HOME/edgekit``, else ``~/.cache/edgekit``."""
    env = os.environ.get("EDGEKIT_CACHE")
    if env:
        root = Path(env)
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgekit"
    root.mkdir(parents=True, exist_ok=True)
    return root
