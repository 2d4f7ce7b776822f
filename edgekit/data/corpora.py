"""Named English text sources that packages install, for distillation (``--distill-data NAME``).

Nothing here downloads. Each source reads files that a package put on this machine: the ``gensim``
wheel's test corpora (a PyPI dependency, always there) and Debian documentation and dictionary
packages (``make`` installs them when it runs as root; otherwise the source is skipped with one line).
Markup is stripped by :mod:`edgekit.data.prose`; the reader (:func:`~edgekit.data.load_texts`) cuts
the documents into passages and drops exact repeats.

- ``english-mix``: every installed source, at most ``MIX_WORDS_PER_SOURCE`` words from each (a seeded
  choice), shuffled together, so no single source dominates.
- :func:`distill_passages` is what a recipe uses: passages of the reader's word limits (shorter tails
  dropped), never a bbc-news validation or test article, ``n`` of them drawn with a seed.
- :func:`text_sources_info` / :func:`format_text_sources`: the ``edgekit info`` view (installed or not,
  passages and words).

>>> texts = load_texts("english-mix")                        # doctest: +SKIP
>>> extra = distill_passages("english-mix", n=4000, seed=0)  # doctest: +SKIP
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
import io
import json
import os
import pickle
import random
import re
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from edgekit.errors import InputError

from . import prose
from .unlabelled import TEXT_SOURCES, load_texts, register_text_source

#: a folder holding extracted Debian packages (``dpkg-deb -x PKG.deb DIR``): lets a user without root
#: use the Debian sources (see README); searched before the system root
DEBIAN_ROOT_ENV = "EDGEKIT_DEBIAN_ROOT"
SYSTEM_ROOT = Path("/")
MIX_NAME = "english-mix"
MIX_WORDS_PER_SOURCE = 150_000
#: bump when an extractor changes, so cached counts are recomputed
EXTRACT_VERSION = 1

Unit = Callable[[], list[str]]  # loads some documents of a source


@dataclass(frozen=True)
class Corpus:
    """One named source: where it is installed, how to list its units (cheap) and read them."""

    name: str
    package: str          # what to install, e.g. "linux-doc" or "gensim"
    registry: str         # "Debian" or "PyPI"
    licence: str
    about: str
    locate: Callable[[], Path | None]
    units: Callable[[Path], list[Unit]]

    def root(self) -> Path | None:
        """The installed location, or None."""
        return self.locate()

    def missing_line(self) -> str:
        """The one line said when the source is not installed."""
        how = "needs root" if self.registry == "Debian" else "pip install " + self.package
        return f"{self.name}: not installed ({self.registry} package {self.package}, {how}); skipped"

    def documents(self, seed: int | None = None, max_words: int | None = None) -> list[str]:
        """Documents (paragraphs separated by blank lines), without exact repeats. ``seed`` None: in
        file order; else a seeded order. ``max_words``: stop at that many words (a document that would
        pass it is cut at a paragraph), reading only as many files as needed. A capped choice is kept
        for the process (the mix reads it again for each passage count)."""
        root = self.root()
        if root is None:
            return []
        read = _read_documents if max_words is not None else _read_documents.__wrapped__
        return list(read(self.name, str(root), seed, max_words))


@lru_cache(maxsize=64)
def _read_documents(name: str, root: str, seed: int | None, max_words: int | None) -> tuple[str, ...]:
    corpus = CORPORA[name]
    units = corpus.units(Path(root))
    rng = random.Random(seed)
    if seed is not None:
        rng.shuffle(units)
    out: list[str] = []
    seen: set[str] = set()
    total = 0
    for unit in units:
        docs = unit()
        if seed is not None:
            rng.shuffle(docs)
        for doc in docs:
            key = " ".join(doc.split())
            if not key or key in seen:
                continue
            seen.add(key)
            words = len(key.split())
            if max_words is not None and total + words > max_words:
                doc, words = _head(doc, max_words - total)
                if words:
                    out.append(doc)
                return tuple(out)
            out.append(doc)
            total += words
    return tuple(out)


def _head(doc: str, budget: int) -> tuple[str, int]:
    """The leading paragraphs of ``doc`` that fit in ``budget`` words, and their word count."""
    kept, n = [], 0
    for para in doc.split("\n\n"):
        w = len(para.split())
        if n + w > budget:
            break
        kept.append(para)
        n += w
    return "\n\n".join(kept), n


def _document(paragraphs: Iterable[str]) -> str:
    return "\n\n".join(paragraphs)


def _groups(paragraphs: Sequence[str], size: int) -> list[str]:
    """Short items (glosses, entries, fortunes) as documents of ``size`` items each, each item ending
    as a sentence so that a passage that joins several still reads as sentences."""
    items = [p if p[-1:] in ".!?\"')”’" else p + "." for p in paragraphs]
    return [_document(items[i:i + size]) for i in range(0, len(items), size)]


# --- where packages put their files ----------------------------------------------------------------

def _gensim_data() -> Path | None:
    """gensim's ``test/test_data`` folder, found without importing gensim."""
    try:
        spec = importlib.util.find_spec("gensim")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "test" / "test_data"
    return path if path.is_dir() else None


