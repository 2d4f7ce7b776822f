"""Recipes: an ordered list of stage configs, loaded from YAML and validated on load.

A stage is one technique (prune, distill, quantize) with a typed config, defined with its handler in
:mod:`edgekit.compress.stages`. Training stages share one loop: prune trains under the distillation objective
(gradual pruning under distillation), quantize follows (calibrate, then QAT under the same losses).
"""
from __future__ import annotations

import difflib
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from edgekit.errors import InputError

from .stages import HANDLERS, DistillConfig, PruneConfig, QuantizeConfig, stage_types  # noqa: F401  (re-exported)

RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"

# one entry per registered stage config, told apart by its ``type``
Stage = Annotated[Union[tuple(HANDLERS)], Field(discriminator="type")]


class DistillDataConfig(BaseModel):
    """Unlabelled text the teacher labels for distillation (and, with ``calibration``, int8 calibration).

    ``source``: a registered text source (``english-mix``, ``gensim-lee``, ``linux-doc``, ... see ``edgekit info``),
    a built-in dataset name, or a path (plain text or a table, read with the data's text column); a list reads
    several. The texts are cut into passages of ``min_words``..``max_words`` words (shorter pieces dropped), the
    evaluated data's validation and test texts never come back, and ``passages`` of them (all when None) are drawn
    with the recipe's seed. ``use``: ``add`` trains on them mixed with the task's training windows (one shuffled
    pool; for classifiers the label loss then counts only the labelled rows), ``replace`` trains on them alone.
    ``edgekit compress --distill-data SOURCE`` replaces ``source`` (and adds these defaults to a recipe without
    the section).

    >>> DistillDataConfig(source="english-mix", passages=4000, min_words=64).use
    'add'
    """

    model_config = ConfigDict(extra="forbid")
    version: int = 1
    source: Union[str, list[str]] = "english-mix"
    passages: int | None = Field(None, ge=1, description="how many passages to draw (None: all)")
    min_words: int = Field(1, ge=1, description="shortest passage kept, in words")
    max_words: int = Field(200, ge=1, description="passages are cut at this many words")
    use: Literal["add", "replace"] = "add"
    calibration: bool = Field(True, description="half of the int8 calibration texts come from these passages")

    @model_validator(mode="after")
    def _check(self) -> "DistillDataConfig":
        if self.max_words < self.min_words:
            raise ValueError(f"max_words ({self.max_words}) must be >= min_words ({self.min_words})")
        sources = [self.source] if isinstance(self.source, str) else self.source
        if not sources or not all(isinstance(x, str) and x.strip() for x in sources):
            raise ValueError("source must name a text source or a path (or a non-empty list of them)")
        return self

    def sources(self) -> list[str]:
        return [self.source] if isinstance(self.source, str) else list(self.source)


class Recipe(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = "custom"
    description: str = ""  # one line for `edgekit compress --help`: what the recipe does, how long it takes
    version: int = 1
    batch: int = Field(16, ge=1)
    max_length: int = Field(128, ge=8, le=512)
    # training rows per text: its first ``train_windows`` consecutive max_length-token windows (1 = the
    # first window only, which is what evaluation sees; BBC articles hold ~4 windows of 128 tokens)
    train_windows: int = Field(1, ge=1, le=64)
    # fraction of each training window's text tokens replaced, afresh every step, by tokens drawn at random
    # from the training text (0 = off). Teacher and student see the same altered window, so distillation
    # gets new inputs near the data instead of the same ~6,000 windows again (see Recipes in the README).
    augment_tokens: float = Field(0.0, ge=0.0, lt=1.0)
    seed: int = 0
    checkpoint_every: int = Field(50, ge=1)
    # unlabelled text for distillation and calibration (None: the task's training split only)
    distill_data: DistillDataConfig | None = None
    stages: list[Stage]

    @model_validator(mode="after")
    def _check(self) -> "Recipe":
        kinds = [s.type for s in self.stages]
        if len(set(kinds)) != len(kinds):
            raise ValueError(f"each stage type may appear once; got {kinds}")
        if "quantize" in kinds and kinds[-1] != "quantize":
            raise ValueError("the quantize stage must be last")
        return self

    def stage(self, kind: str):
        return next((s for s in self.stages if s.type == kind), None)

    def to_dict(self) -> dict:
        return self.model_dump(mode="json")


def builtin_recipes() -> list[str]:
    return sorted(p.stem for p in RECIPE_DIR.glob("*.yaml"))


def _first_error(exc: ValidationError) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-after", "tagged-union")))
    msg = err["msg"]
    if err["type"] in ("literal_error", "enum"):
        msg = f"{msg} (got {err.get('input')!r})"
    if err["type"] == "value_error":
        msg = msg.removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    if err["type"] == "union_tag_invalid":
        msg = f"unknown stage type {err.get('ctx', {}).get('tag')!r}; allowed: {', '.join(stage_types())}"
    return f"{where}: {msg}" if where else msg


def recipe_from_dict(data: dict, source: str = "recipe") -> Recipe:
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise InputError(f"invalid recipe {source}: {_first_error(exc)}") from None


def load_recipe(recipe: str | Path | None = None) -> Recipe:
    """A built-in name (default ``fast-distilbert``) or a YAML file."""
    name = recipe or "fast-distilbert"
    path = Path(name)
    if not path.suffix:
        path = RECIPE_DIR / f"{name}.yaml"
        if not path.is_file():
            close = difflib.get_close_matches(name, builtin_recipes(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise InputError(f"unknown recipe {name!r}{hint}; built-in: {', '.join(builtin_recipes())} (or a .yaml file)")
    elif not path.is_file():
        raise InputError(f"recipe file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise InputError(f"recipe {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    except UnicodeDecodeError as exc:  # a binary file, or text in another encoding
        raise InputError(f"recipe {path} is not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset "
                         f"{exc.start}); a recipe is a YAML file") from None
    except OSError as exc:  # a folder, a file we may not read
        raise InputError(f"recipe {path} cannot be read: {exc.strerror}") from None
    if not isinstance(data, dict):
        raise InputError(f"recipe {path} must be a mapping with a 'stages' list")
    data.setdefault("name", path.stem)
    return recipe_from_dict(data, str(path))
