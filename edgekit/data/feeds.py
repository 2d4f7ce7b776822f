"""Texts to int64 numpy feeds for every runtime: single texts, text pairs, overflow windows, and words
with per-word tags (token classification)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgekit.errors import InputError


def tokenize(tokenizer, texts, max_length: int = 128, pad_to_max: bool = True,
             pairs: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Tokenise to int64 numpy feeds ``input_ids`` and ``attention_mask``; with ``pairs`` (sentence-pair
    tasks) each row is ``texts[i]`` + ``pairs[i]``, the longer one truncated first, and the feeds also hold
    ``token_type_ids`` when the tokenizer makes them (BERT does, RoBERTa does not).

    BBC articles are far longer than 128 tokens, so with truncation every position holds a real token.

    >>> feeds = tokenize(tok, ["a cat", "a dog"], max_length=16)  # doctest: +SKIP
    >>> feeds = tokenize(tok, ds.texts, pairs=ds.pairs, max_length=128)  # doctest: +SKIP
    """
    args = (list(texts),) if pairs is None else (list(texts), list(pairs))
    if pairs is not None and len(args[0]) != len(args[1]):
        raise InputError(f"{len(args[0])} texts but {len(args[1])} pairs; each text needs its pair")
    enc = tokenizer(
        *args,
        max_length=max_length,
        truncation=True,
        padding="max_length" if pad_to_max else "longest",
        return_tensors="np",
    )
    feeds = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    if pairs is not None and "token_type_ids" in enc:
        feeds["token_type_ids"] = enc["token_type_ids"].astype(np.int64)
    return feeds


def tokenize_windows(tokenizer, texts, max_length: int = 128, windows: int = 1) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Up to ``windows`` consecutive ``max_length``-token windows of each text (each with its own [CLS] and
    [SEP], no overlap), as extra training rows. Returns (feeds, source) where ``source[r]`` is the text row r
    came from. Rows are window-major: the first ``len(texts)`` rows are the texts' first windows in order
    (the same rows :func:`tokenize` gives), then the second windows of the texts that have one, and so on.
    """
    if windows == 1:
        return tokenize(tokenizer, texts, max_length), np.arange(len(texts))
    enc = tokenizer(list(texts), max_length=max_length, truncation=True, padding="max_length",
                    return_overflowing_tokens=True, stride=0, return_tensors="np")
    source = np.asarray(enc["overflow_to_sample_mapping"])
    nth = np.zeros(len(source), dtype=np.int64)  # which window of its text each row is
    for r in range(1, len(source)):
        nth[r] = nth[r - 1] + 1 if source[r] == source[r - 1] else 0
    keep = np.flatnonzero(nth < windows)
    keep = keep[np.lexsort((source[keep], nth[keep]))]  # window-major, then text order
    # a last window can be a handful of tokens; keep it (attention masks make it a short text)
    feeds = {"input_ids": enc["input_ids"][keep].astype(np.int64),
             "attention_mask": enc["attention_mask"][keep].astype(np.int64)}
    return feeds, source[keep]


def tokenize_words(tokenizer, words: Sequence[Sequence[str]], tags: Sequence[Sequence[int]] | None = None,
                   max_length: int = 128, pad_to_max: bool = True) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Tokenise pre-split sentences (token classification). Returns ``(feeds, labels)``: ``labels[r, j]``
    is the tag id of the word whose FIRST sub-token sits at position ``j`` of row ``r`` (0 there when
    ``tags`` is None), and -100 at special tokens, later sub-tokens and padding: the positions a loss and a
    metric skip. Words past ``max_length`` are truncated away (their tags with them).

    Needs a fast tokenizer (it maps sub-tokens to words); a RoBERTa tokenizer must be loaded with
    ``add_prefix_space=True``.

    >>> feeds, labels = tokenize_words(tok, ds.tokens, ds.tags, max_length=64)  # doctest: +SKIP
    >>> keep = labels >= 0   # one position per (kept) word
    """
    if not getattr(tokenizer, "is_fast", False):
        raise InputError(f"token classification needs a fast tokenizer (one that maps sub-tokens to words); "
                         f"got {type(tokenizer).__name__}")
    if tags is not None and len(tags) != len(words):
        raise InputError(f"{len(words)} sentences but {len(tags)} tag lists")
    try:
        enc = tokenizer([list(w) for w in words], is_split_into_words=True, max_length=max_length, truncation=True,
                        padding="max_length" if pad_to_max else "longest", return_tensors="np")
    except Exception as exc:
        if "add_prefix_space" in str(exc):
            raise InputError(f"{type(tokenizer).__name__} must be loaded with add_prefix_space=True to take "
                             f"pre-split words") from None
        raise
    labels = np.full(enc["input_ids"].shape, -100, dtype=np.int64)
    for r in range(len(words)):
        previous = None
        for j, w in enumerate(enc.word_ids(r)):
            if w is not None and w != previous:
                labels[r, j] = tags[r][w] if tags is not None else 0
            previous = w
    feeds = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
    return feeds, labels
