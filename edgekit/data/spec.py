"""What to read (:class:`DataSpec`) and what comes back (:class:`TextDataset`, :class:`TokenDataset`)."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace

from edgekit.errors import InputError

BUILTIN = ("bbc-news",)
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = {"train": 0.7, "validation": 0.1, "test": 0.2}
SPEC_VERSION = 1


@dataclass(frozen=True)
class DataSpec:
    """Where a labelled dataset comes from and which columns hold what.

    ``source`` is a built-in name (``bbc-news``) or a path: a CSV / TSV / JSON Lines / Parquet file, a
    folder written by ``datasets.save_to_disk``, a folder of split files (``train.csv``, ``test.csv``,
    ...), or a folder of class sub-folders holding ``.txt`` files. Columns apply to tables only;
    ``tokens_column`` / ``tags_column`` only to token-classification data.

    >>> spec = DataSpec("tickets.csv", text_column="body", label_column="queue")
    >>> DataSpec.from_dict(spec.to_dict()) == spec
    True
    """

    source: str = "bbc-news"
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    tokens_column: str = "tokens"
    tags_column: str = "tags"
    version: int = SPEC_VERSION

    def __post_init__(self) -> None:
        if isinstance(self.source, os.PathLike):
            object.__setattr__(self, "source", os.fspath(self.source))
        if not isinstance(self.source, str) or not self.source.strip():
            raise InputError(f"data source must be a built-in name ({', '.join(BUILTIN)}) or a path, "
                             f"not {self.source!r}")
        for f in ("text_column", "label_column", "tokens_column", "tags_column"):
            value = getattr(self, f)
            if not isinstance(value, str) or not value:
                raise InputError(f"data {f} must be a non-empty column name, not {value!r}")
        if self.text_pair_column is not None and (not isinstance(self.text_pair_column, str)
                                                  or not self.text_pair_column):
            raise InputError(f"data text_pair_column must be a column name or None, not {self.text_pair_column!r}")
        used = [self.text_column, self.label_column] + ([self.text_pair_column] if self.text_pair_column else [])
        if len(set(used)) != len(used):
            raise InputError(f"data text_column, text_pair_column and label_column must differ; got {', '.join(used)}")
        if self.version != SPEC_VERSION:
            raise InputError(f"data spec version {self.version!r} is not supported; allowed: {SPEC_VERSION}")

    @property
    def name(self) -> str:
        """What reports print as ``data``: the built-in name or the path as given."""
        return self.source

    @property
    def is_builtin(self) -> bool:
        return self.source in BUILTIN

    def __str__(self) -> str:
        return self.source

    def with_source(self, source: str | os.PathLike) -> "DataSpec":
        """The same column options on another source (e.g. for ``--distill-data``)."""
        return replace(self, source=os.fspath(source))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DataSpec":
        allowed = [f.name for f in fields(cls)]
        unknown = sorted(set(d) - set(allowed))
        if unknown:
            raise InputError(f"unknown data option {unknown[0]!r}; allowed: {', '.join(allowed)}")
        return cls(**d)


def as_spec(data: "str | os.PathLike | DataSpec") -> DataSpec:
    """A :class:`DataSpec` from whatever a caller passes as ``data`` (a name, a path or a spec)."""
    if isinstance(data, DataSpec):
        return data
    return DataSpec(os.fspath(data) if isinstance(data, os.PathLike) else data)


@dataclass(frozen=True)
class TextDataset:
    """One split of a labelled text dataset: ``texts[i]`` (and ``pairs[i]`` for sentence-pair data) has
    integer label ``labels[i]``, named ``label_names[labels[i]]``. ``label_names`` is the same for every
    split of a source (sorted, so the same data always gives the same ids)."""

    name: str
    split: str
    texts: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...]
    pairs: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def id2label(self) -> dict[int, str]:
        """``{id: name}``, as a Hugging Face config stores it."""
        return dict(enumerate(self.label_names))

    def head(self, n: int) -> "TextDataset":
        """The first ``n`` examples (splits are already shuffled, so this stays roughly stratified)."""
        return replace(self, texts=self.texts[:n], labels=self.labels[:n],
                       pairs=None if self.pairs is None else self.pairs[:n])


@dataclass(frozen=True)
class TokenDataset:
    """One split of token-classification data: sentence ``i`` is ``tokens[i]`` (words) with one tag id per
    word in ``tags[i]``, named by ``label_names``."""

    name: str
    split: str
    tokens: tuple[tuple[str, ...], ...]
    tags: tuple[tuple[int, ...], ...]
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def is_iob(self) -> bool:
        """True when every tag name is ``O`` or starts with ``B-``/``I-`` (IOB2, or IOBES with ``E-``/``S-``),
        so entity-level F1 (seqeval) applies; otherwise report token accuracy."""
        return all(n == "O" or n[:2] in ("B-", "I-", "E-", "S-") for n in self.label_names)

    def head(self, n: int) -> "TokenDataset":
        return replace(self, tokens=self.tokens[:n], tags=self.tags[:n])
