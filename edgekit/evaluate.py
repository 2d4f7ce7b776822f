"""Quality of a Session on a labelled dataset: classifiers by accuracy, feature extractors by a
linear probe (the ``eval`` JSON).

The linear probe embeds the TRAIN, VALIDATION and evaluated split with the SAME session (so an int8
runtime is judged on its own embeddings), standardises the features with train statistics, fits an
L2 logistic regression for each C in :data:`PROBE_C`, keeps the C with the best validation accuracy
(ties: the smallest C) and scores the evaluated split. Deterministic: fixed seed, lbfgs solver.
Nothing is cached on disk.

>>> from edgekit.runtimes import load, load_tokenizer
>>> res = evaluate(load("out/bbc", "openvino"), load_tokenizer("out/bbc"))     # doctest: +SKIP
>>> res["metric"], round(res["value"], 3), res["n"]                           # doctest: +SKIP
('accuracy', 0.974, 426)
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from edgekit.data import load_dataset, load_token_dataset, tokenize
from edgekit.errors import InputError

PROBE_C = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)  #: on standardised features; picked on validation
TASKS = ("text-classification", "feature-extraction", "token-classification")


def run_batched(session, tokenizer, texts: Sequence[str], batch: int = 32, max_length: int = 128, desc: str = "",
                progress: bool = True, pairs: Sequence[str] | None = None) -> np.ndarray:
    """Run ``session`` over ``texts`` (with ``pairs``: text pairs) in batches (each batch padded to its
    longest text, masked).

    Returns the stacked float32 outputs, shape [len(texts), ...].
    """
    from tqdm.auto import tqdm

    if batch < 1:
        raise InputError(f"batch must be >= 1; got {batch}")
    texts = list(texts)
    pairs = None if pairs is None else list(pairs)
    outs = []
    for i in tqdm(range(0, len(texts), batch), desc=desc or session.runtime, disable=not progress, unit="batch",
                  leave=False):
        feeds = tokenize(tokenizer, texts[i : i + batch], max_length=max_length, pad_to_max=False,
                         pairs=None if pairs is None else pairs[i : i + batch])
        out = np.asarray(session.run(feeds), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(feeds["input_ids"]):
            raise InputError(f"{session.runtime} returned shape {out.shape} for a batch of "
                             f"{len(feeds['input_ids'])}; expected [batch, features]")
        outs.append(out)
    if not outs:
        raise InputError("nothing to evaluate: the split is empty")
    return np.concatenate(outs, axis=0)


def linear_probe(train_x, train_y, val_x, val_y, test_x, test_y, seed: int = 0,
                 cs: Sequence[float] = PROBE_C) -> tuple[float, float]:
    """(test accuracy, chosen C) of a standardised L2 logistic regression, C chosen on validation.

    >>> linear_probe(x_tr, y_tr, x_va, y_va, x_te, y_te)      # doctest: +SKIP
    (0.962, 0.1)
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train_x)
    tr, va, te = (scaler.transform(np.asarray(x, np.float64)) for x in (train_x, val_x, test_x))
    best = None
    for c in cs:
        clf = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(tr, train_y)
        acc = clf.score(va, val_y)
        if best is None or acc > best[0]:  # strict: ties keep the smaller C (stronger regularisation)
            best = (acc, c, clf)
    _, c, clf = best
    return float(clf.score(te, test_y)), float(c)


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of cos(a_i, b_i)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise InputError(f"cannot compare outputs of shapes {a.shape} and {b.shape}")
    a = a / np.linalg.norm(a, axis=1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=1, keepdims=True).clip(1e-12)
    return float(np.mean(np.sum(a * b, axis=1)))


#: how many nearest neighbours :func:`neighbour_overlap` compares (the ``_at_10`` in its JSON name)
NEIGHBOURS = 10


def neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int = NEIGHBOURS) -> float:
    """Mean over rows i of |N_a(i) & N_b(i)| / k, where N_x(i) are the ``k`` rows of ``x`` (other than i) with the
    highest cosine to row i: whether a search over these texts returns the same top-``k`` with embeddings ``a``
    as with ``b`` (1 = always the same set). ``k`` is capped at rows - 1.

    >>> x = np.eye(4) + 0.1
    >>> neighbour_overlap(x, x, k=2)
    1.0
    """
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape:
        raise InputError(f"cannot compare outputs of shapes {a.shape} and {b.shape}")
    k = min(k, len(a) - 1)
    if k < 1:
        raise InputError("neighbour overlap needs at least two texts")

    def top(x: np.ndarray) -> np.ndarray:
        x = x / np.linalg.norm(x, axis=1, keepdims=True).clip(1e-12)
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        return np.argpartition(-sim, k - 1, axis=1)[:, :k]

    na, nb = top(a), top(b)
    return float(np.mean([len(set(p) & set(q)) / k for p, q in zip(na, nb)]))