def debian_roots() -> list[Path]:
    """Where Debian package files are looked for: ``$EDGEKIT_DEBIAN_ROOT`` (if set), then ``/``."""
    env = os.environ.get(DEBIAN_ROOT_ENV)
    return ([Path(env)] if env else []) + [SYSTEM_ROOT]


def _debian(pattern: str) -> Callable[[], Path | None]:
    """Locator of the first existing match of ``pattern`` (a glob under a root; highest version first)."""
    def locate() -> Path | None:
        for root in debian_roots():
            hits = sorted(root.glob(pattern), key=_version_key, reverse=True)
            if hits:
                return hits[0]
        return None
    return locate


def _version_key(path: Path) -> list[int]:
    return [int(n) for n in re.findall(r"\d+", str(path))]


def _gensim_file(*names: str) -> Callable[[], Path | None]:
    def locate() -> Path | None:
        root = _gensim_data()
        return root if root is not None and all((root / n).is_file() for n in names) else None
    return locate


# --- readers of each source ------------------------------------------------------------------------

def _lines(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]


def _lee_units(root: Path) -> list[Unit]:
    files = [root / "lee_background.cor", root / "lee.cor"]
    return [lambda: [d for f in files for d in _lines(f) if prose.is_prose(d)]]


def _wiki_units(root: Path) -> list[Unit]:
    dumps = sorted(root.glob("enwiki-*.bz2"))
    return [lambda p=p: [_document(a) for a in prose.wiki_dump_articles(p)] for p in dumps]


class _Bunch(dict):
    def __setstate__(self, state):
        self.update(state)


class _Ignored:
    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


class _NewsUnpickler(pickle.Unpickler):
    """Reads the scikit-learn ``Bunch`` that gensim ships (a Python 2 pickle) with no code from it:
    only a dict, its text list and inert stand-ins for the numpy label array."""

    def find_class(self, module, name):
        if (module, name) == ("copy_reg", "_reconstructor"):
            return lambda cls, base, state: cls(state) if state is not None else cls()
        if name == "Bunch":
            return _Bunch
        if (module, name) in {("__builtin__", "dict"), ("__builtin__", "object")}:
            return dict if name == "dict" else object
        if module.startswith("numpy"):
            return _Ignored
        raise pickle.UnpicklingError(f"unexpected {module}.{name} in the newsgroups sample")


def _news_units(root: Path) -> list[Unit]:
    def load() -> list[str]:
        raw = zlib.decompress((root / "mini_newsgroup").read_bytes())
        bunch = _NewsUnpickler(io.BytesIO(raw), encoding="latin1").load()
        return [_document(prose.news_paragraphs(post)) for post in bunch.get("data", [])]
    return [load]


def _detokenise(text: str) -> str:
    """Undo tokenisation spacing: "it 's so good ." -> "it's so good."."""
    text = re.sub(r"\s+(?=[.,;:!?)%]|n't\b|'(?:s|re|ve|ll|d|m)\b)", "", text)
    return " ".join(re.sub(r"\(\s+", "(", text).split())


def _review_units(root: Path) -> list[Unit]:
    def load() -> list[str]:
        sentences = [re.sub(r"^__label__\w+\s+", "", s) for s in _lines(root / "pang_lee_polarity.cor")]
        reviews = [re.sub(r"^_\*\d+\s+", "", s) for s in _lines(root / "alldata-id-10.txt")]
        items = [_detokenise(t) for t in sentences + reviews]
        return _groups([t for t in items if prose.is_prose(t)], 20)
    return [load]


