"""Sensitivity pass: which encoder Linears stay fp32 so that int8 loses at most ``accuracy_budget`` points.

Run after calibration (PTQ), before QAT, on the VALIDATION split (never test), capped at
``sensitivity_samples`` examples. The metric is accuracy for classifiers and the mean cosine to the
teacher's embeddings for feature extraction, both in points (x 100).

1. Measure the fp32 model and the all-int8 model. Within budget: done, nothing measured per layer.
2. Per quantized Linear, measure the all-int8 model with only that Linear fp32: its ``cost`` is the
   metric that restores. The alternative, each Linear quantized alone in an fp32 model, takes the
   same number of evaluations (one per Linear) but measures a layer's error on clean inputs; the
   greedy step below starts from the all-int8 model, where every layer's input already carries the
   error of the quantized layers before it, so leave-one-out measures what the step gains.
3. Keep Linears fp32 greedily, costliest first, re-measuring the model after each, until the loss is
   within budget (at worst every Linear is fp32 and the loss is 0). Accuracy on a few hundred
   examples moves in steps, so ties are broken by how much keeping the layer fp32 reduces the
   divergence from the fp32 outputs (KL of class probabilities, or 1 - cosine of embeddings).

Cost: 2 + (number of quantized Linears) + (number kept) evaluations of ``sensitivity_samples`` examples.
"""
from __future__ import annotations

import time
from typing import Protocol

import numpy as np
import torch

from edgekit.errors import InputError
from edgekit.formats.fake_quant import FakeQuantLinear


class Probe(Protocol):
    """What the pass needs from the model under test (the fake-quant modules' modes decide what runs)."""

    metric_name: str

    def outputs(self) -> np.ndarray: ...

    def metric(self, out: np.ndarray) -> float: ...

    def divergence(self, out: np.ndarray, ref: np.ndarray) -> float: ...


class ValidationProbe:
    """The student on the first ``n`` validation examples (the split is already shuffled), tokenised once."""

    def __init__(self, student, teacher, tok, task: str, data: str, max_length: int, n: int, batch: int = 32):
        from edgekit.data import load_dataset, tokenize

        if task == "token-classification":
            raise InputError("quantize.accuracy_budget is not available for token classification yet; leave it out "
                             "(or list fp32_layers yourself)")
        val = load_dataset(data, "validation")
        texts = list(val.texts[:n])
        pairs = None if val.pairs is None else list(val.pairs[:n])
        self.student, self.task, self.n = student, task, len(texts)
        self.labels = np.asarray(val.labels[:n])
        self.batches = [tokenize(tok, texts[i: i + batch], max_length=max_length, pad_to_max=False,
                                 pairs=None if pairs is None else pairs[i: i + batch])
                        for i in range(0, len(texts), batch)]
        self.metric_name = "accuracy" if task == "text-classification" else "embedding_cosine"
        self.teacher_out = None if task == "text-classification" else self._run(teacher)

    @torch.inference_mode()
    def _run(self, model) -> np.ndarray:
        model.eval()
        return np.concatenate([model(*(torch.from_numpy(f[k]) for k in ("input_ids", "attention_mask", "token_type_ids")
                                       if k in f)).float().numpy() for f in self.batches])

    def outputs(self) -> np.ndarray:
        return self._run(self.student)

    def metric(self, out: np.ndarray) -> float:
        if self.task == "text-classification":
            return 100.0 * float((out.argmax(1) == self.labels).mean())
        return 100.0 * _cosine(out, self.teacher_out)

    def divergence(self, out: np.ndarray, ref: np.ndarray) -> float:
        if self.task == "text-classification":
            lp, lq = _log_softmax(ref), _log_softmax(out)
            return float((np.exp(lp) * (lp - lq)).sum(1).mean())
        return 1.0 - _cosine(out, ref)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    return float((np.sum(a64 * b64, 1) / (np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1) + 1e-12)).mean())


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(1, keepdims=True)
    return x - np.log(np.exp(x).sum(1, keepdims=True))


def sensitivity_pass(fq: dict[str, FakeQuantLinear], probe: Probe, budget: float) -> dict:
    """Choose Linears to keep fp32 (module modes are left as found: every ``fq`` module quantised).

    Returns the record for the stage report: ``{"metric", "samples", "budget", "fp32", "int8", "loss",
    "costs": {name: {"points", "divergence"}}, "keep_fp32": [...], "final", "final_loss",
    "evaluations", "seconds"}``; ``costs`` is empty when the all-int8 model is within budget.

    >>> rec = sensitivity_pass(run.fq, ValidationProbe(...), budget=0.5)   # doctest: +SKIP
    >>> rec["keep_fp32"]                                                   # doctest: +SKIP
    ['layers.5.ffn_out']
    """
    t0 = time.time()
    evals = 0

    def measure(off: set[str]) -> tuple[float, np.ndarray]:
        nonlocal evals
        for n, m in fq.items():
            m.mode = "off" if n in off else "quant"
        out = probe.outputs()
        evals += 1
        return probe.metric(out), out

    try:
        base, ref = measure(set(fq))
        full, full_out = measure(set())
        rec = {"metric": probe.metric_name, "samples": getattr(probe, "n", None), "budget": budget,
               "fp32": round(base, 6), "int8": round(full, 6), "loss": round(base - full, 6), "costs": {},
               "keep_fp32": []}
        final = full
        if base - full > budget:
            full_div = probe.divergence(full_out, ref)
            costs = {}
            for name in fq:
                m, out = measure({name})
                costs[name] = (m - full, full_div - probe.divergence(out, ref))
            rec["costs"] = {n: {"points": round(p, 6), "divergence": float(f"{d:.4g}")} for n, (p, d) in costs.items()}
            order = sorted(costs, key=lambda n: (-costs[n][0], -costs[n][1], n))
            keep: list[str] = []
            for name in order:
                keep.append(name)
                final, _ = measure(set(keep))
                if base - final <= budget:
                    break
            rec["keep_fp32"] = keep
        rec.update(final=round(final, 6), final_loss=round(base - final, 6), evaluations=evals,
                   seconds=round(time.time() - t0, 1))
        return rec
    finally:
        for m in fq.values():
            m.mode = "quant"
