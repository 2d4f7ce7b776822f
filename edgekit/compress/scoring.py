"""The figures report.json gives for models and runtimes, all from the one evaluator
(:func:`edgekit.evaluate.evaluate`), the function ``edgekit eval`` calls.

The teacher, the student between stages and the exported artifact on each stock runtime are scored on the test
split: classifiers by accuracy (and agreement with the teacher), feature extractors by the mean cosine to the
teacher's embeddings (and, for the baseline and the final model, the linear-probe accuracy), token classifiers by
token accuracy (``accuracy``) and, for IOB tags, entity-level F1 (``entity_f1``). Under torchrun only rank 0
scores; the others get empty figures.
"""
from __future__ import annotations

import numpy as np

from edgekit.evaluate import evaluate, predict

from .training import current

STOCK_RUNTIMES = ("torch", "onnxruntime", "openvino")
EXTRA_RUNTIMES = ("native",)  #: scored too when the artifact holds them
CLASSIFIERS = ("text-classification", "token-classification")  #: scored against labels, not by cosine


def label_names(model, task: str) -> list[str] | None:
    """A classifier's class names in class order (its ``id2label``); None for feature extraction."""
    if task not in CLASSIFIERS:
        return None
    from edgekit.models import hf_model_of

    id2label = hf_model_of(model).config.id2label
    return [id2label[i] for i in sorted(id2label)]


def report_fields(res: dict) -> dict:
    """An evaluator result as report.json names its figures."""
    if res["task"] == "token-classification":
        out = {"accuracy": res["token_accuracy"]}
        if "entity_f1" in res:
            out["entity_f1"] = res["entity_f1"]
        if "agreement" in res:
            out["agreement_with_teacher"] = res["agreement"]
        return out
    if res["task"] == "text-classification":
        out = {"accuracy": res["value"]}
        if "agreement" in res:
            out["agreement_with_teacher"] = res["agreement"]
        return out
    out = {}
    for key in ("embedding_cosine", "neighbour_overlap_at_10"):
        if key in res:
            out[key] = res[key]
    if res["metric"] == "linear_probe_accuracy":
        out["accuracy"] = res["value"]
    return out


def probe_drop(baseline: dict, scores: dict) -> dict:
    """``scores`` with ``linear_probe_drop``: the teacher's linear-probe accuracy minus this model's (0.01 = 1
    point), when both have one (feature extraction)."""
    if "accuracy" in scores and "accuracy" in baseline and "embedding_cosine" in scores:
        scores["linear_probe_drop"] = baseline["accuracy"] - scores["accuracy"]
    return scores


def score_model(model, tok, task: str, data, max_length: int, reference: np.ndarray | None = None,
                probe: bool = False) -> tuple[dict, np.ndarray | None]:
    """(report figures, test-split outputs) of a torch task model of this process; ``reference``: the teacher's
    outputs on the test split; ``probe``: add a feature extractor's linear-probe accuracy."""
    from edgekit.runtimes.torch_backend import ModuleSession

    if not current().is_main:  # under torchrun only rank 0 evaluates
        return {}, None
    session = ModuleSession(model, task)
    out = predict(session, tok, data, "test", max_length=max_length, progress=False)
    if task == "feature-extraction" and not probe and reference is None:
        return {}, out
    res = evaluate(session, tok, data, max_length=max_length, labels=label_names(model, task), progress=False,
                   reference_outputs=reference, probe=probe, outputs=out)
    return report_fields(res), out


def score_student(run, probe: bool = False) -> dict:
    """The student's figures now, against the teacher's outputs."""
    return score_model(run.student, run.tok, run.task, run.data, run.recipe.max_length, run.teacher_out, probe)[0]


def score_runtimes(art, tok, data, teacher_out: np.ndarray | None, baseline: dict | None = None) -> dict:
    """{runtime: {figures..., "precision"}} of the exported artifact on each runtime it holds (the stock ones and
    native), as ``edgekit eval --reference`` computes them: classifiers ``accuracy`` (token classification: token
    accuracy, and ``entity_f1`` for IOB tags); feature extractors the cosine to the teacher's embeddings, the
    top-10 neighbour overlap with the teacher's, the linear-probe ``accuracy`` on that runtime's own embeddings
    and, given the teacher's ``baseline``, the probe's drop."""
    from edgekit.runtimes import load

    task = art.manifest.task
    classifier = task in CLASSIFIERS
    scores = {}
    for rt in STOCK_RUNTIMES + tuple(r for r in EXTRA_RUNTIMES if r in art.manifest.formats):
        s = load(art, rt)
        if rt in EXTRA_RUNTIMES and getattr(data, "text_pair_column", None) and not getattr(s, "token_types", False):
            continue  # a session that drops segment ids does not score sentence pairs; the stock runtimes do
        res = evaluate(s, tok, data, labels=art.manifest.labels, progress=False,
                       reference_outputs=None if classifier else teacher_out, probe=not classifier)
        figures = {k: v for k, v in report_fields(res).items() if k != "agreement_with_teacher"}
        scores[rt] = {**probe_drop(baseline or {}, figures), "precision": s.precision}
    return scores