def neighbour_fields(out: np.ndarray, ref: np.ndarray) -> dict:
    """``{"neighbour_overlap_at_10": ...}`` of a feature extractor's outputs against the reference's."""
    return {f"neighbour_overlap_at_{NEIGHBOURS}": neighbour_overlap(out, ref)}


def reference_probe_fields(reference_session, tokenizer, data, ref_out: np.ndarray, labels, value: float,
                           batch: int, max_length: int, seed: int, progress: bool) -> dict:
    """The reference's own linear-probe accuracy (its embeddings of train and validation, the same probe) and
    the drop from it to ``value`` (reference minus evaluated model, in accuracy, so 0.01 = 1 point)."""
    train, val = load_dataset(data, "train"), load_dataset(data, "validation")
    name = f"reference {reference_session.runtime}"
    tr = _run_split(reference_session, tokenizer, train, batch, max_length, f"{name} train", progress)
    va = _run_split(reference_session, tokenizer, val, batch, max_length, f"{name} validation", progress)
    acc, _ = linear_probe(tr, train.labels, va, val.labels, ref_out, np.asarray(labels), seed=seed)
    return {"reference_linear_probe_accuracy": acc, "linear_probe_drop": acc - value}


def _class_map(model_labels: Sequence[str] | None, data_labels: Sequence[str]) -> np.ndarray:
    """Index map model class i -> dataset label index.

    Identity when the model has no label names or only Hugging Face's placeholders (``LABEL_0``...),
    otherwise by name, so a model trained with another label order is still scored correctly.
    """
    generic = [f"LABEL_{i}" for i in range(len(data_labels))]
    if model_labels is None or list(model_labels) == generic:
        return np.arange(len(data_labels))
    if sorted(model_labels) != sorted(data_labels):
        raise InputError(f"the model's labels ({', '.join(model_labels)}) are not the dataset's "
                         f"({', '.join(data_labels)}); evaluate it on the data it was trained for")
    return np.array([list(data_labels).index(name) for name in model_labels])


def _run_split(session, tokenizer, ds, batch: int, max_length: int, desc: str, progress: bool) -> np.ndarray:
    return run_batched(session, tokenizer, ds.texts, batch, max_length, desc, progress, pairs=ds.pairs)


def predict(session, tokenizer, data="bbc-news", split: str = "test", batch: int = 32, max_length: int = 128,
            progress: bool = True) -> np.ndarray:
    """The session's outputs on ``data``/``split``: what :func:`evaluate` scores, e.g. to keep a teacher's outputs
    as the reference of later evaluations."""
    if getattr(session, "task", None) == "token-classification":  # per-word logits [scored words, tags]
        from edgekit.tasks import word_outputs

        ds = load_token_dataset(data, split)
        return word_outputs(session, tokenizer, ds.tokens, batch, max_length, f"{session.runtime} {split}", progress)[0]
    ds = load_dataset(data, split)
    return _run_split(session, tokenizer, ds, batch, max_length, f"{session.runtime} {split}", progress)