_LINUX_SKIP = {"translations", "devicetree", "ABI", "features", "output"}


def _linux_units(root: Path) -> list[Unit]:
    files = sorted(p for p in root.rglob("*.gz") if p.name.endswith((".rst.gz", ".txt.gz"))
                   and not _LINUX_SKIP & set(p.relative_to(root).parts))
    return [lambda p=p: [_document(prose.rst_paragraphs(gzip.open(p, "rt", encoding="utf-8", errors="replace").read()))]
            for p in files]


_PYDOC_SKIP_DIRS = {"_sources", "_static", "_images", "_downloads"}
_PYDOC_SKIP_PAGES = ("genindex", "py-modindex", "modindex", "search", "changelog")


def _python_doc_units(root: Path) -> list[Unit]:
    files = sorted(p for p in root.rglob("*.html") if not _PYDOC_SKIP_DIRS & set(p.relative_to(root).parts)
                   and not p.name.startswith(_PYDOC_SKIP_PAGES))
    return [lambda p=p: [_document(prose.html_paragraphs(p.read_text(encoding="utf-8", errors="replace")))]
            for p in files]


def _gcide_units(path: Path, chunk_chars: int = 200_000) -> list[Unit]:
    with gzip.open(path, "rb") as f:  # a dictzip file is a gzip file
        text = f.read().decode("utf-8", errors="replace")
    start = text.find("\nA \\")  # entries begin after the licence preamble
    text = text[max(start, 0):]
    cuts, pos = [0], 0
    while pos + chunk_chars < len(text):
        nxt = text.find("\n\n", pos + chunk_chars)
        if nxt < 0:
            break
        cuts.append(nxt + 2)
        pos = nxt + 2
    cuts.append(len(text))
    return [lambda a=a, b=b: _groups(prose.gcide_entries(text[a:b]), 40) for a, b in zip(cuts, cuts[1:])]


def _wordnet_units(root: Path, per_unit: int = 2000) -> list[Unit]:
    units: list[Unit] = []
    for pos in ("noun", "verb", "adj", "adv"):
        path = root / f"data.{pos}"
        if path.is_file():
            lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln[:1].isdigit()]
            units += [lambda part=lines[lo:lo + per_unit]: _groups([g for _, g in prose.wordnet_glosses("\n".join(part))], 60)
                      for lo in range(0, len(lines), per_unit)]
    return units


_FORTUNE_SKIP = {"art", "ascii-art", "translate-me"}


def _fortune_units(root: Path) -> list[Unit]:
    files = sorted(p for p in root.iterdir() if p.is_file() and not p.suffix and p.name not in _FORTUNE_SKIP)
    return [lambda p=p: _groups(prose.fortune_paragraphs(p.read_text(encoding="utf-8", errors="replace")), 30)
            for p in files]


CORPORA: dict[str, Corpus] = {c.name: c for c in [
    Corpus("gensim-lee", "gensim", "PyPI", "LGPL-2.1 (gensim); ABC news articles, no licence of their own stated",
           "the Lee news corpus: 350 short ABC (Australia) news articles from gensim's test data",
           _gensim_file("lee_background.cor", "lee.cor"), _lee_units),
    Corpus("wiki-sample", "gensim", "PyPI", "CC BY-SA 3.0 (Wikipedia text), shipped in gensim (LGPL-2.1)",
           "about 110 English Wikipedia articles (a shortened 2016 dump in gensim's test data), markup stripped",
           _gensim_file("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"), _wiki_units),
    Corpus("newsgroups", "gensim", "PyPI", "Usenet posts (20 Newsgroups, 1993), no licence stated; shipped in gensim",
           "200 Usenet posts from alt.atheism and sci.space, headers, quotes and signatures removed",
           _gensim_file("mini_newsgroup"), _news_units),
    Corpus("movie-reviews", "gensim", "PyPI", "research data (Pang & Lee sentence polarity, IMDB), shipped in gensim",
           "200 movie-review sentences and 10 IMDB reviews (lower case), a small sample",
           _gensim_file("pang_lee_polarity.cor", "alldata-id-10.txt"), _review_units),
    Corpus("linux-doc", "linux-doc", "Debian", "GPL-2.0",
           "the Linux kernel documentation (reStructuredText; translations, device-tree bindings and ABI "
           "listings left out): technical English",
           _debian("usr/share/doc/linux-doc-*/Documentation"), _linux_units),
    Corpus("python-doc", "python3-doc", "Debian", "PSF-2.0",
           "the Python documentation (HTML paragraphs; code, tables and indexes left out): technical English",
           _debian("usr/share/doc/python3.*/html"), _python_doc_units),
    Corpus("gcide", "dict-gcide", "Debian", "GPL-2.0-or-later",
           "GCIDE, the 1913 Webster's dictionary revised: definitions with literary quotations",
           _debian("usr/share/dictd/gcide.dict.dz"), _gcide_units),
    Corpus("wordnet", "wordnet-base", "Debian", "WordNet 3.0 licence (Princeton; permissive)",
           "WordNet 3.0 glosses with example sentences (117,000 synsets)",
           _debian("usr/share/wordnet"), _wordnet_units),
    Corpus("fortunes", "fortunes", "Debian", "BSD (fortune-mod); quotations by many authors",
           "the fortune cookie files (quotations, jokes, short stories; ASCII art left out)",
           _debian("usr/share/games/fortunes"), _fortune_units),
]}


