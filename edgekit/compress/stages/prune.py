"""The prune stage: its config and its handler.

Masks come from a schedule (:data:`SCHEDULES`): ``gradual`` (cubic ramp under distillation) or ``oneshot``
(final masks before the first step, optionally refined layer by layer, then fixed-mask distillation). How much
each Linear gets is the scope's allocation (:mod:`edgekit.compress.allocation`). The mask mathematics lives in
:mod:`edgekit.compress.prune`, one-shot pruning in :mod:`edgekit.compress.oneshot`.
"""
from __future__ import annotations

import time
from enum import Enum
from typing import TYPE_CHECKING, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from edgekit.arch.base import LINEAR_KINDS
from edgekit.errors import InputError

from .base import StageConfig, register

if TYPE_CHECKING:
    from ..training import Run


class Pattern(str, Enum):
    block_4x1 = "4x1"
    block_4x4 = "4x4"  # four 4x1 blocks side by side, kept or pruned together (runs as 4x1)
    unstructured = "unstructured"
    n_m = "2:4"
    head = "head"  # whole attention heads: their q/k/v rows (+ bias) and attention-output columns
    neuron = "neuron"  # whole FFN neurons: a row of ffn_in (+ bias entry) and the matching ffn_out column
    head_neuron = "head+neuron"  # both: ``head_sparsity`` of the heads, ``sparsity`` of the neurons


STRUCTURED = ("head", "neuron", "head+neuron")
SCOPES = ("per-layer", "global", "hardware-aware", "search")


class Criterion(str, Enum):
    magnitude = "magnitude"
    movement = "movement"


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


class PruneConfig(StageConfig):
    """Gradual pruning of every encoder Linear (q, k, v, attention out, FFN in, FFN out), or of whole
    attention heads / FFN neurons (structured patterns)."""

    type: Literal["prune"] = "prune"
    pattern: Pattern = Pattern.block_4x1
    sparsity: float = Field(0.8, ge=0.0, lt=1.0, description="final fraction of zero weights; for head / neuron "
                                                                "patterns the fraction of heads / neurons pruned")
    criterion: Criterion = Criterion.magnitude
    scope: Literal["per-layer", "global", "hardware-aware", "search"] = "per-layer"
    target_speedup: float | None = Field(None, gt=1.0, description="hardware-aware, search: wanted speedup of the "
                                                                   "encoder Linears over dense int8")
    latency_target: float | None = Field(None, gt=0.0, le=1.0, description="search: wanted latency of the encoder "
                                                                          "Linears as a fraction of dense int8 "
                                                                          "(0.33 = 3x faster); or target_speedup")
    openvino_speedup: float | None = Field(None, gt=1.0, description="search: wanted speed of the whole model on "
                                                                     "the native engine over OpenVINO int8 on this "
                                                                     "CPU (batch 1, 128 tokens), both measured "
                                                                     "before the search")
    search_grid: list[float] = Field([0.5, 0.7, 0.8, 0.9, 0.95], min_length=1,
                                     description="search: the sparsities each Linear may get (0 = dense)")
    search_trials: int = Field(2000, ge=1, description="search: NSGA-II trials (each costs two table sums; "
                                                       "--max-steps caps them too)")
    search_samples: int = Field(64, ge=1, description="search: training windows the sensitivity is measured on")
    steps: int = Field(300, ge=1, description="training steps of this stage (pruning + fixed-mask fine-tune)")
    ramp: float = Field(0.75, gt=0.0, le=1.0, description="fraction of steps over which sparsity ramps up (cubic)")
    update_every: int = Field(10, ge=1, description="steps between mask updates while ramping")
    lr: float = Field(1e-4, gt=0.0)
    warmup: int = Field(0, ge=0, description="steps over which the learning rate rises linearly to `lr` before it "
                                             "decays (a fresh optimiser's first full-size steps can undo what "
                                             "one-shot pruning and layer-wise reconstruction reached)")
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

    @property
    def schedule(self) -> str:
        """The key of :data:`SCHEDULES` that sets this stage's masks."""
        return "oneshot" if self.oneshot else "gradual"

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


    @field_validator("search_grid")
    @classmethod
    def _grid_valid(cls, v):
        bad = [x for x in v if not 0.0 <= x < 1.0]
        if bad:
            raise ValueError(f"{bad[0]} is not a sparsity in [0, 1)")
        return v

    @model_validator(mode="after")
    def _search_needs_target(self) -> "PruneConfig":
        if self.scope == "search":
            if self.pattern not in ("4x1", "4x4"):
                raise ValueError(f"scope 'search' times the 4x1 kernels; pattern must be 4x1 or 4x4, not "
                                 f"{self.pattern!r}")
            targets = [self.latency_target, self.target_speedup, self.openvino_speedup]
            if sum(t is not None for t in targets) != 1:
                raise ValueError("scope 'search' needs exactly one of latency_target (e.g. 0.33), target_speedup "
                                 "and openvino_speedup (e.g. 3.0)")
        else:
            for key in ("latency_target", "openvino_speedup"):
                if getattr(self, key) is not None:
                    raise ValueError(f"{key} applies with scope 'search' only (scope is {self.scope!r})")
        return self