def evaluate(session, tokenizer, data="bbc-news", split: str = "test", batch: int = 32,
             max_length: int = 128, reference_session=None, labels: Sequence[str] | None = None,
             seed: int = 0, progress: bool = True, *, reference_outputs: np.ndarray | None = None,
             probe: bool = True, outputs: np.ndarray | None = None) -> dict:
    """Evaluate ``session`` on ``data``/``split``; returns CONTRACT ``eval`` JSON plus extras. ``data``: a
    built-in name, a path or a :class:`edgekit.data.DataSpec` (sentence pairs are fed as pairs).

    - text-classification: ``metric`` "accuracy" (argmax of the logits vs the dataset labels; the
      model's class i is ``labels[i]`` if given, e.g. ``artifact.manifest.labels``, else dataset
      label i). With a reference: ``agreement`` = fraction of equal predictions.
    - feature-extraction: ``metric`` "linear_probe_accuracy" (see module doc; extra ``probe_c``); with
      ``probe=False`` the metric is "embedding_cosine" to the reference instead (no probe is fitted).
      With a reference: ``embedding_cosine`` = mean cosine to the reference's embeddings of the same split and
      ``neighbour_overlap_at_10`` (:func:`neighbour_overlap`); with a reference session and the probe also
      ``reference_linear_probe_accuracy`` and ``linear_probe_drop`` (reference minus this model).

    The reference is ``reference_session`` (run here) or ``reference_outputs`` (its outputs on the split,
    computed before, e.g. with :func:`predict`); ``outputs``: this session's own outputs when already computed.
    edgekit compress scores its models and the exported artifact's runtimes with this function too.

    Returns ``{"task", "data", "split", "metric", "value", "n", "runtime", "precision", "max_length", ...}``.
    """
    task = getattr(session, "task", None)
    if task not in TASKS:
        raise InputError(f"cannot evaluate task {task!r}; allowed: {', '.join(TASKS)}")
    if task == "token-classification":  # per-word scores: edgekit.tasks
        from edgekit.tasks import evaluate_tokens

        return evaluate_tokens(session, tokenizer, data, split, batch, max_length, labels, reference_session,
                               reference_outputs, outputs, progress, class_map=_class_map)
    ds = load_dataset(data, split)
    out = outputs if outputs is not None else _run_split(session, tokenizer, ds, batch, max_length,
                                                         f"{session.runtime} {split}", progress)
    ref = reference_outputs
    if ref is None and reference_session is not None:
        ref = _run_split(reference_session, tokenizer, ds, batch, max_length,
                         f"reference {reference_session.runtime}", progress)
    # CONTRACT fields first, in CONTRACT order; metric and value are filled in below
    res = {"task": task, "data": str(data), "metric": None, "value": None, "n": len(ds), "runtime": session.runtime,
           "split": split, "precision": getattr(session, "precision", None), "max_length": max_length}
    y = np.asarray(ds.labels)
    if task == "text-classification":
        if out.shape[1] != len(ds.label_names):
            raise InputError(f"the model has {out.shape[1]} classes but {data} has {len(ds.label_names)} "
                             f"({', '.join(ds.label_names)})")
        cmap = _class_map(labels, ds.label_names)
        pred = cmap[out.argmax(axis=1)]
        res.update(metric="accuracy", value=float(np.mean(pred == y)))
    elif probe:
        if split in ("train", "validation"):
            raise InputError(f"a linear probe is fitted on train and tuned on validation; evaluate it on "
                             f"another split (test), not {split!r}")
        train, val = load_dataset(data, "train"), load_dataset(data, "validation")
        tr = _run_split(session, tokenizer, train, batch, max_length, f"{session.runtime} train", progress)
        va = _run_split(session, tokenizer, val, batch, max_length, f"{session.runtime} validation", progress)
        acc, c = linear_probe(tr, train.labels, va, val.labels, out, y, seed=seed)
        res.update(metric="linear_probe_accuracy", value=acc, probe_c=c, n_train=len(train))
    elif ref is None:
        raise InputError("feature extraction without a linear probe is scored by its cosine to a reference; "
                         "give one")
    else:
        res.update(metric="embedding_cosine", value=mean_cosine(out, ref))
    if ref is not None:
        if task == "feature-extraction":
            res["embedding_cosine"] = mean_cosine(out, ref)
            res.update(neighbour_fields(out, ref))
            if res["metric"] == "linear_probe_accuracy" and reference_session is not None:
                res.update(reference_probe_fields(reference_session, tokenizer, data, ref, ds.labels, res["value"],
                                                  batch, max_length, seed, progress))
        else:
            res["agreement"] = float(np.mean(out.argmax(1) == ref.argmax(1)))
        if reference_session is not None and reference_outputs is None:
            res["reference_runtime"] = reference_session.runtime
    return res


# ------------------------------------------------------------------------------------------ image classifiers


