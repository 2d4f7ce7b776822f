"""Recipes: an ordered list of stage configs, loaded from YAML and validated on load.

A stage is one technique (prune, distill, quantize) with a typed config. Training stages share one
loop: prune and distill run together (gradual pruning under distillation), quantize follows (calibrate,
then QAT under the same distillation losses).
"""
from __future__ import annotations

import difflib
from enum import Enum
from pathlib import Path
from typing import Annotated, Literal, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, ValidationInfo, field_validator, \
    model_validator

from edgekit.errors import InputError

RECIPE_DIR = Path(__file__).resolve().parent.parent / "recipes"


class Pattern(str, Enum):
    block_4x1 = "4x1"
    block_4x4 = "4x4"  # four 4x1 blocks side by side, kept or pruned together (runs as 4x1)
    unstructured = "unstructured"
    n_m = "2:4"
    head = "head"  # whole attention heads: their q/k/v rows (+ bias) and attention-output columns
    neuron = "neuron"  # whole FFN neurons: a row of ffn_in (+ bias entry) and the matching ffn_out column
    head_neuron = "head+neuron"  # both: ``head_sparsity`` of the heads, ``sparsity`` of the neurons


STRUCTURED = ("head", "neuron", "head+neuron")
LINEAR_KINDS = ("q", "k", "v", "o", "ffn_in", "ffn_out")


class Criterion(str, Enum):
    magnitude = "magnitude"
    movement = "movement"


class _Stage(BaseModel):
    model_config = ConfigDict(extra="forbid", use_enum_values=True)
    version: int = 1


def _fixed_sparsities(v: dict, info: ValidationInfo, what: str) -> None:
    """Common checks of kind_sparsity / layer_sparsity: per-layer scope, weight patterns, values in [0, 1)."""
    _weight_pattern_only(info)
    if info.data.get("scope") != "per-layer":
        raise ValueError(f"applies with scope 'per-layer' only (scope is {info.data.get('scope')!r})")
    for key, sp in v.items():
        if not 0.0 <= sp < 1.0:
            raise ValueError(f"{what}{key}: {sp} is not in [0, 1)")


def _weight_pattern_only(info: ValidationInfo) -> None:
    """For prune options that work on individual weights or blocks, not on whole heads / neurons."""
    if info.data.get("pattern") in STRUCTURED:
        raise ValueError(f"applies to patterns 4x1, 4x4, unstructured and 2:4, not {info.data.get('pattern')!r}")


