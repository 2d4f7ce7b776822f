"""Read a data source on disk into plain columns, with the Hugging Face ``datasets`` library.

Formats: CSV (``.csv``), TSV (``.tsv``), JSON Lines (``.jsonl``, ``.ndjson``, ``.json``), Parquet
(``.parquet``), a folder written by ``datasets.save_to_disk`` (a Dataset or a DatasetDict), a folder of
such files named by split (``train.csv``, ``validation.csv`` / ``dev.csv``, ``test.csv``, shards such as
``train-00000-of-00002.parquet``; split names as ``datasets`` detects them), and a folder of class
sub-folders holding ``.txt`` files (optionally inside ``train/``, ``validation/``, ``test/``).

Everything that is wrong with the input becomes one :class:`InputError` line naming the file, the row
(1 = the first row after a CSV header, or the first line of a JSON Lines file) or column, and what is
allowed. ``datasets`` builds its tables in a temporary cache folder that is removed afterwards: reading
never writes anywhere else.
"""
from __future__ import annotations

import codecs
import json
import re
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.errors import InputError

TABLE_SUFFIXES = {".csv": "csv", ".tsv": "tsv", ".jsonl": "json", ".ndjson": "json", ".json": "json",
                  ".parquet": "parquet"}
FORMATS = "CSV (.csv), TSV (.tsv), JSON Lines (.jsonl), Parquet (.parquet), a datasets.save_to_disk folder, " \
          "a folder of split files (train.csv, test.csv, ...) or a folder of class sub-folders with .txt files"
SPLIT_ALIASES = {"train": "train", "training": "train", "validation": "validation", "valid": "validation",
                 "dev": "validation", "val": "validation", "test": "test", "testing": "test"}


@dataclass
class Table:
    """Columns of one file (or one split of a saved dataset). ``columns`` maps a role ("text", "pair",
    "label", "tokens", "tags") to the column's values in file order; ``class_names[role]`` holds the
    names of a ``ClassLabel`` column; ``row_names`` (class folders) names each row's own file."""

    origin: str
    columns: dict[str, list]
    class_names: dict[str, tuple[str, ...]] = field(default_factory=dict)
    row_names: list[str] | None = None

    def __len__(self) -> int:
        return len(next(iter(self.columns.values()))) if self.columns else 0

    def where(self, i: int) -> str:
        """``"data FILE: row N"`` (or ``"data FILE"`` of a row that is a file of its own) for messages."""
        return self.row_names[i] if self.row_names is not None else f"data {self.origin}: row {i + 1}"


def read_source(source: str, roles: dict[str, str]) -> dict[str, list[Table]]:
    """Read ``source`` (a path) into tables keyed by split (``train``/``validation``/``test``), or by
    ``"all"`` when the data has no splits of its own. ``roles`` maps a role to its column name, e.g.
    ``{"text": "review", "label": "stars"}``; every column must exist.

    >>> read_source("tickets.csv", {"text": "body", "label": "queue"})["all"][0].columns["label"][:2]  # doctest: +SKIP
    ['billing', 'outage']
    """
    path = Path(source)
    if not path.exists():
        raise InputError(f"data {source}: no such file or folder; allowed: a built-in name (bbc-news) or {FORMATS}")
    if path.is_file():
        return {"all": [_read_file(path, roles)]}
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return _read_saved(path, roles)
    files = _table_files(path)
    if files:
        return _read_split_files(path, files, roles)
    return _read_class_folders(path, roles)


# ---------------------------------------------------------------- single files

def _format_of(path: Path) -> str:
    fmt = TABLE_SUFFIXES.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"data {path}: unknown file type {path.suffix or '(no extension)'!r}; allowed: "
                         f"{', '.join(TABLE_SUFFIXES)} or a folder ({FORMATS})")
    return fmt


