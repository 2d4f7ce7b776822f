"""Accuracy of a Session on bbc-news: classifiers by accuracy, feature extractors by linear probe.

The linear probe fits logistic regression on the TRAIN split's embeddings from the same session
(so an int8 runtime is judged on its own embeddings), picks C on the validation split, and scores
the test split.
"""
from __future__ import annotations

import numpy as np

from edgekit.data import load_dataset, tokenize

PROBE_C = (0.3, 1.0, 3.0, 10.0, 30.0)


def run_batched(session, tokenizer, texts, batch: int = 32, max_length: int = 128, desc: str = "",
                progress: bool = True) -> np.ndarray:
    """Run ``session`` over ``texts`` in batches (padding to the longest in each batch)."""
    from tqdm.auto import tqdm

    outs = []
    for i in tqdm(range(0, len(texts), batch), desc=desc or session.runtime, disable=not progress, unit="batch",
                  leave=False):
        feeds = tokenize(tokenizer, texts[i : i + batch], max_length=max_length, pad_to_max=False)
        outs.append(np.asarray(session.run(feeds), dtype=np.float32))
    return np.concatenate(outs, axis=0)


def linear_probe(train_x, train_y, val_x, val_y, test_x, test_y, seed: int = 0) -> tuple[float, float]:
    """(test accuracy, chosen C) of an L2 logistic regression; C chosen on validation."""
    from sklearn.linear_model import LogisticRegression

    best = None
    for c in PROBE_C:
        clf = LogisticRegression(C=c, max_iter=3000, random_state=seed).fit(train_x, train_y)
        acc = clf.score(val_x, val_y)
        if best is None or acc > best[0]:
            best = (acc, c, clf)
    _, c, clf = best
    return float(clf.score(test_x, test_y)), c


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return float(np.mean(np.sum(a * b, axis=1)))


def evaluate(session, tokenizer, data: str = "bbc-news", split: str = "test", batch: int = 32,
             max_length: int = 128, reference_session=None, progress: bool = True) -> dict:
    """``{"task", "data", "metric", "value", "n", "runtime", ...}`` (CONTRACT.md ``eval`` JSON).

    >>> evaluate(load(art, "openvino"), load_tokenizer(art))["value"]     # doctest: +SKIP
    0.974
    """
    test = load_dataset(data, split)
    out = run_batched(session, tokenizer, test.texts, batch, max_length, f"{session.runtime} {split}", progress)
    res = {"task": session.task, "data": data, "n": len(test), "runtime": session.runtime,
           "precision": session.precision}
    if session.task == "text-classification":
        res.update(metric="accuracy", value=float(np.mean(out.argmax(axis=1) == np.asarray(test.labels))))
    else:
        train, val = load_dataset(data, "train"), load_dataset(data, "validation")
        tr = run_batched(session, tokenizer, train.texts, batch, max_length, f"{session.runtime} train", progress)
        va = run_batched(session, tokenizer, val.texts, batch, max_length, f"{session.runtime} validation", progress)
        acc, c = linear_probe(tr, train.labels, va, val.labels, out, test.labels)
        res.update(metric="linear_probe_accuracy", value=acc, probe_c=c)
    if reference_session is not None:
        ref = run_batched(reference_session, tokenizer, test.texts, batch, max_length, "reference", progress)
        if reference_session.task == session.task == "feature-extraction":
            res["embedding_cosine"] = mean_cosine(out, ref)
        else:
            res["agreement"] = float(np.mean(out.argmax(1) == ref.argmax(1)))
    return res
