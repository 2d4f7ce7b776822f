"""Recipe stages, one file per technique: its typed config and its handler, registered side by side.

Importing this package registers every stage; the order here is the order error messages list them.

>>> from edgekit.compress.stages import handler_for, stage_types
>>> stage_types()
['prune', 'distill', 'quantize']
"""
from __future__ import annotations

from .base import HANDLERS, StageConfig, handler_for, register, stage_types
from .prune import PruneConfig  # noqa: E402  (registers)
from .distill import DistillConfig  # noqa: E402  (registers)
from .quantize import QuantizeConfig  # noqa: E402  (registers)

__all__ = ["HANDLERS", "DistillConfig", "PruneConfig", "QuantizeConfig", "StageConfig", "handler_for", "register",
           "stage_types"]