def run_images(session, x: np.ndarray, batch: int = 32, desc: str = "", progress: bool = True) -> np.ndarray:
    """Run an image session over preprocessed images ``x`` (float32 NCHW) in batches; float32 [N, classes]."""
    from tqdm.auto import tqdm

    if len(x) == 0:
        raise InputError("nothing to evaluate: no images")
    outs = []
    for i in tqdm(range(0, len(x), batch), desc=desc or session.runtime, disable=not progress, unit="batch",
                  leave=False):
        out = np.asarray(session.run({"pixel_values": np.ascontiguousarray(x[i:i + batch])}), np.float32)
        if out.ndim != 2 or out.shape[0] != len(x[i:i + batch]):
            raise InputError(f"{session.runtime} returned shape {out.shape} for {len(x[i:i + batch])} images; "
                             "expected [batch, classes]")
        outs.append(out)
    return np.concatenate(outs)


def image_class_map(num_classes: int, model_labels: Sequence[str] | None, folder_labels: Sequence[str]) -> np.ndarray:
    """Index map dataset label i -> model class: by name when the model has label names, else by number when the
    folders are named by class index (``0``, ``1``, ... or ``n01440764``-style is not known here), else by order
    when the counts agree."""
    if model_labels:
        missing = [n for n in folder_labels if n not in model_labels]
        if missing:
            raise InputError(f"image folders {', '.join(missing[:3])} are not among the model's labels "
                             f"({', '.join(list(model_labels)[:5])}, ...)")
        return np.array([list(model_labels).index(n) for n in folder_labels])
    if all(n.isdigit() for n in folder_labels):
        idx = np.array([int(n) for n in folder_labels])
        if idx.max() >= num_classes:
            raise InputError(f"image folder {int(idx.max())} names no class of a model with {num_classes} outputs")
        return idx
    if len(folder_labels) == num_classes:
        return np.arange(num_classes)
    raise InputError(f"the model has {num_classes} unnamed classes and the data {len(folder_labels)} class folders "
                     f"({', '.join(folder_labels[:3])}, ...); name the folders by class index (0, 1, ...)")


def evaluate_images(session, x: np.ndarray, *, data: str, labels: Sequence[int] | None = None,
                    label_names: Sequence[str] | None = None, model_labels: Sequence[str] | None = None,
                    reference_outputs: np.ndarray | None = None, outputs: np.ndarray | None = None,
                    batch: int = 32, progress: bool = True) -> dict:
    """Score an image classifier on preprocessed images ``x``; returns the CONTRACT ``eval`` JSON.

    With ``labels`` (dataset label ids, named ``label_names``): ``metric`` "accuracy". With
    ``reference_outputs`` (the reference model's logits on the same images): ``agreement`` = fraction of equal
    top-1 classes, and it is the metric when there are no labels.

    >>> evaluate_images(s, x, data="photo-crops", reference_outputs=ref)["agreement"]   # doctest: +SKIP
    0.97
    """
    out = outputs if outputs is not None else run_images(session, x, batch, f"{session.runtime} images", progress)
    res = {"task": "image-classification", "data": data, "metric": None, "value": None, "n": int(len(out)),
           "runtime": session.runtime, "precision": getattr(session, "precision", None)}
    if reference_outputs is not None:
        if reference_outputs.shape != out.shape:
            raise InputError(f"cannot compare outputs of shapes {out.shape} and {reference_outputs.shape}")
        res["agreement"] = float(np.mean(out.argmax(1) == reference_outputs.argmax(1)))
    if labels is not None:
        cmap = image_class_map(out.shape[1], model_labels, list(label_names or []))
        res.update(metric="accuracy", value=float(np.mean(out.argmax(1) == cmap[np.asarray(labels)])))
    elif "agreement" in res:
        res.update(metric="agreement", value=res["agreement"])
    else:
        raise InputError("unlabelled images are scored by top-1 agreement with a reference model; give one "
                         "(--reference MODEL) or labelled data (--data DIR with one sub-folder per class)")
    return res


def evaluate_session(session, x: np.ndarray, y: np.ndarray, batch: int = 100) -> dict:
    """Top-1 accuracy of ``session`` on ``pixel_values`` ``x`` with labels ``y``."""
    hits = 0
    for i in range(0, len(y), batch):
        logits = session.run({"pixel_values": np.ascontiguousarray(x[i:i + batch])})
        hits += int((np.asarray(logits).argmax(1) == y[i:i + batch]).sum())
    return {"task": "image-classification", "metric": "accuracy", "value": round(hits / max(len(y), 1), 4),
            "n": int(len(y)), "runtime": getattr(session, "runtime", "torch")}
