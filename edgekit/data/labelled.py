"""Labelled data: text classification (single texts or pairs) and token classification, split for use.

Splits. Data with its own splits (a saved DatasetDict, split files in a folder, ``train/`` ``test/``
class folders) keeps them; a split it lacks is cut from its train split, stratified by label and seeded,
in the proportions of 70/10/20 (train + test only: 1/8 of train becomes validation). Data without splits
is cut 70/10/20 the same way. Before any cut, exact duplicates (white space collapsed; for pairs, the
pair) are dropped, the first copy kept in the order train, validation, test, so no text of one split
appears in another. Every split is then shuffled with the seed; the same seed gives the same split on
every machine, and for ``bbc-news`` it is the split every earlier edgekit release used.

Labels. Strings or integers. Label ids follow the sorted label values (numbers numerically), or the
order of a ``ClassLabel`` column's names when the data has one; ``label_names[i]`` names id ``i`` and
is the same for every split. A label in validation or test that train lacks, and data with one class
only, are errors.
"""
from __future__ import annotations

import math
import os
import random
from functools import lru_cache
from pathlib import Path

from edgekit.errors import InputError, one_of

from .builtin import bbc_news
from .files import FORMATS, Table, read_source
from .spec import BUILTIN, SPLIT_FRACTIONS, SPLITS, DataSpec, TextDataset, TokenDataset, as_spec


def load_dataset(name: "str | os.PathLike | DataSpec" = "bbc-news", split: str = "test", seed: int = 0) -> TextDataset:
    """One split of a labelled text-classification dataset.

    ``name`` is a built-in name, a path, or a :class:`DataSpec` (a path with column options).

    >>> ds = load_dataset("bbc-news", "test")
    >>> len(ds), ds.label_names[0]
    (426, 'business')
    >>> spec = DataSpec("reviews.csv", text_column="review", label_column="stars")
    >>> train = load_dataset(spec, "train", seed=0)  # doctest: +SKIP
    >>> train.texts[0], train.label_names[train.labels[0]]  # doctest: +SKIP
    ('Arrived broken.', '1')
    """
    return dataset_splits(name, seed)[_check_split(split)]


def dataset_splits(data: "str | os.PathLike | DataSpec" = "bbc-news", seed: int = 0) -> dict[str, TextDataset]:
    """All three splits at once: ``{"train": ..., "validation": ..., "test": ...}`` (read once, cached
    until the files change).

    >>> parts = dataset_splits(DataSpec("data/", label_column="intent"), seed=0)  # doctest: +SKIP
    >>> {s: len(p) for s, p in parts.items()}  # doctest: +SKIP
    {'train': 700, 'validation': 100, 'test': 200}
    """
    spec = as_spec(data)
    return dict(_text_splits(spec, seed, _stamp(spec)))  # a copy: the cached dict stays as read


def load_token_dataset(data: "str | os.PathLike | DataSpec", split: str = "test", seed: int = 0) -> TokenDataset:
    """One split of token-classification data: JSON Lines (or any table format) with a list of words
    (``tokens_column``, default ``tokens``) and a list of tags (``tags_column``, default ``tags``) per
    row; tags are IOB strings (``B-PER``, ``I-PER``, ``O``) or integers.

    >>> ds = load_token_dataset("ner.jsonl", "train")  # doctest: +SKIP
    >>> ds.tokens[0], [ds.label_names[t] for t in ds.tags[0]], ds.is_iob  # doctest: +SKIP
    (('Ada', 'Lovelace', 'wrote'), ['B-PER', 'I-PER', 'O'], True)
    """
    spec = as_spec(data)
    return _token_splits(spec, seed, _stamp(spec))[_check_split(split)]


def calibration_texts(n: int = 128, data: "str | os.PathLike | DataSpec" = "bbc-news", seed: int = 0) -> list[str]:
    """``n`` texts drawn (seeded) from the TRAIN split, for calibration or distillation (never test).

    >>> cal = calibration_texts(64, DataSpec("tickets.csv", text_column="body"), seed=0)  # doctest: +SKIP
    """
    ds = load_dataset(data, "train", seed)
    rng = random.Random(seed + 1)
    idx = list(range(len(ds)))
    rng.shuffle(idx)
    return [ds.texts[i] for i in idx[:n]]


def _draw(n_rows: int, n: int, seed: int) -> list[int]:
    rng = random.Random(seed + 1)
    idx = list(range(n_rows))
    rng.shuffle(idx)
    return idx[:n]