def check_utf8(path: Path) -> bool:
    """Raise if ``path`` is not UTF-8 (naming the line); return False when it holds only white space."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, any_text = 1, False
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            try:
                text = decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                line += chunk.count(b"\n", 0, exc.start)
                raise InputError(f"data {path}: line {line} is not UTF-8 (byte 0x{chunk[exc.start]:02x}); "
                                 f"save the file as UTF-8") from None
            line += chunk.count(b"\n")
            any_text = any_text or bool(text.strip())
        try:
            decoder.decode(b"", final=True)
        except UnicodeDecodeError:
            raise InputError(f"data {path}: line {line} is not UTF-8 (the file ends inside a character); "
                             f"save the file as UTF-8") from None
    return any_text


def _read_file(path: Path, roles: dict[str, str]) -> Table:
    fmt = _format_of(path)
    if path.stat().st_size == 0 or (fmt != "parquet" and not check_utf8(path)):
        raise InputError(f"data {path}: the file is empty; it needs a header or rows with columns "
                         f"{', '.join(repr(c) for c in roles.values())}")
    builder, kwargs = fmt, {}
    if fmt in ("csv", "tsv"):
        builder = "csv"
        # keep_default_na=False: a text "NA" or "None" stays text, an empty field is "" (reported as empty)
        kwargs = dict(sep="\t" if fmt == "tsv" else ",", keep_default_na=False, encoding="utf-8-sig",
                      converters={c: str for r, c in roles.items() if r in ("text", "pair")})
    with _quiet_datasets() as datasets, tempfile.TemporaryDirectory(prefix="edgekit-data-") as tmp:
        try:
            ds = datasets.load_dataset(builder, data_files={"train": [str(path)]}, split="train",
                                       cache_dir=tmp, keep_in_memory=True, **kwargs)
        except Exception as exc:  # datasets wraps the reader's error; turn it into one line
            raise _read_error(path, fmt, exc) from None
        return _table(ds, str(path), roles)


def _causes(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _read_error(path: Path, fmt: str, exc: Exception) -> InputError:
    messages = [f"{type(e).__name__}: {e}" for e in _causes(exc)]
    text = " | ".join(messages)
    m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", text)
    if m:
        want, line, saw = (int(g) for g in m.groups())
        return InputError(f"data {path}: row {line - 1} has {saw} fields but the header has {want}; every row "
                          f"needs exactly the header's columns (quote fields that contain the separator)")
    if "corresponds to no data" in text or "EmptyDataError" in text:
        return InputError(f"data {path}: the file has no rows")
    if fmt == "json":
        found = _json_problem(path)
        if found:
            return InputError(f"data {path}: {found}")
    last = messages[-1].splitlines()[0] if messages else str(exc)
    return InputError(f"data {path}: cannot be read as {fmt.upper()} ({last}); allowed: {FORMATS}")


def _json_problem(path: Path) -> str | None:
    """Only to NAME the line the ``datasets`` reader rejected (it reports positions inside its blocks)."""
    kinds: dict[str, tuple[str, int]] = {}
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                if n == 1 and line.lstrip().startswith("["):
                    return None  # a JSON array, not JSON Lines: let the library's message stand
                return f"line {n} is not valid JSON ({exc.msg}); JSON Lines holds one object per line"
            if not isinstance(row, dict):
                return f"line {n} is a JSON {type(row).__name__}, not an object; JSON Lines holds one object per line"
            for key, value in row.items():
                kind = "text" if isinstance(value, str) else "number" if isinstance(value, (int, float)) \
                    else type(value).__name__
                if value is None:
                    continue
                first = kinds.setdefault(key, (kind, n))
                if first[0] != kind:
                    return (f"line {n}: {key!r} is a {kind} but a {first[0]} on line {first[1]}; "
                            f"a column holds one type")
    return None


# ---------------------------------------------------------------- folders

def _table_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TABLE_SUFFIXES
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def _read_split_files(folder: Path, files: list[Path], roles: dict[str, str]) -> dict[str, list[Table]]:
    from datasets.data_files import DataFilesDict, get_data_patterns

    with _quiet_datasets():
        patterns = get_data_patterns(str(folder))
        if list(patterns) == ["train"] and patterns["train"] == ["**"]:  # no split names: one pool of rows
            return {"all": [_read_file(p, roles) for p in files]}
        found = DataFilesDict.from_patterns(patterns, base_path=str(folder))
    by_split: dict[str, list[Path]] = {}
    for split, names in found.items():
        key = SPLIT_ALIASES.get(str(split))
        picked = [Path(n) for n in names if Path(n).suffix.lower() in TABLE_SUFFIXES]
        if key and picked:
            by_split.setdefault(key, []).extend(picked)
    unused = sorted(set(files) - {p for ps in by_split.values() for p in ps})
    if unused:
        raise InputError(f"data {unused[0]}: the name says no split; in a folder of split files name each "
                         f"file train*, validation* (or dev*, valid*, val*) or test*")
    if "train" not in by_split:
        raise InputError(f"data {folder}: no train file among {', '.join(p.name for p in files)}; "
                         f"a folder of split files needs train* (validation* and test* are optional)")
    return {split: [_read_file(p, roles) for p in sorted(ps)] for split, ps in by_split.items()}


def _read_saved(folder: Path, roles: dict[str, str]) -> dict[str, list[Table]]:
    with _quiet_datasets() as datasets:
        try:
            saved = datasets.load_from_disk(str(folder))
        except Exception as exc:
            raise InputError(f"data {folder}: cannot be read as a datasets.save_to_disk folder "
                             f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})") from None
        if isinstance(saved, datasets.Dataset):
            return {"all": [_table(saved, str(folder), roles)]}
        out: dict[str, list[Table]] = {}
        for name, ds in saved.items():
            split = SPLIT_ALIASES.get(name)
            if split is not None:  # other splits (e.g. "unsupervised") carry no labels we can use
                out.setdefault(split, []).append(_table(ds, f"{folder} (split {name!r})", roles))
        if "train" not in out:
            raise InputError(f"data {folder}: no train split (it has {', '.join(saved) or 'none'}); allowed "
                             f"split names: {', '.join(SPLIT_ALIASES)}")
        return out


def _table(ds, origin: str, roles: dict[str, str]) -> Table:
    have = list(ds.column_names)
    for role, col in roles.items():
        if col not in have:
            option = {"text": "--text-column", "pair": "--text-pair-column", "label": "--label-column",
                      "tokens": "tokens_column", "tags": "tags_column"}.get(role, role)
            raise InputError(f"data {origin}: no column {col!r} ({option}); its columns: {', '.join(have)}")
    if len(ds) == 0:
        raise InputError(f"data {origin}: no rows")
    columns = {role: ds[col][:] for role, col in roles.items()}  # decoded (a mixed JSON column arrives as Json)
    names = {}
    for role, col in roles.items():
        feature = ds.features[col]
        feature = getattr(feature, "feature", feature)  # List(ClassLabel) for token tags
        if type(feature).__name__ == "ClassLabel":
            names[role] = tuple(feature.names)
    return Table(origin, columns, names)


def _read_class_folders(folder: Path, roles: dict[str, str]) -> dict[str, list[Table]]:
    if set(roles) - {"text", "label"}:
        raise InputError(f"data {folder}: a folder of class sub-folders holds single labelled texts; "
                         f"use a table (CSV, JSON Lines, Parquet) for text pairs or token tags")
    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs and all(p.name.lower() in SPLIT_ALIASES for p in subdirs):
        out: dict[str, list[Table]] = {}
        for p in subdirs:
            out.setdefault(SPLIT_ALIASES[p.name.lower()], []).append(_class_table(p))
        if "train" not in out:
            raise InputError(f"data {folder}: split folders {', '.join(p.name for p in subdirs)} have no train/")
        return out
    return {"all": [_class_table(folder)]}


def _class_table(folder: Path) -> Table:
    classes = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        stray = sorted(p.name for p in folder.iterdir() if p.is_file())
        what = f"files {', '.join(stray[:3])}" if stray else "nothing"
        raise InputError(f"data {folder}: holds {what}; allowed: {FORMATS}")
    texts, labels, where = [], [], []
    for c in classes:
        docs = sorted(c.glob("*.txt"))
        if not docs:
            raise InputError(f"data {c}: no .txt files in this class folder; each class folder holds one "
                             f".txt file per example")
        for doc in docs:
            if not check_utf8(doc):
                raise InputError(f"data {doc}: the file is empty; each .txt file holds one non-empty example")
            texts.append(doc.read_text(encoding="utf-8").strip())
            labels.append(c.name)
            where.append(f"data {doc}")
    return Table(str(folder), {"text": texts, "label": labels}, {}, where)


@contextmanager
def _quiet_datasets():
    """``datasets`` without its progress bars and log lines (we report errors ourselves)."""
    import datasets
    from datasets.utils import logging as dlog

    bars, level = datasets.is_progress_bar_enabled(), dlog.get_verbosity()
    datasets.disable_progress_bars()
    dlog.set_verbosity(dlog.CRITICAL)
    try:
        yield datasets
    finally:
        dlog.set_verbosity(level)
        if bars:
            datasets.enable_progress_bars()
