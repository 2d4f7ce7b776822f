"""Compression: recipes of stages (prune, distill, quantize) applied to a trained model, ending at an Artifact.

Layout: :mod:`~edgekit.compress.config` (recipes), :mod:`~edgekit.compress.stages` (one file per technique:
config + handler), :mod:`~edgekit.compress.pipeline` (the driver), :mod:`~edgekit.compress.training` (the loop,
checkpoints, data parallelism), :mod:`~edgekit.compress.allocation` (sparsity per Linear),
:mod:`~edgekit.compress.scoring` and :mod:`~edgekit.compress.report`; the techniques' mathematics in
:mod:`~edgekit.compress.prune`, :mod:`~edgekit.compress.oneshot`, :mod:`~edgekit.compress.distill` and
:mod:`~edgekit.compress.sensitivity`.
"""
from __future__ import annotations


def compress(*args, **kwargs):
    """See :func:`edgekit.compress.pipeline.compress` (returns the Artifact)."""
    from .pipeline import compress as _compress

    return _compress(*args, **kwargs)