def calibration_feeds(tokenizer, n: int, data: "str | os.PathLike | DataSpec" = "bbc-news", seed: int = 0,
                      max_length: int = 128, task: str = "text-classification") -> dict:
    """:func:`calibration_texts`' rows tokenised as the task feeds them (padded to ``max_length``): single texts,
    text pairs (with ``token_type_ids`` where the tokenizer makes them) or, for ``token-classification``,
    pre-split sentences of the train split.

    >>> cal = calibration_feeds(tok, 64, DataSpec("ner.jsonl"), task="token-classification")  # doctest: +SKIP
    """
    from .feeds import tokenize, tokenize_words

    if task == "token-classification":
        ds = load_token_dataset(data, "train", seed)
        return tokenize_words(tokenizer, [ds.tokens[i] for i in _draw(len(ds), n, seed)], max_length=max_length)[0]
    ds = load_dataset(data, "train", seed)
    idx = _draw(len(ds), n, seed)
    return tokenize(tokenizer, [ds.texts[i] for i in idx], max_length,
                    pairs=None if ds.pairs is None else [ds.pairs[i] for i in idx])


def training_rows(tokenizer, data: "str | os.PathLike | DataSpec", task: str, max_length: int = 128,
                  windows: int = 1, seed: int = 0) -> tuple[dict, "np.ndarray"]:
    """The train split as training rows: ``(feeds, labels)`` padded to ``max_length``. Single texts give up to
    ``windows`` windows each (every window keeps its text's label), pairs one row each (with ``token_type_ids``),
    token-classification sentences one row each with per-position tag ids (-100 where no word starts)."""
    import numpy as np

    from .feeds import tokenize, tokenize_windows, tokenize_words

    if task == "token-classification":
        ds = load_token_dataset(data, "train", seed)
        return tokenize_words(tokenizer, ds.tokens, ds.tags, max_length=max_length)
    ds = load_dataset(data, "train", seed)
    if ds.pairs is not None:
        return tokenize(tokenizer, ds.texts, max_length, pairs=ds.pairs), np.asarray(ds.labels, np.int64)
    feeds, source = tokenize_windows(tokenizer, ds.texts, max_length, windows)
    return feeds, np.asarray(ds.labels, np.int64)[source]


def check_splits(data: "str | os.PathLike | DataSpec", task: str | None = None, seed: int = 0) -> DataSpec:
    """``data`` as a DataSpec whose splits read cleanly for ``task`` (token classification reads ``tokens`` /
    ``tags`` lists; every other task labelled texts): one InputError line otherwise."""
    spec = as_spec(data)
    if task == "token-classification":
        _token_splits(spec, seed, _stamp(spec))
    else:
        dataset_splits(spec, seed)
    return spec


# ---------------------------------------------------------------- helpers shared by both tasks

def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise one_of("split", split, SPLITS)
    return split


def _check_source(spec: DataSpec) -> None:
    """Raise the one-line error for a source that is neither built in nor on disk."""
    if spec.is_builtin or Path(spec.source).exists():
        return
    looks_like_path = os.sep in spec.source or "/" in spec.source or Path(spec.source).suffix != ""
    if looks_like_path:
        raise InputError(f"data {spec.source}: no such file or folder; allowed: {FORMATS}")
    raise InputError(f"unknown data {spec.source!r}; allowed: {', '.join(BUILTIN)} or a path to {FORMATS}")


def _stamp(spec: DataSpec) -> tuple:
    """Changes when the files change, so the cache never serves stale data."""
    if spec.is_builtin:
        return ()
    _check_source(spec)
    path = Path(spec.source)
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    stats = [p.stat() for p in files]
    return (str(path.resolve()), len(files), sum(s.st_size for s in stats), max((s.st_mtime_ns for s in stats), default=0))


def stratified_split(labels, seed: int, fractions: dict[str, float]) -> dict[str, list[int]]:
    """Indices per part: each class is shuffled with the seed and cut by ``fractions`` (in order; the last
    part takes the rest), then each part is shuffled. With the 70/10/20 fractions this is, call for call,
    the split edgekit always used for bbc-news."""
    rng = random.Random(seed)
    parts = list(fractions)
    out: dict[str, list[int]] = {p: [] for p in parts}
    for c in sorted(set(labels)):
        idx = [i for i, y in enumerate(labels) if y == c]
        rng.shuffle(idx)
        start = 0
        for p in parts[:-1]:
            n = round(len(idx) * fractions[p])
            out[p] += idx[start:start + n]
            start += n
        out[parts[-1]] += idx[start:]
    for p in parts:
        rng.shuffle(out[p])
    return out


def _missing_fractions(have: set[str]) -> dict[str, float]:
    if have == {"all"}:
        return dict(SPLIT_FRACTIONS)
    parts = ["train"] + [s for s in SPLITS if s not in have]
    total = sum(SPLIT_FRACTIONS[p] for p in parts)
    return {p: SPLIT_FRACTIONS[p] / total for p in parts}