# --- what is installed, the composite and the recipe's view ----------------------------------------

_said: set[str] = set()


def _say(line: str) -> None:
    """Say a status line (``edgekit: ...`` on stderr) once per process (several loads of one source repeat
    nothing)."""
    from edgekit.status import say

    if line not in _said:
        _said.add(line)
        say(line)


def installed_sources() -> list[str]:
    """Names of the sources whose files are on this machine, in table order."""
    return [name for name, c in CORPORA.items() if c.root() is not None]


def _source_documents(name: str) -> list[str]:
    corpus = CORPORA[name]
    if corpus.root() is None:
        _say(corpus.missing_line())
        return []
    return corpus.documents()


def mix_documents(seed: int = 0, words_per_source: int = MIX_WORDS_PER_SOURCE,
                  sources: Sequence[str] | None = None) -> list[tuple[str, str]]:
    """``(source, document)`` pairs from every installed source (or ``sources``), at most
    ``words_per_source`` words from each, chosen and shuffled together with ``seed``. Sources that are
    not installed are named in one line on stderr.

    >>> pairs = mix_documents(seed=0, words_per_source=20_000)  # doctest: +SKIP
    >>> sorted({s for s, _ in pairs})  # doctest: +SKIP
    ['gensim-lee', 'movie-reviews', 'newsgroups', 'wiki-sample']
    """
    names = list(CORPORA) if sources is None else list(sources)
    unknown = [n for n in names if n not in CORPORA]
    if unknown:
        raise InputError(f"unknown text source {unknown[0]!r}; allowed: {', '.join(CORPORA)}")
    if words_per_source < 1:
        raise InputError(f"words_per_source must be >= 1, not {words_per_source}")
    have = [n for n in names if CORPORA[n].root() is not None]
    missing = [n for n in names if n not in have]
    if not have:
        raise InputError(f"{MIX_NAME}: none of its text sources is installed ({', '.join(names)}); "
                         f"pip install gensim, or as root apt-get install the Debian packages (README)")
    if missing:
        pkgs = " ".join(CORPORA[n].package for n in missing)
        _say(f"{MIX_NAME}: using {', '.join(have)}; not installed: {', '.join(missing)} "
             f"(as root: apt-get install --no-install-recommends {pkgs}); skipped")
    pairs = [(n, d) for n in have for d in CORPORA[n].documents(seed, words_per_source)]
    random.Random(seed).shuffle(pairs)
    return pairs


def distill_passages(source: "str | Sequence[str]" = MIX_NAME, n: int | None = None, *, seed: int = 0,
                     min_words: int = 24, max_words: int = 200, exclude: Iterable[str] | None = None) -> list[str]:
    """Passages for distillation: the reader's passages of ``source`` (names or paths, as for
    ``--distill-data``) with pieces under ``min_words`` dropped and, unless ``exclude`` is given, no
    bbc-news validation or test article; ``n`` of them (all if None) in a seeded order.

    >>> extra = distill_passages("english-mix", n=4000, seed=0)  # doctest: +SKIP
    """
    if exclude is None:
        from .labelled import dataset_splits

        splits = dataset_splits("bbc-news", seed)
        exclude = list(splits["validation"].texts) + list(splits["test"].texts)
    texts = load_texts(source, min_words=min_words, max_words=max_words, exclude=exclude)
    texts = [t for t in texts if len(t.split()) >= min_words]
    rng = random.Random(seed)
    rng.shuffle(texts)
    return texts if n is None else texts[:n]


