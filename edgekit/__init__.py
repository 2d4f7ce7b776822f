"""edgekit: compress trained transformers and run them fast on CPUs.

The one path for data: model -> Recipe -> compress() -> export() -> Artifact -> load(artifact, runtime)
-> Session.run(feeds) -> bench() / evaluate().
"""
from __future__ import annotations

import os

# Offline always: nothing in edgekit may reach a model hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