def _assign(rows_by_split: dict[str, list], labels_of, seed: int, origin: str) -> dict[str, list]:
    """Drop duplicates across splits, cut the missing splits from train, shuffle each split."""
    seen: set = set()
    kept: dict[str, list] = {}
    for split in ("train", "validation", "test", "all"):
        for row in rows_by_split.get(split, []):
            if row.key not in seen:
                seen.add(row.key)
                kept.setdefault(split, []).append(row)
    base = "all" if "all" in kept else "train"
    fractions = _missing_fractions(set(kept))
    out = {s: kept[s] for s in SPLITS if s in kept}
    cut_parts: set[str] = set()
    if len(fractions) > 1:
        pool = kept[base]
        cut = stratified_split([labels_of(r) for r in pool], seed, fractions)
        out.update({s: [pool[i] for i in idx] for s, idx in cut.items()})
        cut_parts = set(cut)
    rng = random.Random(seed)
    for s in SPLITS:
        if not out.get(s):
            n = sum(len(v) for v in kept.values())
            raise InputError(f"data {origin}: split {s!r} is empty ({n} unique rows); each of train, validation "
                             f"and test needs rows (70/10/20 of the data where it has no split of its own)")
        if s not in cut_parts:  # files are often sorted by class; a prefix of a split should not be
            rng.shuffle(out[s])
    return out


class _Row:
    __slots__ = ("text", "pair", "label", "key", "where")

    def __init__(self, text, pair, label, key, where):
        self.text, self.pair, self.label, self.key, self.where = text, pair, label, key, where


def _text_of(table: Table, role: str, column: str, i: int) -> str:
    value = table.columns[role][i]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise InputError(f"{table.where(i)} has an empty text in column {column!r}; every row needs a non-empty text")
    if not isinstance(value, str):
        raise InputError(f"{table.where(i)}: column {column!r} holds {value!r} ({type(value).__name__}), not text; "
                         f"choose the text column with --text-column")
    return value


def _label_of(table: Table, column: str, i: int, value) -> str | int:
    """A label value as a sortable key: a ClassLabel's name, an int, or a string."""
    names = table.class_names.get("label") or table.class_names.get("tags")
    where = table.where(i)
    if value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, float) and math.isnan(value)):
        raise InputError(f"{where} has no label in column {column!r}; every row needs a label (a string or an integer)")
    if names is not None:
        if not isinstance(value, int) or not 0 <= value < len(names):
            raise InputError(f"{where} has label {value!r} in column {column!r}; allowed: 0..{len(names) - 1} "
                             f"({', '.join(names)})")
        return value
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, (int, str)):
        return value.strip() if isinstance(value, str) else value
    raise InputError(f"{where} has label {value!r} in column {column!r}; labels are strings or integers")


def _label_names(tables: list[Table], role: str, keys_by_split: dict[str, list], origin: str, column: str,
                 rows_by_split: dict[str, list]) -> tuple[tuple[str, ...], dict]:
    """Label names and a key -> id map; errors for one class or a label that train lacks."""
    declared = {t.class_names[role] for t in tables if role in t.class_names}
    if len(declared) > 1:
        raise InputError(f"data {origin}: the splits declare different class names for column {column!r}")
    train_keys = set(keys_by_split.get("train", keys_by_split.get("all", [])))
    for split in ("validation", "test"):
        for key, row in zip(keys_by_split.get(split, []), rows_by_split.get(split, [])):
            if key not in train_keys:
                shown = sorted(train_keys, key=_sort_key)
                raise InputError(f"{row.where} has label {_show(key, declared)!r} that no train row has; "
                                 f"train labels: {', '.join(str(_show(k, declared)) for k in shown)}")
    if len(train_keys) < 2:
        only = ", ".join(repr(_show(k, declared)) for k in train_keys) or "none"
        raise InputError(f"data {origin}: column {column!r} has one class only ({only}); a classifier needs "
                         f"at least two")
    if declared:
        names = next(iter(declared))
        return tuple(names), {i: i for i in range(len(names))}
    ordered = sorted(train_keys, key=_sort_key)
    return tuple(str(k) for k in ordered), {k: i for i, k in enumerate(ordered)}


def _sort_key(k):
    return (0, k, "") if isinstance(k, int) else (1, 0, str(k))


def _show(key, declared):
    return next(iter(declared))[key] if declared else key


def _unify(keys_by_split: dict[str, list]) -> dict[str, list]:
    """Integers in one file and strings in another: compare them all as strings."""
    kinds = {type(k) for ks in keys_by_split.values() for k in ks}
    if kinds == {int, str}:
        return {s: [str(k) for k in ks] for s, ks in keys_by_split.items()}
    return keys_by_split


