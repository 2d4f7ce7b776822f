"""The named English text sources (edgekit/data/corpora.py) and the markup strippers they use
(edgekit/data/prose.py): real installed files where present, small hand-made ones otherwise."""
from __future__ import annotations

import collections
import gzip
import json
import re

import pytest

from edgekit.data import TEXT_SOURCES, load_dataset, load_texts, register_text_source, split_passages
from edgekit.data import corpora, prose
from edgekit.errors import InputError

# Words that English prose cannot avoid; a passage without any of them is not running text.
FUNCTION_WORDS = {"the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "with", "be", "on", "by",
                  "this", "are", "or", "an", "not", "from", "at", "which", "you", "he", "was", "his", "have", "i"}
# Markup that must never survive extraction, per format.
RESIDUE = re.compile(r"\{\{|\}\}|\[\[|\]\]|``|:\w+:`|</?(?:p|div|span|a|code|ref)\b|^\.\. [\w-]+::|&\w+;"
                     r'|\\\w*[*"`]\w*\\')  # the last: a GCIDE pronunciation such as \Ab*do"men\ 


@pytest.fixture
def fresh(monkeypatch):
    """Forget what was already said and read in this process."""
    monkeypatch.setattr(corpora, "_said", set())
    corpora._read_documents.cache_clear()
    yield
    corpora._read_documents.cache_clear()


@pytest.fixture
def no_debian(monkeypatch, tmp_path, fresh):
    """A machine without any Debian text package."""
    monkeypatch.setattr(corpora, "SYSTEM_ROOT", tmp_path / "empty-root")
    monkeypatch.delenv(corpora.DEBIAN_ROOT_ENV, raising=False)


def _words(texts) -> int:
    return sum(len(t.split()) for t in texts)


