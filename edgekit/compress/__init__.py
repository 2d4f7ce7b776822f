"""Compression: recipes of stages (prune, distill, quantize) applied to a trained model."""
from __future__ import annotations


def compress(*args, **kwargs):
    """See :func:`edgekit.compress.pipeline.compress`."""
    from .pipeline import compress as _compress

    return _compress(*args, **kwargs)