def _fingerprint(corpus: Corpus, root: Path) -> str:
    h = hashlib.sha256(f"{EXTRACT_VERSION} {corpus.name} {root}".encode())
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    for p in files:
        st = p.stat()
        h.update(f"{p} {st.st_size} {int(st.st_mtime)}\n".encode())
    return h.hexdigest()[:16]


def _counts_file() -> Path:
    from edgekit.paths import cache_dir

    return cache_dir() / "text_sources.json"


def text_sources_info(count: bool = False) -> list[dict]:
    """One row per text source: ``name``, ``installed``, ``registry``, ``package``, ``licence``,
    ``about``, ``passages`` and ``words`` (at the reader's default 24..200 words; counted when
    ``count`` is true, else taken from an earlier count of the same files, else None). Counting every
    installed source reads them all (about two minutes on 2 cores); the counts are cached.

    >>> rows = text_sources_info()
    >>> {"name", "installed", "passages", "words", "licence"} <= set(rows[0])
    True
    """
    try:
        cache = json.loads(_counts_file().read_text())
    except (OSError, ValueError):
        cache = {}
    rows, changed = [], False
    for name, corpus in CORPORA.items():
        root = corpus.root()
        row = {"name": name, "installed": root is not None, "registry": corpus.registry,
               "package": corpus.package, "licence": corpus.licence, "about": corpus.about,
               "passages": None, "words": None}
        if root is not None:
            key = _fingerprint(corpus, root)
            hit = cache.get(name)
            if hit and hit.get("key") == key:
                row.update(passages=hit["passages"], words=hit["words"])
            elif count:
                texts = load_texts(name)
                row.update(passages=len(texts), words=sum(len(t.split()) for t in texts))
                cache[name] = {"key": key, "passages": row["passages"], "words": row["words"]}
                changed = True
        rows.append(row)
    if changed:
        try:
            tmp = _counts_file().with_suffix(".tmp")
            tmp.write_text(json.dumps(cache, indent=1))
            tmp.replace(_counts_file())
        except OSError:
            pass  # a read-only cache only costs a recount
    return rows


def format_text_sources(rows: list[dict]) -> str:
    """The rows of :func:`text_sources_info` as a small table for ``edgekit info``.

    >>> print(format_text_sources([{"name": "wordnet", "installed": False, "registry": "Debian",
    ...     "package": "wordnet-base", "licence": "WordNet 3.0", "passages": None, "words": None}]))
    text source    installed   passages      words  package                  licence
    wordnet        no                 -          -  wordnet-base (Debian)    WordNet 3.0
    """
    lines = [f"{'text source':<14} {'installed':<9} {'passages':>10} {'words':>10}  {'package':<24} licence"]
    for r in rows:
        num = (lambda v: "-" if v is None else f"{v:,}")
        lines.append(f"{r['name']:<14} {'yes' if r['installed'] else 'no':<9} {num(r['passages']):>10} "
                     f"{num(r['words']):>10}  {r['package'] + ' (' + r['registry'] + ')':<24} {r['licence']}")
    if any(r["installed"] and r["passages"] is None for r in rows):
        lines.append("(passages and words of installed sources: edgekit info --count-text)")
    return "\n".join(lines)


def _register() -> None:
    for name, corpus in CORPORA.items():
        if name not in TEXT_SOURCES:
            register_text_source(name, lambda name=name: _source_documents(name),
                                 f"{corpus.about}; {corpus.registry} package {corpus.package}; {corpus.licence}")
    if MIX_NAME not in TEXT_SOURCES:
        register_text_source(MIX_NAME, lambda: [d for _, d in mix_documents()],
                             f"every installed source above, at most {MIX_WORDS_PER_SOURCE:,} words from each "
                             f"(seed 0), shuffled together")


_register()