class PruneConfig(_Stage):
    """Gradual pruning of every encoder Linear (q, k, v, attention out, FFN in, FFN out), or of whole
    attention heads / FFN neurons (structured patterns)."""

    type: Literal["prune"] = "prune"
    pattern: Pattern = Pattern.block_4x1
    sparsity: float = Field(0.8, ge=0.0, lt=1.0, description="final fraction of zero weights; for head / neuron "
                                                                "patterns the fraction of heads / neurons pruned")
    criterion: Criterion = Criterion.magnitude
    scope: Literal["per-layer", "global", "hardware-aware"] = "per-layer"
    target_speedup: float | None = Field(None, gt=1.0, description="hardware-aware: wanted speedup of the Linears")
    steps: int = Field(300, ge=1, description="training steps of this stage (pruning + fixed-mask fine-tune)")
    ramp: float = Field(0.75, gt=0.0, le=1.0, description="fraction of steps over which sparsity ramps up (cubic)")
    update_every: int = Field(10, ge=1, description="steps between mask updates while ramping")
    lr: float = Field(1e-4, gt=0.0)
    head_sparsity: float | None = Field(None, ge=0.0, lt=1.0, description="pattern head+neuron: fraction of heads "
                                                                           "pruned (default: sparsity)")
    oneshot: bool = Field(False, description="prune to the final sparsity before the first step, layer by layer: "
                                             "weights scored by |W| x input RMS (Wanda) on oneshot_samples training "
                                             "texts, kept weights refitted by least squares to the unpruned layer's "
                                             "outputs; then `steps` of fixed-mask distillation (no ramp)")
    oneshot_samples: int = Field(128, ge=1, description="oneshot: calibration texts from the train split")
    layerwise_steps: int = Field(0, ge=0, description="oneshot: then train each pruned encoder layer alone for "
                                                      "this many steps to reproduce the teacher's output of that "
                                                      "layer from the reconstructed layers below (0: off)")
    layerwise_samples: int = Field(1024, ge=16, description="layerwise: training texts whose teacher hidden "
                                                            "states are held in memory (1,024 x 128 tokens x 384: "
                                                            "~1.4 GB for a 6-layer MiniLM)")
    layerwise_lr: float = Field(1e-3, gt=0.0)
    kind_sparsity: dict[str, float] | None = Field(
        None, description="scope per-layer, unstructured / block patterns: final sparsity of some Linear kinds (q, k, "
                          "v, o, ffn_in, ffn_out) in every layer; the kinds left out share what remains of "
                          "`sparsity` over all encoder Linears")
    layer_sparsity: dict[int, float] | None = Field(
        None, description="scope per-layer, unstructured / block patterns: final sparsity of every Linear of some "
                          "encoder layers (by index from 0; over kind_sparsity there); the other Linears share what "
                          "remains of `sparsity`")

    @field_validator("head_sparsity")
    @classmethod
    def _head_sparsity_needs_both(cls, v, info: ValidationInfo):
        if v is not None and info.data.get("pattern") != "head+neuron":
            raise ValueError(f"applies to pattern 'head+neuron' only (pattern is {info.data.get('pattern')!r})")
        return v

    @field_validator("oneshot")
    @classmethod
    def _oneshot_fits(cls, v, info: ValidationInfo):
        # the one-shot scores are per weight (summed over a 4x1 block); heads / neurons and movement have none
        if v:
            _weight_pattern_only(info)
        if v and info.data.get("criterion") == "movement":
            raise ValueError("uses its own criterion (|W| x input RMS); set criterion: magnitude")
        return v

    @field_validator("layerwise_steps")
    @classmethod
    def _layerwise_needs_oneshot(cls, v, info: ValidationInfo):
        if v and not info.data.get("oneshot"):
            raise ValueError("applies after one-shot pruning only; set oneshot: true")
        return v

    @field_validator("kind_sparsity")
    @classmethod
    def _kinds_known(cls, v, info: ValidationInfo):
        if v is None:
            return v
        _fixed_sparsities(v, info, "")
        bad = sorted(set(v) - set(LINEAR_KINDS))
        if bad:
            raise ValueError(f"unknown kind(s) {', '.join(map(repr, bad))}; allowed: {', '.join(LINEAR_KINDS)}")
        if set(v) == set(LINEAR_KINDS):
            raise ValueError("lists every kind; leave at least one out to take the rest of `sparsity`")
        return v

    @field_validator("layer_sparsity")
    @classmethod
    def _layers_valid(cls, v, info: ValidationInfo):
        if v is None:
            return v
        if any(layer < 0 for layer in v):
            raise ValueError(f"layer {min(v)}: layer indices start at 0")
        _fixed_sparsities(v, info, "layer ")
        return v

    @field_validator("scope")
    @classmethod
    def _scope_fits_pattern(cls, v, info: ValidationInfo):
        # the latency table behind hardware-aware holds 4x1 kernel timings; it says nothing about heads or neurons
        if v == "hardware-aware" and info.data.get("pattern") in STRUCTURED:
            raise ValueError(f"'hardware-aware' does not apply to pattern {info.data.get('pattern')!r}; "
                             "allowed: per-layer, global")
        return v


class DistillConfig(_Stage):
    """Losses against the teacher (the original model, eval mode). Weights of 0 switch a loss off."""

    type: Literal["distill"] = "distill"
    temperature: float = Field(2.0, gt=0.0)
    logits_weight: float = Field(1.0, ge=0.0, description="KL on logits (classification)")
    label_weight: float = Field(0.5, ge=0.0, description="cross-entropy on true labels (classification)")
    embedding_weight: float = Field(1.0, ge=0.0, description="1 - cosine on sentence embeddings (feature extraction)")
    hidden_weight: float = Field(1.0, ge=0.0, description="MSE on hidden states through layer_map")
    relation_weight: float = Field(1.0, ge=0.0, description="KL on softmax(QK^T) and softmax(VV^T) relations")
    relation_teacher_layer: int | None = Field(None, description="teacher layer for relations; default: last, or "
                                                                   "the intermediate one when the student is shallower")
    student_layers: list[int] | None = Field(None, description="teacher layers the student keeps (layer dropping): "
                                                                "student layer i starts as teacher layer student_layers[i]")
    freeze_embeddings: bool = Field(False, description="keep the student's embedding layer (token, position and "
                                                      "type embeddings, their LayerNorm) at the teacher's values: "
                                                      "training updates the encoder layers only")
    tail_weight: float = Field(0.0, ge=0.0, description="the student's hidden state after one layer run through the "
                                                        "teacher's remaining layers and head, against the teacher's "
                                                        "output (1 - cosine, or the logits' KL); 0 = off")
    tail_layers: list[int] | None = Field(None, description="student layers whose output feeds the teacher's tail, one "
                                                             "per step in turn; default: every layer but the last")

    @field_validator("student_layers")
    @classmethod
    def _layers_sorted_unique(cls, v):
        if v is None:
            return v
        if not v:
            raise ValueError("must list at least one teacher layer (or be left out to keep them all)")
        if min(v) < 0:
            raise ValueError(f"layer indices start at 0; got {v}")
        if sorted(set(v)) != v:
            raise ValueError(f"must be sorted and without repeats; got {v}")
        return v


