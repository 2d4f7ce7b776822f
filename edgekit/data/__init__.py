"""The one reader of datasets: built-in data, your own files, unlabelled text, and tokenisation.

Labelled text (text classification, single texts or pairs)::

    from edgekit.data import DataSpec, load_dataset, tokenize
    spec = DataSpec("tickets.csv", text_column="body", label_column="queue")   # or just "bbc-news" / a path
    train = load_dataset(spec, "train", seed=0)       # TextDataset: texts, labels, label_names, pairs
    feeds = tokenize(tok, train.texts, pairs=train.pairs, max_length=128)

Token classification::

    ner = load_token_dataset("ner.jsonl", "test")    # TokenDataset: tokens, tags, label_names, is_iob
    feeds, labels = tokenize_words(tok, ner.tokens, ner.tags)

Unlabelled text for distillation / calibration (``--distill-data``)::

    extra = load_texts(["notes.txt", "docs/"], exclude=load_dataset(spec, "test").texts)
    register_text_source("my-corpus", lambda: ["document one ...", "document two ..."], "what, size, licence")
    extra = load_texts("my-corpus")   # a registered name works wherever a path does

Formats, splits, label ids and errors are described in :mod:`edgekit.data.files` and
:mod:`edgekit.data.labelled`; every bad input is one :class:`~edgekit.errors.InputError` line.
"""
from .feeds import tokenize, tokenize_windows, tokenize_words
from .files import FORMATS, TABLE_SUFFIXES
from .labelled import (calibration_feeds, calibration_texts, check_splits, dataset_splits, load_dataset,
                       load_token_dataset, stratified_split, training_rows)
from .spec import BUILTIN, SPLIT_FRACTIONS, SPLITS, DataSpec, TextDataset, TokenDataset, as_spec
from .unlabelled import TEXT_SOURCES, TEXT_SUFFIXES, TextSource, load_texts, register_text_source, split_passages
from . import corpora  # noqa: F401  registers the installed English text sources (gensim-lee, linux-doc, english-mix, ...)

DATASETS = BUILTIN  # the name earlier releases exported

__all__ = [
    "BUILTIN", "DATASETS", "FORMATS", "SPLITS", "SPLIT_FRACTIONS", "TABLE_SUFFIXES", "TEXT_SOURCES", "TEXT_SUFFIXES",
    "DataSpec", "TextDataset", "TextSource", "TokenDataset", "as_spec", "calibration_feeds", "calibration_texts",
    "check_splits", "dataset_splits", "training_rows",
    "load_dataset", "load_texts", "load_token_dataset", "register_text_source", "split_passages", "stratified_split",
    "tokenize", "tokenize_windows", "tokenize_words",
]
