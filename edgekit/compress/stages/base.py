"""The stage registry: config type -> handler, torchao-style. A new technique is one config plus one handler,
registered side by side in one file of this package; the driver (:mod:`edgekit.compress.pipeline`) only
walks the recipe and calls :func:`handler_for`."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from ..training import Run


class StageConfig(BaseModel):
    """Base of every stage config: typed, validated, versioned; ``type`` (a Literal in each subclass) tags it."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)
    version: int = 1
    #: whether the stage changes the student, so the driver scores it afterwards
    changes_student: ClassVar[bool] = True


Handler = Callable[["Run", StageConfig], dict]
HANDLERS: dict[type[StageConfig], Handler] = {}


def register(config_type: type[StageConfig]) -> Callable[[Handler], Handler]:
    """Decorator: ``@register(PruneConfig) def run_prune(run, cfg) -> dict`` (the dict goes to report.json)."""
    def deco(handler: Handler) -> Handler:
        HANDLERS[config_type] = handler
        return handler

    return deco


def handler_for(cfg: StageConfig) -> Handler:
    return HANDLERS[type(cfg)]


def stage_types() -> list[str]:
    """The ``type`` names of the registered stages, in registration order."""
    return [c.model_fields["type"].default for c in HANDLERS]
