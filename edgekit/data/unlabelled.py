"""Unlabelled text for distillation and calibration (``--distill-data``): the teacher labels it.

A source is a built-in name (its train split), a registered text source (:func:`register_text_source`), a table (CSV / TSV / JSON Lines / Parquet / a
``save_to_disk`` folder / a folder of split files: its text column; of data with splits only the train
split, so validation and test text never leaks into training), or plain text: a ``.txt`` (``.text``,
``.md``, ``.rst``) file or a folder holding such files at any depth (a folder of class sub-folders
too). Plain text is cut into passages: paragraphs (blocks between blank lines; a file without blank
lines is one text per line) are joined until a passage has ``min_words`` words and cut at
``max_words``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import InputError

from .files import FORMATS, TABLE_SUFFIXES, check_utf8, read_source
from .spec import BUILTIN, DataSpec, as_spec

TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst")
ON_BAD_FILE = ("raise", "skip")


@dataclass(frozen=True)
class TextSource:
    """A named corpus of unlabelled text (e.g. one that a package installs): ``documents()`` yields its
    documents as strings (an empty iterable when it is not installed here); ``about`` says what it is,
    its size and licence, for help texts and the README."""

    name: str
    documents: Callable[[], Iterable[str]]
    about: str = ""


TEXT_SOURCES: dict[str, TextSource] = {}


def register_text_source(name: str, documents: Callable[[], Iterable[str]], about: str = "") -> TextSource:
    """Make ``name`` usable wherever :func:`load_texts` takes a source (``--distill-data NAME``); its
    documents are cut into passages like plain-text files.

    >>> register_text_source("gensim-lee", lambda: lee_documents(), "Lee news corpus, 300 docs, LGPL")  # doctest: +SKIP
    >>> load_texts("gensim-lee")  # doctest: +SKIP
    """
    if not name or name in BUILTIN or os.sep in name or "/" in name:
        raise InputError(f"a text source name must be a plain name other than {', '.join(BUILTIN)}, not {name!r}")
    TEXT_SOURCES[name] = TextSource(name, documents, about)
    return TEXT_SOURCES[name]


def load_texts(source: "str | os.PathLike | DataSpec | Sequence[str | os.PathLike | DataSpec]", *,
               text_column: str | None = None, min_words: int = 24, max_words: int = 200,
               suffixes: Sequence[str] = TEXT_SUFFIXES, exclude: Iterable[str] = (), seed: int = 0,
               on_bad_file: str = "raise") -> list[str]:
    """Unlabelled texts from one source or several, in reading order, without exact repeats.

    - ``text_column`` overrides the spec's (default ``text``) for tables.
    - ``exclude``: texts that must not come back (e.g. the labelled test split), compared with white
      space collapsed.
    - ``on_bad_file="skip"`` skips plain-text files that are empty or not UTF-8 (for large corpora);
      ``"raise"`` (default) stops with one line naming the file.

    >>> passages = load_texts("/usr/share/doc/some-manual/")  # doctest: +SKIP
    >>> texts = load_texts(DataSpec("tickets.csv", text_column="body"))  # doctest: +SKIP
    >>> extra = load_texts(["notes.txt", "more/"], exclude=load_dataset(spec, "test").texts)  # doctest: +SKIP
    """
    if on_bad_file not in ON_BAD_FILE:
        raise InputError(f"unknown on_bad_file {on_bad_file!r}; allowed: {', '.join(ON_BAD_FILE)}")
    if min_words < 1 or max_words < min_words:
        raise InputError(f"passages need 1 <= min_words <= max_words; got {min_words}, {max_words}")
    sources = [source] if isinstance(source, (str, os.PathLike, DataSpec)) else list(source)
    if not sources:
        raise InputError("no unlabelled text source given")
    seen = {" ".join(t.split()) for t in exclude}
    out: list[str] = []
    for src in sources:
        spec = as_spec(src)
        if text_column is not None:
            spec = DataSpec(spec.source, text_column=text_column)
        for text in _texts_of(spec, min_words, max_words, tuple(s.lower() for s in suffixes), seed, on_bad_file):
            key = " ".join(text.split())
            if key not in seen:
                seen.add(key)
                out.append(text)
    if not out:
        raise InputError(f"no text in {', '.join(str(as_spec(s)) for s in sources)} (after dropping repeats)")
    return out


def _texts_of(spec: DataSpec, min_words: int, max_words: int, suffixes: tuple[str, ...], seed: int,
              on_bad_file: str) -> list[str]:
    if spec.is_builtin:
        from .labelled import load_dataset

        return list(load_dataset(spec, "train", seed).texts)
    path = Path(spec.source)
    if spec.source in TEXT_SOURCES and not path.exists():
        docs = TEXT_SOURCES[spec.source].documents()
        return [p for d in docs for p in split_passages(d, min_words, max_words)]
    if not path.exists():
        names = ", ".join(list(BUILTIN) + sorted(TEXT_SOURCES))
        raise InputError(f"distillation data {spec.source}: no such file or folder; allowed: {names}, "
                         f"plain text ({', '.join(suffixes)}) or {FORMATS}")
    if path.is_file() and path.suffix.lower() in suffixes:
        return _passages_of_file(path, min_words, max_words, on_bad_file)
    if path.is_file() and path.suffix.lower() not in TABLE_SUFFIXES:
        raise InputError(f"distillation data {path}: unknown file type {path.suffix or '(no extension)'!r}; allowed: "
                         f"{', '.join(suffixes + tuple(TABLE_SUFFIXES))} or a folder")
    if path.is_file() or _is_table_folder(path):
        from .labelled import _text_of

        tables = read_source(spec.source, {"text": spec.text_column})
        split = "train" if "train" in tables else "all"
        return [_text_of(t, "text", spec.text_column, i) for t in tables[split] for i in range(len(t))]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in suffixes
                   and not any(part.startswith(".") for part in p.relative_to(path).parts))
    if not files:
        raise InputError(f"distillation data {path}: no text files ({', '.join(suffixes)}) in this folder; allowed: "
                         f"plain text or {FORMATS}")
    return [p for f in files for p in _passages_of_file(f, min_words, max_words, on_bad_file)]


def _is_table_folder(path: Path) -> bool:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return True
    return any(p.suffix.lower() in TABLE_SUFFIXES for p in path.rglob("*") if p.is_file())


def _passages_of_file(path: Path, min_words: int, max_words: int, on_bad_file: str) -> list[str]:
    try:
        if not check_utf8(path):
            raise InputError(f"distillation data {path}: the file is empty")
    except InputError:
        if on_bad_file == "skip":
            return []
        raise
    return split_passages(path.read_text(encoding="utf-8"), min_words, max_words)


def split_passages(text: str, min_words: int = 24, max_words: int = 200) -> list[str]:
    """Cut plain text into passages of ``min_words``..``max_words`` words, white space collapsed (a short
    last piece joins the passage before it when that stays within ``max_words``).

    >>> split_passages("One two.\\n\\nThree four five.", min_words=3, max_words=4)
    ['One two. Three four', 'five.']
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    blocks = re.split(r"\n[ \t]*\n", text)
    if len(blocks) == 1:  # no blank lines: one text per line
        blocks = text.split("\n")
    out: list[list[str]] = []
    cur: list[str] = []
    for block in blocks:
        cur += block.split()
        while len(cur) >= max_words:
            out.append(cur[:max_words])
            cur = cur[max_words:]
        if len(cur) >= min_words:
            out.append(cur)
            cur = []
    if cur:
        if out and len(out[-1]) + len(cur) <= max_words:
            out[-1] += cur
        else:
            out.append(cur)
    return [" ".join(words) for words in out]