@register(PruneConfig)
def run_prune(run: "Run", cfg: PruneConfig) -> dict:
    from edgekit.arch import encoder, encoder_linears

    from ..allocation import allocate
    from ..prune import Pruner, total_sparsity

    linears = encoder_linears(run.student)
    heads = encoder(run.student).heads
    try:
        allocation = allocate(linears, cfg, heads, run.recipe, run)
        run.pruner = Pruner(linears, cfg.pattern, cfg.criterion, allocation, heads, cfg.head_sparsity)
    except ValueError as exc:
        raise InputError(f"prune.pattern {cfg.pattern!r} does not fit this model: {exc}") from None
    total = run.steps(cfg.steps)
    schedule = SCHEDULES[cfg.schedule]
    start, extra = 0, {}
    resumed = run.resumed("prune")
    if resumed:
        start = resumed["step"]
        run.pruner.masks = resumed["masks"] or run.pruner.masks
    else:
        extra = schedule.prepare(run, cfg, linears, allocation)
    run.train(total, cfg.lr, "prune", schedule.on_step(run, cfg, total), start, warmup=run.steps(cfg.warmup))
    schedule.finish(run, cfg)
    sp = run.pruner.sparsity()
    out = {"sparsity": total_sparsity(linears), "layers": sp, "steps": total, **extra}
    if run.allocation_record is not None:  # the search scope's tables, front and choice
        out["search"] = run.allocation_record
    if cfg.pattern in STRUCTURED:  # {"heads": {"kept": [per layer], "of": n}, "neurons": ...}
        out["kept"] = run.pruner.kept()
    return out


def restore_pruned(run: "Run", cfg: PruneConfig, masks: dict) -> None:
    """A run resumed after its prune stage finished: a pruner holding the saved masks, so later training
    (QAT, distillation) keeps the pruned weights at zero as it does in an uninterrupted run."""
    from edgekit.arch import encoder, encoder_linears

    from ..prune import Pruner

    run.pruner = Pruner(encoder_linears(run.student), cfg.pattern, cfg.criterion, None, encoder(run.student).heads,
                        cfg.head_sparsity)
    run.pruner.masks.update(masks)
    run.pruner.apply()


class Gradual:
    """Sparsity follows a cubic ramp from 0 to the target over ``ramp * steps`` (masks recomputed every
    ``update_every`` steps, pruned weights stay pruned), then the masks are fixed."""

    @staticmethod
    def prepare(run: "Run", cfg: PruneConfig, linears, allocation) -> dict:
        return {}

    @staticmethod
    def on_step(run: "Run", cfg: PruneConfig, total: int):
        from ..prune import cubic_sparsity

        ramp = max(1, int(cfg.ramp * total))

        def on_step(step: int) -> None:
            if step % cfg.update_every == 0 or step == ramp:
                run.pruner.update(cubic_sparsity(min(step, ramp), ramp, 1.0), cfg.sparsity)

        return on_step

    @staticmethod
    def finish(run: "Run", cfg: PruneConfig) -> None:
        run.pruner.update(1.0, cfg.sparsity)


