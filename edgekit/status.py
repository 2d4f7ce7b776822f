"""Status lines on stderr for the quiet stretches before a progress bar (loading, building, waiting).

>>> say("loading minilm-l6-bbc")          # doctest: +SKIP
edgekit: loading minilm-l6-bbc
"""
from __future__ import annotations

import sys


def say(message: str, enabled: bool = True) -> None:
    """Print ``edgekit: message`` on stderr (flushed at once, so it shows before slow work starts)."""
    if enabled:
        print(f"edgekit: {message}", file=sys.stderr, flush=True)