# ---------------------------------------------------------------- text classification

@lru_cache(maxsize=4)
def _text_splits(spec: DataSpec, seed: int, stamp: tuple) -> dict[str, TextDataset]:
    if spec.is_builtin:
        texts, labels, names = bbc_news()
        cut = stratified_split(labels, seed, SPLIT_FRACTIONS)
        return {s: TextDataset(spec.name, s, tuple(texts[i] for i in idx), tuple(labels[i] for i in idx), names)
                for s, idx in cut.items()}
    roles = {"text": spec.text_column, "label": spec.label_column}
    if spec.text_pair_column:
        roles["pair"] = spec.text_pair_column
    tables = read_source(spec.source, roles)
    rows: dict[str, list[_Row]] = {}
    for split, ts in tables.items():
        for t in ts:
            for i in range(len(t)):
                text = _text_of(t, "text", spec.text_column, i)
                pair = _text_of(t, "pair", spec.text_pair_column, i) if spec.text_pair_column else None
                label = _label_of(t, spec.label_column, i, t.columns["label"][i])
                key = (" ".join(text.split()), " ".join(pair.split()) if pair is not None else None)
                rows.setdefault(split, []).append(_Row(text, pair, label, key, t.where(i)))
    keys = _unify({s: [r.label for r in rs] for s, rs in rows.items()})
    for s, rs in rows.items():
        for r, k in zip(rs, keys[s]):
            r.label = k
    all_tables = [t for ts in tables.values() for t in ts]
    if "all" in rows:  # labels of every row count; the split is ours
        names, to_id = _label_names(all_tables, "label", {"all": keys["all"]}, spec.source, spec.label_column, rows)
    else:
        names, to_id = _label_names(all_tables, "label", keys, spec.source, spec.label_column, rows)
    parts = _assign(rows, lambda r: to_id[r.label], seed, spec.source)
    return {s: TextDataset(spec.name, s, tuple(r.text for r in rs), tuple(to_id[r.label] for r in rs), names,
                           tuple(r.pair for r in rs) if spec.text_pair_column else None)
            for s, rs in parts.items()}


# ---------------------------------------------------------------- token classification

@lru_cache(maxsize=4)
def _token_splits(spec: DataSpec, seed: int, stamp: tuple) -> dict[str, TokenDataset]:
    if spec.is_builtin:
        raise InputError(f"data {spec.source!r} is a text-classification set; token classification needs "
                         f"JSON Lines (or a table) with {spec.tokens_column!r} and {spec.tags_column!r} lists")
    tables = read_source(spec.source, {"tokens": spec.tokens_column, "tags": spec.tags_column})
    rows: dict[str, list[_Row]] = {}
    for split, ts in tables.items():
        for t in ts:
            for i in range(len(t)):
                words, tags = t.columns["tokens"][i], t.columns["tags"][i]
                where = t.where(i)
                if not isinstance(words, list) or not words or not all(isinstance(w, str) and w for w in words):
                    raise InputError(f"{where}: column {spec.tokens_column!r} must be a non-empty list of non-empty "
                                     f"strings, not {words!r}")
                if not isinstance(tags, list) or len(tags) != len(words):
                    n = len(tags) if isinstance(tags, list) else type(tags).__name__
                    raise InputError(f"{where} has {len(words)} tokens but {n} tags in column {spec.tags_column!r}; "
                                     f"every token needs one tag")
                keys = tuple(_label_of(t, spec.tags_column, i, v) for v in tags)
                rows.setdefault(split, []).append(_Row(tuple(words), None, keys, tuple(words), where))
    # one (flattened) key list per split for the label checks; rows repeat per tag for the messages
    flat = {s: [k for r in rs for k in r.label] for s, rs in rows.items()}
    flat_rows = {s: [r for r in rs for _ in r.label] for s, rs in rows.items()}
    unified = _unify(flat)
    if unified is not flat:
        for rs in rows.values():
            for r in rs:
                r.label = tuple(str(k) for k in r.label)
        flat = unified
    all_tables = [t for ts in tables.values() for t in ts]
    check = {"all": flat["all"]} if "all" in flat else flat
    names, to_id = _label_names(all_tables, "tags", check, spec.source, spec.tags_column, flat_rows)
    parts = _assign(rows, lambda r: 0, seed, spec.source)
    return {s: TokenDataset(spec.name, s, tuple(r.text for r in rs), tuple(tuple(to_id[k] for k in r.label) for r in rs),
                            names)
            for s, rs in parts.items()}
