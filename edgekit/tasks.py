"""Token classification, the per-word part: what a Session outputs for each word and how those outputs are scored.

A token classifier's Session returns logits ``[batch, sequence, tags]`` for every sub-token. A word is read at
its FIRST sub-token (the position :func:`edgekit.data.tokenize_words` gives the word's tag; later sub-tokens,
special tokens and padding are never read, on any runtime). Words cut off by ``max_length`` (or that the
tokenizer turns into nothing) are left out of the score; ``words`` in the result says how many were scored.

Metric: entity-level F1 (``seqeval``, the CoNLL definition: an entity counts when its type and both ends
match) when every tag is ``O`` or ``B-``/``I-``/``E-``/``S-`` prefixed (IOB1, IOB2, IOBES), else token
accuracy over the scored words. Token accuracy is reported in either case.

>>> res = evaluate_tokens(session, tok, "ner.jsonl")                    # doctest: +SKIP
>>> res["metric"], res["value"], res["token_accuracy"]                  # doctest: +SKIP
('entity_f1', 0.871, 0.962)
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from edgekit.data import load_token_dataset, tokenize_words
from edgekit.errors import InputError

TASK = "token-classification"


def word_outputs(session, tokenizer, sentences: Sequence[Sequence[str]], batch: int = 32, max_length: int = 128,
                 desc: str = "", progress: bool = True) -> tuple[np.ndarray, list[np.ndarray]]:
    """Run ``session`` over pre-split ``sentences`` (each batch padded to its longest row).

    Returns ``(logits, words)``: ``logits`` [scored words, tags] float32, the rows of every sentence's scored
    words in order; ``words[i]`` the indices (into sentence ``i``) of its scored words.
    """
    from tqdm.auto import tqdm

    if batch < 1:
        raise InputError(f"batch must be >= 1; got {batch}")
    outs, words = [], []
    for i in tqdm(range(0, len(sentences), batch), desc=desc or session.runtime, disable=not progress, unit="batch",
                  leave=False):
        chunk = sentences[i : i + batch]
        # tag each word with its own index: the returned labels then say which word sits at each first sub-token
        feeds, where = tokenize_words(tokenizer, chunk, [list(range(len(s))) for s in chunk], max_length=max_length,
                                      pad_to_max=False)
        out = np.asarray(session.run(feeds), dtype=np.float32)
        if out.ndim != 3 or out.shape[:2] != feeds["input_ids"].shape:
            raise InputError(f"{session.runtime} returned shape {out.shape} for input {feeds['input_ids'].shape}; "
                             f"a token classifier returns [batch, sequence, tags]")
        keep = where >= 0
        outs.append(out[keep])  # row-major: sentence by sentence, words in order
        words += [row[k] for row, k in zip(where, keep)]
    if not outs:
        raise InputError("nothing to evaluate: the split is empty")
    return np.concatenate(outs, axis=0), words


def scored_words(tokenizer, sentences: Sequence[Sequence[str]], max_length: int = 128,
                 batch: int = 256) -> list[np.ndarray]:
    """Which words of each sentence :func:`word_outputs` scores (those with a first sub-token inside
    ``max_length``), without running a model."""
    words = []
    for i in range(0, len(sentences), batch):
        chunk = sentences[i : i + batch]
        _, where = tokenize_words(tokenizer, chunk, [list(range(len(s))) for s in chunk], max_length=max_length,
                                  pad_to_max=False)
        words += [row[row >= 0] for row in where]
    return words


def token_scores(pred: list[list[str]], gold: list[list[str]], iob: bool) -> dict:
    """``{"token_accuracy", "words"}`` plus, for IOB-style tags, ``entity_f1``, ``entity_precision``,
    ``entity_recall`` and ``entities`` (gold entity count), from per-sentence tag names.

    >>> token_scores([["B-PER", "O"]], [["B-PER", "I-PER"]], iob=True)["token_accuracy"]
    0.5
    """
    flat_p = [t for s in pred for t in s]
    flat_g = [t for s in gold for t in s]
    if not flat_g:
        raise InputError("no word could be scored (every sentence was cut away or tokenised to nothing)")
    out = {"token_accuracy": float(np.mean([p == g for p, g in zip(flat_p, flat_g)])), "words": len(flat_g)}
    if iob:
        from seqeval.metrics import f1_score, precision_score, recall_score
        from seqeval.metrics.sequence_labeling import get_entities

        out.update(entity_f1=float(f1_score(gold, pred, zero_division=0)),
                   entity_precision=float(precision_score(gold, pred, zero_division=0)),
                   entity_recall=float(recall_score(gold, pred, zero_division=0)),
                   entities=len(get_entities(gold)))
    return out


def evaluate_tokens(session, tokenizer, data, split: str = "test", batch: int = 32, max_length: int = 128,
                    labels: Sequence[str] | None = None, reference_session=None,
                    reference_outputs: np.ndarray | None = None, outputs: np.ndarray | None = None,
                    progress: bool = True, class_map: Callable | None = None) -> dict:
    """The ``eval`` JSON of a token classifier on ``data``/``split`` (see the module doc). ``labels``: the model's
    tag names in output order (``artifact.manifest.labels``); ``class_map(labels, data_names)`` maps model
    outputs to the data's tag ids (:func:`edgekit.evaluate.evaluate` passes its own). With a reference (its
    :func:`word_outputs` logits, or a session run here), ``agreement`` = fraction of scored words with the same
    predicted tag."""
    ds = load_token_dataset(data, split)
    out, words = (outputs, None) if outputs is not None else word_outputs(
        session, tokenizer, ds.tokens, batch, max_length, f"{session.runtime} {split}", progress)
    if words is None:  # outputs computed before: the same tokenizer and max_length keep the same words
        words = scored_words(tokenizer, ds.tokens, max_length)
        if out.ndim != 2 or len(out) != sum(len(w) for w in words):
            raise InputError(f"outputs of shape {out.shape} do not match the {sum(len(w) for w in words)} scored "
                             f"words of {data} {split}")
    if out.shape[1] != len(ds.label_names):
        raise InputError(f"the model has {out.shape[1]} tags but {data} has {len(ds.label_names)} "
                         f"({', '.join(ds.label_names)})")
    cmap = class_map(labels, ds.label_names) if class_map is not None else np.arange(len(ds.label_names))
    pred_ids = cmap[out.argmax(axis=1)]
    names = ds.label_names
    pred, gold, at = [], [], 0
    for i, w in enumerate(words):
        pred.append([names[p] for p in pred_ids[at : at + len(w)]])
        gold.append([names[ds.tags[i][j]] for j in w])
        at += len(w)
    scores = token_scores(pred, gold, ds.is_iob)
    metric = "entity_f1" if ds.is_iob else "token_accuracy"
    res = {"task": TASK, "data": str(data), "metric": metric, "value": scores[metric], "n": len(ds),
           "runtime": session.runtime, "split": split, "precision": getattr(session, "precision", None),
           "max_length": max_length, **scores, "words_total": sum(len(s) for s in ds.tokens)}
    ref = reference_outputs
    if ref is None and reference_session is not None:
        ref = word_outputs(reference_session, tokenizer, ds.tokens, batch, max_length,
                           f"reference {reference_session.runtime}", progress)[0]
        res["reference_runtime"] = reference_session.runtime
    if ref is not None:
        if ref.shape != out.shape:
            raise InputError(f"cannot compare per-word outputs of shapes {out.shape} and {ref.shape}")
        res["agreement"] = float(np.mean(out.argmax(1) == ref.argmax(1)))
    return res