# --- every installed source ------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(corpora.CORPORA))
def test_installed_source_gives_english_passages_deterministically(name, fresh):
    corpus = corpora.CORPORA[name]
    if corpus.root() is None:
        pytest.skip(corpus.missing_line())
    cap = 12_000
    docs = corpus.documents(seed=3, max_words=cap)
    assert 0 < _words(docs) <= cap
    assert _words(docs) >= min(cap // 2, 5_000), "a source should hold thousands of words"
    passages = [p for d in docs for p in split_passages(d, 24, 200)]
    assert passages and all(len(p.split()) <= 200 for p in passages)
    short = [p for p in passages if len(p.split()) < 24]
    assert len(short) <= len(docs)  # only a document's last piece may fall short
    words = [w.strip(".,;:!?\"'()").lower() for p in passages for w in p.split()]
    assert sum(w in FUNCTION_WORDS for w in words) >= 0.12 * len(words), "not English running text"
    assert sum(not (set(p.lower().split()) & FUNCTION_WORDS) for p in passages) <= 0.05 * len(passages)
    assert not [p for p in passages if RESIDUE.search(p)][:3]
    assert len({" ".join(d.split()) for d in docs}) == len(docs)  # no repeated documents

    corpora._read_documents.cache_clear()
    assert corpus.documents(seed=3, max_words=cap) == docs       # the same seed reads the same text
    assert corpus.documents(seed=4, max_words=cap) != docs       # another seed another choice or order


def test_gensim_sources_are_always_there():
    """gensim is a dependency: without root, these four keep distillation going."""
    assert {"gensim-lee", "wiki-sample", "newsgroups", "movie-reviews"} <= set(corpora.installed_sources())


def test_lee_through_the_reader():
    texts = load_texts("gensim-lee")
    assert 400 < len(texts) < 600 and len(set(texts)) == len(texts)
    assert all(len(t.split()) <= 200 for t in texts)
    assert any("Hill Top" in t for t in texts)  # the corpus' first article, about a bushfire


def test_every_source_is_registered_with_its_licence():
    for name in list(corpora.CORPORA) + [corpora.MIX_NAME]:
        assert name in TEXT_SOURCES
    assert "GPL-2.0" in TEXT_SOURCES["linux-doc"].about and "PSF" in TEXT_SOURCES["python-doc"].about


# --- a source that is missing ----------------------------------------------------------------------

def test_missing_debian_source_is_one_line_and_the_others_run(no_debian, capsys):
    texts = load_texts(["linux-doc", "gensim-lee"])
    assert texts == load_texts("gensim-lee")
    load_texts(["linux-doc", "movie-reviews"])
    err = capsys.readouterr().err.splitlines()
    assert err == ["edgekit: linux-doc: not installed (Debian package linux-doc, needs root); skipped"]


def test_missing_source_alone_is_an_input_error(no_debian, capsys):
    with pytest.raises(InputError, match="no text in wordnet"):
        load_texts("wordnet")
    assert capsys.readouterr().err.strip() == "edgekit: wordnet: not installed (Debian package wordnet-base, needs root); skipped"


def test_missing_gensim_names_pip(monkeypatch, fresh, capsys):
    monkeypatch.setattr(corpora, "_gensim_data", lambda: None)
    assert corpora.CORPORA["wiki-sample"].documents() == []
    with pytest.raises(InputError):
        load_texts("wiki-sample")
    assert "wiki-sample: not installed (PyPI package gensim, pip install gensim); skipped" in capsys.readouterr().err


def test_extracted_package_folder_without_root(monkeypatch, tmp_path, no_debian):
    """``dpkg-deb -x fortunes.deb DIR`` + EDGEKIT_DEBIAN_ROOT=DIR: a user without root gets the source."""
    folder = tmp_path / "debs" / "usr" / "share" / "games" / "fortunes"
    folder.mkdir(parents=True)
    (folder / "wisdom").write_text("A journey of a thousand miles begins with a single step.\n\t\t-- Lao Tzu\n%\n"
                                   "He who laughs last thinks slowest of all the people in the room.\n%\n")
    (folder / "art").write_text("   ( o o )\n    \\_-_/\n%\n")
    (folder / "wisdom.dat").write_bytes(b"\x00\x01")
    assert corpora.CORPORA["fortunes"].root() is None
    monkeypatch.setenv(corpora.DEBIAN_ROOT_ENV, str(tmp_path / "debs"))
    assert corpora.CORPORA["fortunes"].root() == folder
    assert load_texts("fortunes", min_words=5) == [
        "A journey of a thousand miles begins with a single step.",
        "He who laughs last thinks slowest of all the people in the room."]


# --- the composite ---------------------------------------------------------------------------------

def test_mix_caps_every_source_and_takes_all_installed(fresh):
    cap = 4_000
    pairs = corpora.mix_documents(seed=1, words_per_source=cap)
    per = collections.Counter()
    for source, doc in pairs:
        per[source] += len(doc.split())
    assert set(per) == set(corpora.installed_sources())
    assert all(0 < w <= cap for w in per.values())
    big = [s for s in per if s != "movie-reviews"]  # every other source holds more than the cap
    assert all(per[s] >= cap * 0.8 for s in big)
    assert len({s for s, _ in pairs[:len(per) * 3]}) > 1  # shuffled together, not one source after another

    assert corpora.mix_documents(seed=1, words_per_source=cap) == pairs
    assert corpora.mix_documents(seed=2, words_per_source=cap) != pairs


def test_mix_without_debian_says_one_line(no_debian, capsys):
    pairs = corpora.mix_documents(seed=0, words_per_source=2_000)
    assert {s for s, _ in pairs} == {"gensim-lee", "wiki-sample", "newsgroups", "movie-reviews"}
    corpora.mix_documents(seed=0, words_per_source=2_000)
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1
    assert err[0].startswith("edgekit: english-mix: using gensim-lee, wiki-sample, newsgroups, movie-reviews; "
                             "not installed: linux-doc, python-doc, gcide, wordnet, fortunes")
    assert err[0].endswith("skipped") and "apt-get install --no-install-recommends linux-doc python3-doc" in err[0]


def test_mix_with_nothing_installed_is_an_input_error(no_debian, monkeypatch):
    monkeypatch.setattr(corpora, "_gensim_data", lambda: None)
    with pytest.raises(InputError, match="none of its text sources is installed"):
        corpora.mix_documents()
    with pytest.raises(InputError, match="unknown text source 'nope'"):
        corpora.mix_documents(sources=["nope"])


def test_distill_passages_limits_seed_and_no_repeats():
    both = ["gensim-lee", "newsgroups"]
    a = corpora.distill_passages(both, n=300, seed=5)
    assert len(a) == 300 and len(set(a)) == 300
    assert all(24 <= len(p.split()) <= 200 for p in a)
    assert corpora.distill_passages(both, n=300, seed=5) == a
    assert corpora.distill_passages(both, n=300, seed=6) != a
    assert len(corpora.distill_passages(both)) > 800  # n=None: all of them
    small = corpora.distill_passages("gensim-lee", min_words=50, max_words=80)
    assert small and all(50 <= len(p.split()) <= 80 for p in small)


def test_distill_passages_never_returns_bbc_test_text(monkeypatch):
    test_article = min(load_dataset("bbc-news", "test").texts, key=len)
    monkeypatch.setattr("edgekit.data.unlabelled.TEXT_SOURCES", dict(TEXT_SOURCES))
    other = "An unrelated passage about the weather in the hills, long enough to count as one passage here."
    register_text_source("leaky", lambda: [test_article, other])
    got = corpora.distill_passages("leaky", min_words=5, max_words=5_000)
    assert got == [other]
    assert test_article in load_texts("leaky", min_words=5, max_words=5_000)  # the reader alone keeps it


# --- edgekit info ----------------------------------------------------------------------------------

def test_info_rows_count_once_and_cache(monkeypatch, tmp_path, no_debian):
    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(corpora, "CORPORA", {n: corpora.CORPORA[n] for n in ("gensim-lee", "linux-doc")})
    rows = corpora.text_sources_info()
    assert [(r["name"], r["installed"], r["passages"]) for r in rows] == [("gensim-lee", True, None),
                                                                          ("linux-doc", False, None)]
    assert corpora.format_text_sources(rows).endswith("(passages and words of installed sources: edgekit info "
                                                      "--count-text)")
    counted = corpora.text_sources_info(count=True)
    lee = counted[0]
    assert lee["passages"] == len(load_texts("gensim-lee")) and lee["words"] == _words(load_texts("gensim-lee"))
    assert corpora.text_sources_info()[0]["passages"] == lee["passages"]  # from the cache, no reading
    table = corpora.format_text_sources(counted)
    assert re.search(r"^gensim-lee\s+yes\s+[\d,]+\s+[\d,]+\s+gensim \(PyPI\)", table, re.M)
    assert re.search(r"^linux-doc\s+no\s+-\s+-\s+linux-doc \(Debian\)\s+GPL-2.0$", table, re.M)
    assert "--count-text" not in table  # every installed source is counted


def test_cli_info_count_text_counts(monkeypatch, tmp_path, no_debian, capsys):
    from edgekit.cli import main

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(corpora, "CORPORA", {n: corpora.CORPORA[n] for n in ("gensim-lee",)})
    assert main(["info", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["text_sources"][0]["words"] is None
    assert main(["info", "--count-text"]) == 0
    out = capsys.readouterr().out
    words = _words(load_texts("gensim-lee"))
    assert re.search(rf"^gensim-lee\s+yes\s+[\d,]+\s+{words:,}\s", out, re.M), out


# --- the markup strippers --------------------------------------------------------------------------

def test_rst_keeps_paragraphs_and_items_only():
    text = """\
.. SPDX-License-Identifier: GPL-2.0

=============
Block devices
=============

The block layer queues requests and hands them to the driver, see :ref:`blk-mq <blk-mq>`
and ``struct request``. Read `the FAQ <https://example.org>`_ first::

    echo 1 > /sys/block/sda/queue/nomerges

Limits
------

- **max_sectors** caps the size of one request
  in units of 512 bytes.
- a second item that is long enough to count

.. note::
   Skipped directive body text here.

+-------+-------+
| a     | b     |
+-------+-------+

=====  =====
col1   col2
=====  =====
"""
    assert prose.rst_paragraphs(text) == [
        "The block layer queues requests and hands them to the driver, see blk-mq and struct request. "
        "Read the FAQ first:",
        "max_sectors caps the size of one request in units of 512 bytes.",
        "a second item that is long enough to count",
    ]


def test_html_keeps_body_paragraphs_only():
    page = ('<html><body><div class="related"><p>Navigation links are here today</p></div>'
            '<div class="body" role="main"><h1>os<a class="headerlink" href="#">¶</a></h1>'
            '<p>This module provides a <em>portable</em> way of using operating system dependent'
            ' functionality.</p><div class="highlight"><pre><span>import</span> os</pre></div>'
            '<table><tr><td><p>Cell text is not prose at all here</p></td></tr></table>'
            '<dl><dd><p>Return the name of the &amp; current working directory.</p></dd></dl></div></body></html>')
    assert prose.html_paragraphs(page) == [
        "This module provides a portable way of using operating system dependent functionality.",
        "Return the name of the & current working directory."]


def test_wiki_markup_is_stripped():
    text = """{{Infobox person|name=X|{{nested|y}}}}
'''Ada Lovelace''' (1815–1852) was an English [[mathematician]] and [[Writer|writer]],<ref name="a">Cite</ref> chiefly known for her work on [[Charles Babbage]]'s [[Analytical Engine|proposed engine]].[[File:Ada.jpg|thumb|A [[portrait]] of Ada]]
{| class="wikitable"
| a || b
|}
== Early life ==
She was the only legitimate child of the poet [http://example.org Lord Byron] and his wife.<ref>x</ref>
* A list line that is dropped from the text
[[Category:Mathematicians]]
== References ==
Some reference text that must not appear in output.
"""
    assert prose.wiki_paragraphs(text) == [
        "Ada Lovelace (1815–1852) was an English mathematician and writer, chiefly known for her work on "
        "Charles Babbage's proposed engine.",
        "She was the only legitimate child of the poet Lord Byron and his wife."]


def test_news_post_keeps_the_authors_own_words():
    post = ("From: a@b.edu\nSubject: Re: launch\nLines: 9\n\nIn article <1@x> c@d (C) writes:\n"
            ">Quoted text from the earlier post goes here.\n>more quote\n\n"
            "The shuttle launch slipped again because of the weather over the Cape.\n"
            "I expect it to fly next week.\n\n-- \nJohn | Sig line with ascii |\n")
    assert prose.news_paragraphs(post) == [
        "The shuttle launch slipped again because of the weather over the Cape. I expect it to fly next week."]


def test_gcide_wordnet_fortunes():
    entry = ('Abate \\A*bate"\\, v. t. [OF. abatre. See {Batter}.]\n   1. To reduce in amount or size; to lessen.'
             '\n      [1913 Webster]\n\n            The fury of the storm abated.         --Shak.\n'
             '      [1913 Webster]\n\nAccelerated \\Ac*cel"er*at`ed\\ adj.\n   caused to move faster\n'
             '   [WordNet 1.5]\n')
    assert prose.gcide_entries(entry) == ["Abate: To reduce in amount or size; to lessen. The fury of the storm abated."]
    line = ("02084071 05 n 02 dog 0 domestic_dog 0 001 @ 02083346 n 0000 | a member of the genus Canis; "
            '"the dog barked all night"  ')
    assert prose.wordnet_glosses("  1 This software and database is provided\n" + line) == [
        (5, 'dog, domestic dog: a member of the genus Canis; "the dog barked all night"')]
    assert prose.fortune_paragraphs("x = y + z; /* not prose */\n%\nBe kind, for everyone you meet is fighting"
                                    " a hard battle.\n\t\t-- Plato\n") == [
        "Be kind, for everyone you meet is fighting a hard battle."]


def test_is_prose():
    assert prose.is_prose("The kernel schedules the next runnable task when the current one blocks.")
    assert not prose.is_prose("static int foo(struct bar *b) { return b->x; }")
    assert not prose.is_prose("В начале июля, в чрезвычайно жаркое время, под вечер")
    assert not prose.is_prose("Too short")


@pytest.mark.slow
def test_full_mix_through_the_reader():
    texts = load_texts("english-mix")
    assert len(texts) > 3_000 and len(set(texts)) == len(texts)
    assert all(len(t.split()) <= 200 for t in texts)
    gz = corpora.CORPORA["gcide"].root()
    if gz is not None:  # the dictionary reads as gzip (dictzip) and its entries parse
        with gzip.open(gz, "rt", encoding="utf-8", errors="replace") as f:
            assert "Webster" in f.read(20_000)
