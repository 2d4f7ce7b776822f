#!/usr/bin/env python
"""How a compressed feature-extraction artifact's embeddings match the teacher's, split by split.

Prints the mean cosine to the teacher (``minilm-l6`` in torch, fp32) of the artifact's embeddings on the train,
validation and test texts of bbc-news (ONNX Runtime int8 by default). A train cosine well above the test one
means the student learned the training text rather than the teacher's function. Then it fits a linear map
(ridge, on the train embeddings, L2-normalised, with a bias) from the student's embedding to the teacher's and
reports the validation and test cosine through it: what a learned projection head after the pooled output could
recover at most.

    python bench/fe_generalisation.py out/fe_tail [--runtime onnxruntime]
"""
from __future__ import annotations

import argparse

import numpy as np

from edgekit.api import as_artifact
from edgekit.data import load_dataset
from edgekit.evaluate import mean_cosine, run_batched
from edgekit.runtimes import load, load_tokenizer


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact")
    ap.add_argument("--runtime", default="onnxruntime")
    ap.add_argument("--teacher", default="minilm-l6")
    ap.add_argument("--threads", type=int, default=None)
    a = ap.parse_args()
    art = as_artifact(a.artifact)
    tok = load_tokenizer(art)
    student = load(art, a.runtime, a.threads)
    teacher = load(as_artifact(a.teacher, ["torch"]), "torch", a.threads)
    emb = {}
    for split in ("train", "validation", "test"):
        texts = load_dataset("bbc-news", split).texts
        emb[split] = (run_batched(student, tok, texts, progress=False), run_batched(teacher, tok, texts, progress=False))
        print(f"{split:10s} mean cosine to the teacher {mean_cosine(*emb[split]):.4f} ({len(texts)} texts)")
    s_tr, t_tr = emb["train"]
    x = np.hstack([unit(s_tr), np.ones((len(s_tr), 1))])
    for lam in (1e-3, 1e-2, 1e-1, 1.0):
        w = np.linalg.solve(x.T @ x + lam * np.eye(x.shape[1]), x.T @ unit(t_tr))
        got = {split: mean_cosine(np.hstack([unit(s), np.ones((len(s), 1))]) @ w, t)
               for split, (s, t) in emb.items() if split != "train"}
        print(f"linear map, ridge {lam:g}: validation {got['validation']:.4f}, test {got['test']:.4f}")


if __name__ == "__main__":
    main()
