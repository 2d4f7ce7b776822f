"""The one small interface every runtime implements; bench and evaluate only talk to this."""
from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from edgekit.artifact import Artifact


@runtime_checkable
class Session(Protocol):
    """A loaded model, ready to run. ``run`` takes int64 ``input_ids`` and ``attention_mask``
    of shape [batch, seq] and returns the task's single output as a float32 array
    (``embeddings`` [batch, hidden] or ``logits`` [batch, classes])."""

    runtime: str  #: runtime name, e.g. "onnxruntime"
    precision: str  #: what actually executes, e.g. "fp32", "bf16", "int8", "int8-sparse"
    threads: int  #: intra-op threads in use
    task: str

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray: ...


class Runtime(Protocol):
    name: str

    def version(self) -> str | None:
        """Installed version, or None when the runtime is not importable here."""

    def load(self, artifact: Artifact, threads: int, precision: str | None = None) -> Session:
        """Open ``artifact`` with ``threads`` intra-op threads. ``precision`` is a runtime-specific hint."""
