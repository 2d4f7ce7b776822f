"""The distill stage: the training objective every training stage shares, and the student's shape.

A recipe's ``distill`` entry does not train by itself: it says what the prune and quantize stages train
against (:func:`objective`; without the entry, cross-entropy on the labels alone) and how the student starts
(:func:`make_student`: the teacher's copy, optionally with fewer layers and a frozen embedding layer). Its handler
records the resolved objective in report.json. The losses are :class:`edgekit.compress.distill.Distiller`'s.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field, field_validator

from edgekit.errors import InputError

from .base import StageConfig, register

if TYPE_CHECKING:
    from ..training import Run


class DistillConfig(StageConfig):
    """Losses against the teacher (the original model, eval mode). Weights of 0 switch a loss off."""

    type: Literal["distill"] = "distill"
    changes_student: ClassVar[bool] = False  # the stages that train under it are scored instead
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
    student_dropout: bool = Field(True, description="false: the student trains without dropout, as the teacher it "
                                                   "matches runs (closer embeddings where the student only has to "
                                                   "track the teacher, e.g. feature extraction)")
    tail_weight: float = Field(0.0, ge=0.0, description="the student's hidden state after one layer run through the "
                                                        "teacher's remaining layers and head, against the teacher's "
                                                        "output (1 - cosine, or the logits' KL); 0 = off")
    tail_layers: list[int] | None = Field(None, description="student layers whose output feeds the teacher's tail, one "
                                                             "per step in turn; default: every layer but the last")
    steps: int = Field(0, ge=0, description="dense distillation steps before the next stage (image models; the text "
                                            "driver trains only inside prune and quantize)")
    lr: float = Field(5e-4, gt=0.0, description="learning rate of those dense distillation steps")
    ablate_relation: bool = Field(False, description="image models: also distil a second student for `steps` steps "
                                                     "without the relation loss and report both accuracies")

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


#: the objective of a recipe without a distill entry: the true labels only (no teacher losses)
LABELS_ONLY = DistillConfig(logits_weight=0, hidden_weight=0, relation_weight=0, label_weight=1.0)


def objective(recipe) -> DistillConfig:
    """What the recipe's training stages minimise: its ``distill`` entry, else :data:`LABELS_ONLY`."""
    return recipe.stage("distill") or LABELS_ONLY


def make_student(teacher, cfg: DistillConfig):
    """The teacher deep-copied; with ``student_layers`` only those encoder layers are kept, with
    ``freeze_embeddings`` its embedding layer does not train, without ``student_dropout`` its dropout is off."""
    import copy

    import torch

    from edgekit.arch import adapter_for, drop_layers, freeze_embeddings, num_layers

    adapter_for(teacher)  # an unsupported architecture stops here, before any work
    student = copy.deepcopy(teacher)
    keep = cfg.student_layers
    if keep:
        n = num_layers(teacher)
        if keep[-1] >= n:
            raise InputError(f"distill.student_layers: {[i for i in keep if i >= n]} out of range; the teacher has "
                             f"{n} layers (allowed 0..{n - 1})")
        drop_layers(student, keep)
    if cfg.freeze_embeddings:
        freeze_embeddings(student)
    if not cfg.student_dropout:
        for m in student.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
            if isinstance(getattr(m, "dropout_prob", None), float):  # attention kernels that take a probability
                m.dropout_prob = 0.0
    return student


@register(DistillConfig)
def run_distill(run: "Run", cfg: DistillConfig) -> dict:
    if cfg.steps or cfg.ablate_relation:  # the image driver (edgekit.vision.compress) reads them; text has no use
        raise InputError("distill.steps and distill.ablate_relation apply to image models only; remove them")
    d = run.distiller
    return {"losses": {k: v for k, v in cfg.model_dump().items() if k.endswith("weight")},
            "relation_teacher_layer": d.t_rel, "student_layers": cfg.student_layers, "layer_map": d.layer_map}