class OneShot:
    """The final masks before the first step (:mod:`edgekit.compress.oneshot`), optionally refined by layer-wise
    reconstruction; training then keeps them fixed."""

    @staticmethod
    def prepare(run: "Run", cfg: PruneConfig, linears, allocation) -> dict:
        from tqdm.auto import tqdm

        from ..oneshot import GROUPS, oneshot_prune
        from ..prune import total_sparsity

        n = min(cfg.oneshot_samples, len(run.ids))
        batches = [(run.ids[i:i + 16], run.mask[i:i + 16]) for i in range(0, n, 16)]  # the first n training texts
        t0 = time.perf_counter()
        layers = {name.split(".")[1] for name in linears}
        with tqdm(total=len(GROUPS) * len(layers), desc="one-shot prune", disable=not run.progress,
                  unit="group") as bar:
            masks = oneshot_prune(run.student, linears, allocation or cfg.sparsity, cfg.pattern, batches,
                                  progress=lambda _msg: bar.update(1))
        run.pruner.masks.update(masks)
        run.pruner.apply()
        out = {"samples": n, "seconds": round(time.perf_counter() - t0, 1), "sparsity": total_sparsity(linears)}
        if cfg.layerwise_steps:
            out["layerwise"] = _layerwise(run, cfg, linears, masks)
            run.pruner.apply()
        return {"oneshot": out}

    @staticmethod
    def on_step(run: "Run", cfg: PruneConfig, total: int):
        return None

    @staticmethod
    def finish(run: "Run", cfg: PruneConfig) -> None:
        run.pruner.apply()


#: how a prune stage sets its masks, by :attr:`PruneConfig.schedule`
SCHEDULES = {"gradual": Gradual, "oneshot": OneShot}


def _layerwise(run: "Run", cfg: PruneConfig, linears, masks) -> dict:
    """Layer-wise reconstruction (:func:`edgekit.compress.oneshot.reconstruct_layers`) on the teacher's hidden
    states of ``layerwise_samples`` training texts; student layer i learns teacher layer layer_map[i]'s output."""
    import torch
    from tqdm.auto import tqdm

    from edgekit.arch import encoder

    from ..oneshot import reconstruct_layers

    t0 = time.perf_counter()
    steps = run.steps(cfg.layerwise_steps)
    n = min(cfg.layerwise_samples, len(run.ids))
    pick = torch.randperm(len(run.ids), generator=torch.Generator().manual_seed(run.recipe.seed))[:n]
    ids, mask = run.ids[pick], run.mask[pick]
    s_enc, t_enc = encoder(run.student), encoder(run.teacher)
    was_training = run.student.training
    run.student.eval()
    with torch.inference_mode():
        hid = [torch.cat(h) for h in zip(*[t_enc.hidden_states(ids[i:i + 64], mask[i:i + 64])
                                           for i in range(0, n, 64)])]
        student_in = torch.cat([s_enc.embed(ids[i:i + 64]) for i in range(0, n, 64)])
    run.student.train(was_training)
    targets = [hid[j + 1].clone() for j in run.distiller.layer_map]  # inference tensors -> ordinary ones
    del hid
    wmasks = [{linears[k]: masks[k] for k in masks if k.startswith(f"layers.{i}.")} for i in range(len(s_enc.layers))]
    with tqdm(total=len(s_enc.layers), desc="layer-wise reconstruction", disable=not run.progress,
              unit="layer") as bar:
        losses = reconstruct_layers(s_enc, student_in.clone(), targets, mask, wmasks, steps,
                                    lr=cfg.layerwise_lr, batch=run.recipe.batch, seed=run.recipe.seed,
                                    progress=lambda _msg: bar.update(1))
    return {"samples": n, "steps": steps, "final_loss": [round(x, 4) for x in losses],
            "seconds": round(time.perf_counter() - t0, 1)}