class QuantizeConfig(_Stage):
    """edgekit's int8 scheme: u8 per-tensor asymmetric activations at every encoder Linear input,
    s8 per-output-channel symmetric weights, int32 accumulation."""

    type: Literal["quantize"] = "quantize"
    calibration: Literal["minmax", "percentile"] = "minmax"
    percentile: float = Field(99.99, gt=90.0, le=100.0)
    calibration_samples: int = Field(128, ge=1)
    qat_steps: int = Field(60, ge=0, description="quantization-aware training steps (0 = PTQ only)")
    lr: float = Field(2e-5, gt=0.0)
    fp32_layers: list[str] = Field(default_factory=list, description="native names kept fp32, e.g. layers.5.ffn_out")
    accuracy_budget: float | None = Field(None, ge=0.0, description="sensitivity pass: metric points (accuracy x 100, or "
                                                                    "embedding cosine to the teacher x 100) int8 may lose "
                                                                    "on the validation split before Linears are kept fp32; "
                                                                    "None = off")
    sensitivity_samples: int = Field(128, ge=1, description="validation examples the sensitivity pass evaluates on")
    weight_bits: Literal[7, 8, "auto"] = Field("auto", description="8: weights in [-127, 127]; 7: in [-63, 63] "
                                                                  "(exact with vpmaddubsw on AVX2 CPUs without "
                                                                  "VNNI; ONNX Runtime's reduce_range); auto: 7 when "
                                                                  "the kernels' active ISA is avx2, else 8")

    @field_validator("fp32_layers")
    @classmethod
    def _native_names(cls, v):
        for name in v:
            parts = name.split(".")
            if len(parts) != 3 or parts[0] != "layers" or not parts[1].isdigit() or parts[2] not in LINEAR_KINDS:
                raise ValueError(f"{name!r} is not a native Linear name layers.<i>.<{'|'.join(LINEAR_KINDS)}>")
        return v


def resolve_weight_bits(setting: int | str) -> int:
    """The weight bits a quantize stage uses: ``weight_bits`` itself, or for ``"auto"`` 7 when edgekit's
    kernels run their AVX2 path (no AVX-512): its fast int8 kernels use ``vpmaddubsw``, whose int16 pair sums
    are exact only for |q_w| <= 64. On AVX-512 (VNNI or not) 7 bits buy no speed, so auto is 8 there. The ISA
    is the one the kernels run (``EDGEKIT_ISA`` can force a lower one); without built kernels, /proc/cpuinfo.
    On the AVX2 host of 2026-11-25 the default recipe scored the same with 7 and 8 bits (docs/results-history.md)."""
    if setting != "auto":
        return int(setting)
    return 7 if _avx2_kernels() else 8


def _avx2_kernels() -> bool:
    from edgekit.info import cpu_info, kernels_isa

    isa = kernels_isa()  # ref | avx2 | avx512 | avx512_vnni, None when the kernels are not built
    if isa is not None:
        return isa == "avx2"
    flags = cpu_info()["isa"]
    return bool(flags.get("avx2")) and not flags.get("avx512bw")


Stage = Annotated[Union[PruneConfig, DistillConfig, QuantizeConfig], Field(discriminator="type")]


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
        msg = f"unknown stage type {err.get('ctx', {}).get('tag')!r}; allowed: prune, distill, quantize"
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
