"""Plain English paragraphs out of marked-up text: reStructuredText, Sphinx HTML, MediaWiki, Usenet
posts, the GCIDE dictionary, WordNet glosses, fortune files.

Every reader returns a list of paragraphs (white space collapsed) and keeps only what
:func:`is_prose` accepts, so code, tables, headers, lists of names and markup residue stay out.
Standard library only: the corpora in :mod:`edgekit.data.corpora` read installed files with these.

>>> rst_paragraphs("Title\\n=====\\n\\nThe ``read`` call blocks until data arrives; see :c:func:`poll`.\\n\\n    int x = 1;\\n")
['The read call blocks until data arrives; see poll.']
"""
from __future__ import annotations

import bz2
import html
import re
import xml.etree.ElementTree as ET
from html.parser import HTMLParser
from pathlib import Path

_LEAD = "(\"'“‘[«"
_TRAIL = ".,;:!?)\"'”’]»"
_WORDLIKE = re.compile(r"[A-Za-z0-9]+(?:['’\-./][A-Za-z0-9]+)*")
_CODE_CHARS = set("{}<>=_\\|#$@^~[]*`")


def collapse(text: str) -> str:
    """White space collapsed to single spaces."""
    return " ".join(text.split())


def is_prose(text: str, min_words: int = 4, min_word_share: float = 0.8) -> bool:
    """True when ``text`` reads as English sentences: at least ``min_words`` tokens, most of them
    words or numbers (not identifiers, paths or operators), few code characters, almost all ASCII.

    >>> is_prose("The scheduler picks the next task to run."), is_prose("x = foo(bar_baz[0]) + 1;")
    (True, False)
    """
    toks = text.split()
    if len(toks) < min_words:
        return False
    words = [w for w in (t.lstrip(_LEAD).rstrip(_TRAIL) for t in toks) if _WORDLIKE.fullmatch(w)]
    if len(words) < min_word_share * len(toks) or sum(not w.isdigit() for w in words) < 0.5 * len(toks):
        return False
    code = sum(1 for c in text if c in _CODE_CHARS)
    foreign = sum(1 for c in text if ord(c) > 0x2FF)  # beyond Latin: another script
    return code <= 0.02 * len(text) and foreign <= 0.01 * len(text) and any(t.islower() for t in toks)


def _keep(paragraphs, min_words: int = 4) -> list[str]:
    out = []
    for p in paragraphs:
        p = collapse(p)
        if is_prose(p, min_words):
            out.append(p)
    return out


# --- reStructuredText (kernel documentation) -------------------------------------------------------

_ADORNMENT = re.compile(r"([=\-~^*+#`'\"_:.])\1{2,}")  # section over/underlines, simple-table rules
_BULLET = re.compile(r"(?:[-*+•]|\d+[.)]|#\.|\(\w{1,3}\)|[a-zA-Z][.)])\s+")
_RST_INLINE = [
    (re.compile(r":[\w:+-]+:`~?!?([^`<]*?)\s*(?:<[^`>]*>)?`"), r"\1"),  # :role:`text <target>`
    (re.compile(r"`([^`<]+?)\s*<[^`>]*>`__?"), r"\1"),               # `text <url>`_
    (re.compile(r"``([^`]+)``"), r"\1"),                              # ``literal``
    (re.compile(r"`([^`]+)`_{0,2}"), r"\1"),                          # `ref`_ / `interpreted`
    (re.compile(r"\s?\[(?:#\w*|\d+|\*)\]_"), ""),                     # footnote references
    (re.compile(r"\*\*([^*]+)\*\*"), r"\1"),
    (re.compile(r"(?<![\w*])\*([^*\s][^*]*)\*(?![\w*])"), r"\1"),
    (re.compile(r"\|([\w -]+)\|"), r"\1"),                            # |substitution|
    (re.compile(r"\b(\w+)__?(?=[\s.,;:)]|$)"), r"\1"),                 # reference_
    (re.compile(r"\\ ?"), ""),
]


def _runs(lines, is_break) -> list[str]:
    """Join runs of stripped lines into paragraphs; a line for which ``is_break`` holds ends a run and is
    dropped."""
    paragraphs, cur = [], []
    for line in lines:
        s = line.strip()
        if is_break(s):
            if cur:
                paragraphs.append(" ".join(cur))
                cur = []
        else:
            cur.append(s)
    if cur:
        paragraphs.append(" ".join(cur))
    return paragraphs


def _rst_inline(text: str) -> str:
    for pattern, repl in _RST_INLINE:
        text = pattern.sub(repl, text)
    return text


def rst_paragraphs(text: str) -> list[str]:
    """Paragraphs and list items of a reStructuredText (or plain-text manual) file. Dropped: titles,
    directives and their bodies, comments, literal and indented blocks, tables, field lists; a
    paragraph's trailing ``::`` becomes ``:``.

    >>> rst_paragraphs("- first **item** of a list of three\\n- second item is here too\\n\\n.. note::\\n\\n   skipped")
    ['first item of a list of three', 'second item is here too']
    """
    lines = text.replace("\t", "        ").splitlines()
    blocks: list[list[str]] = [[]]
    for line in lines:
        if line.strip():
            blocks[-1].append(line.rstrip())
        elif blocks[-1]:
            blocks.append([])
    out: list[str] = []
    for block in blocks:
        if not block or block[0][:1].isspace():
            continue  # literal blocks, directive bodies, block quotes, nested list content
        first = block[0]
        if first.startswith(("..", "+-", "+=", "|", ":", ">>>", "$ ", "# ")):
            continue
        if any(_ADORNMENT.fullmatch(line.strip()) for line in block):
            continue  # a titled block or a simple table
        items: list[list[str]] = []
        for line in block:
            if not line[:1].isspace() and (_BULLET.match(line) or not items):
                bullet = _BULLET.match(line)
                items.append([line[bullet.end():] if bullet else line])
            elif line[:1].isspace() and len(block) > 1 and not _BULLET.match(first) and len(items) == 1 \
                    and len(items[0]) == 1 and items[0][0] == first:
                items[0] = [line]  # definition list: drop the term, keep the definition
            else:
                items[-1].append(line)
        for item in items:
            para = _rst_inline(collapse(" ".join(item)))
            if para.endswith("::"):
                para = para[:-2].rstrip() + (":" if not para[:-2].endswith(" ") else "")
            out.append(para)
    return _keep(out)


# --- Sphinx HTML (Python documentation) ------------------------------------------------------------

class _SphinxText(HTMLParser):
    """Collects the text of ``<p>`` elements inside the page body, outside code, tables and links
    that only mark headers."""

    SKIP = {"pre", "table", "script", "style", "nav", "h1", "h2", "h3", "h4", "h5", "h6"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._body = 0      # depth inside the main body div
        self._skip = 0      # depth inside something skipped
        self._in_p = False
        self._buf: list[str] = []
        self._stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        mark = ""
        if tag == "div" and (a.get("role") == "main" or "body" in (a.get("class") or "").split()):
            mark = "body"
        elif tag in self.SKIP or (tag == "a" and "headerlink" in (a.get("class") or "")):
            mark = "skip"
        elif tag == "div" and "highlight" in (a.get("class") or ""):
            mark = "skip"
        if tag in {"br", "img", "hr", "input", "meta", "link", "wbr"}:
            return
        self._stack.append(mark)
        if mark == "body":
            self._body += 1
        elif mark == "skip":
            self._skip += 1
        if tag == "p" and self._body and not self._skip:
            self._in_p, self._buf = True, []

    def handle_endtag(self, tag):
        if tag in {"br", "img", "hr", "input", "meta", "link", "wbr"} or not self._stack:
            return
        if tag == "p" and self._in_p:
            self.paragraphs.append("".join(self._buf))
            self._in_p = False
        mark = self._stack.pop()
        if mark == "body":
            self._body -= 1
        elif mark == "skip":
            self._skip -= 1

    def handle_data(self, data):
        if self._in_p and not self._skip:
            self._buf.append(data)


def html_paragraphs(text: str) -> list[str]:
    """The ``<p>`` paragraphs of a Sphinx-built HTML page's body (code, tables, headers left out).

    >>> html_paragraphs('<div role="main"><h1>T</h1><p>Sets the <code>mode</code> of every new file here.</p><pre>x=1</pre></div>')
    ['Sets the mode of every new file here.']
    """
    parser = _SphinxText()
    parser.feed(text)
    parser.close()
    return _keep(parser.paragraphs)


# --- MediaWiki XML dump (Wikipedia) ----------------------------------------------------------------

_WIKI_DROP = [
    re.compile(r"<!--.*?-->", re.S),
    re.compile(r"<ref[^>/]*/>", re.S),
    re.compile(r"<(ref|math|gallery|timeline|syntaxhighlight|source|code|pre|score|chem|imagemap)\b.*?</\1\s*>",
               re.S | re.I),
]
_WIKI_NESTED = [re.compile(r"\{\{[^{}]*\}\}"), re.compile(r"\{\|(?:(?!\{\||\|\}).)*\|\}", re.S)]
_WIKI_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_WIKI_EXTERNAL = re.compile(r"\[(?:https?|ftp)://[^\s\]]+\s*([^\]]*)\]")
_WIKI_ENDS = ("references", "external links", "see also", "further reading", "notes", "bibliography",
              "sources", "footnotes", "citations")


def _wiki_link(m: re.Match) -> str:
    target, _, label = m.group(1).partition("|")
    if ":" in target and not target.startswith(":"):
        return ""  # File:, Image:, Category:, interlanguage links
    return (label.rpartition("|")[2] if label else target).strip()


def wiki_paragraphs(wikitext: str) -> list[str]:
    """Prose paragraphs of one article's wikitext: templates, tables, references, files, categories,
    headings and list lines removed; links become their text; stops at "References", "See also" and
    the like.

    >>> wiki_paragraphs("'''Anarchism''' is a [[political philosophy|philosophy]] that rejects rulers.{{cite|x}}<ref>a</ref>\\n\\n== See also ==\\n* [[Freedom]]")
    ['Anarchism is a philosophy that rejects rulers.']
    """
    text = html.unescape(wikitext)
    for pattern in _WIKI_DROP:
        text = pattern.sub("", text)
    for pattern in _WIKI_NESTED:  # innermost first until nothing nests
        while True:
            text, n = pattern.subn("", text)
            if not n:
                break
    while True:
        text, n = _WIKI_LINK.subn(_wiki_link, text)
        if not n:
            break
    text = re.sub(r"\[\[(?:File|Image):[^\n]*", "", text)  # a file link left unbalanced
    text = _WIKI_EXTERNAL.sub(r"\1", text).replace("[[", "").replace("]]", "")
    text = re.sub(r"(?:https?|ftp)://\S+", "", text)
    text = re.sub(r"'{2,}", "", text)
    text = re.sub(r"</?[a-zA-Z][^>]*>", "", text)
    lines = []
    for line in text.splitlines():
        heading = re.fullmatch(r"(=+)\s*(.*?)\s*\1", line.strip())
        if heading and heading.group(2).lower() in _WIKI_ENDS:
            break
        lines.append("" if heading else line)  # a heading ends a paragraph like a blank line
    paragraphs = _runs(lines, lambda s: not s or s[0] in "*#:;|!{}" or s.startswith("__"))
    return _keep(re.sub(r"\(\s*[,;]?\s*\)", "", p) for p in paragraphs)


def wiki_dump_articles(path: Path) -> list[list[str]]:
    """The paragraphs of every main-namespace, non-redirect article in a ``.xml.bz2`` MediaWiki dump,
    in dump order (articles with no prose left are dropped)."""
    articles = []
    with bz2.open(path, "rb") as f:
        for _, el in ET.iterparse(f, events=("end",)):
            if el.tag.rpartition("}")[2] != "page":
                continue
            ns = redirect = None
            text = ""
            for child in el.iter():
                tag = child.tag.rpartition("}")[2]
                if tag == "ns":
                    ns = child.text
                elif tag == "redirect":
                    redirect = True
                elif tag == "text":
                    text = child.text or ""
            if ns == "0" and not redirect and not text.lstrip().lower().startswith("#redirect"):
                paragraphs = wiki_paragraphs(text)
                if paragraphs:
                    articles.append(paragraphs)
            el.clear()
    return articles


# --- Usenet posts (20 Newsgroups) ------------------------------------------------------------------

_ATTRIBUTION = re.compile(r"(writes|wrote|says|said)\s*:\s*$|^in article\b|^on .* wrote", re.I)


def news_paragraphs(post: str) -> list[str]:
    """The author's own prose of a Usenet post: headers, quoted lines, attributions and the signature
    removed.

    >>> news_paragraphs("From: a@b\\nSubject: x\\n\\nIn article <1@b> c@d writes:\\n> old text quoted here\\nI think the launch window moves to May.\\n-- \\nsig")
    ['I think the launch window moves to May.']
    """
    _, sep, body = post.partition("\n\n")
    body = body if sep else post
    body = re.split(r"\n--\s*\n|\n[-=_]{5,}\s*\n", body, maxsplit=1)[0]  # signature
    paragraphs = _runs(body.splitlines(), lambda s: not s or s[0] in ">|:}#" or bool(_ATTRIBUTION.search(s)))
    return _keep(paragraphs, min_words=6)


# --- dictionaries and quotations -------------------------------------------------------------------

_GCIDE_HEAD = re.compile(r"^(\S[^\\\n]*?)\s*\\[^\\\n]*\\")
_GCIDE_SOURCE = re.compile(r"\[(?:1913 Webster|WordNet[^\]]*|PJC|Century Dict\.|Webster 1913 Suppl\.|[^\]]{0,30}"
                           r"(?:Webster|Dict\.|Cyc\.)[^\]]{0,20})\]")
_GCIDE_AUTHOR = re.compile(r"--[A-Z][^\"\n]*")
_BRACKETS = re.compile(r"\[[^\[\]]*\]")


def gcide_entries(text: str) -> list[str]:
    """One paragraph per GCIDE (dictd text format) entry: ``Headword: definitions and quotations``,
    pronunciation, etymology, sources, field labels and author attributions removed.

    >>> gcide_entries('Abdication \\\\Ab`di*ca"tion\\\\, n. [L. abdicatio.]\\n   The act of abdicating; the renunciation\\n   of a high office.\\n   [1913 Webster]\\n')
    ['Abdication: The act of abdicating; the renunciation of a high office.']
    """
    out = []
    for record in re.split(r"\n(?=\S)", text.replace("\ufffd", "")):
        head = _GCIDE_HEAD.match(record)
        if not head or "[WordNet" in record:
            continue  # WordNet's senses are a source of their own
        word = head.group(1).strip()
        body = record[head.end():]
        body = re.sub(r"\\[^\\\n]{1,80}\\", "", _GCIDE_SOURCE.sub("", body))  # further headwords' pronunciations
        body = "\n".join(_GCIDE_AUTHOR.sub("", line) for line in body.splitlines())
        body = collapse(body)
        while True:
            body, n = _BRACKETS.subn("", body)
            if not n:
                break
        body = re.sub(r"\([^()]*\)", lambda m: "" if len(m.group(0)) < 24 else m.group(0), body)
        body = body.replace("{", "").replace("}", "")
        # part of speech and inflections before the first sense, e.g. ", n.; pl. Abdominals."
        body = re.sub(r"^[\s,;]*(?:(?:[A-Za-z]{1,5}\.|[A-Z][a-z]+,?|&|or|;|,)\s*)*?(?=\d+\.\s|[A-Z\"])", "", body)
        body = re.sub(r"(?:^|\s)\d+\.\s", " ", body)
        body = re.sub(r"\s+([,;:.])", r"\1", collapse(body)).strip(" ,;")
        if word and body:
            out.append(f"{word}: {body}")
    return _keep(out)


def wordnet_glosses(data: str) -> list[tuple[int, str]]:
    """``(lexicographer file number, "word, synonym: gloss; "example"")`` for every synset line of a
    WordNet ``data.*`` file (licence header lines skipped).

    >>> wordnet_glosses('00217499 04 n 01 disaster 0 001 @ 00217014 n 0000 | an act that has disastrous consequences  ')
    [(4, 'disaster: an act that has disastrous consequences')]
    """
    out = []
    for line in data.splitlines():
        if not line[:1].isdigit() or " | " not in line:
            continue
        fields, _, gloss = line.partition(" | ")
        parts = fields.split()
        n = int(parts[3], 16)
        words = [re.sub(r"\([a-z]+\)$", "", w).replace("_", " ") for w in parts[4:4 + 2 * n:2]]
        text = f"{', '.join(words)}: {collapse(gloss)}"
        if is_prose(text, min_words=4):
            out.append((int(parts[1]), text))
    return out


def fortune_paragraphs(text: str) -> list[str]:
    """The entries of a ``%``-separated fortune file, attribution lines removed, keeping those that
    read as prose (no ASCII art, code or dialogue scripts).

    >>> fortune_paragraphs("A visit to a strange place will bring fresh work.\\n%\\n    ___\\n   (o o)\\n%\\nHe who hesitates is lost.\\n\\t\\t-- Proverb\\n")
    ['A visit to a strange place will bring fresh work.', 'He who hesitates is lost.']
    """
    out = []
    for entry in re.split(r"^%\s*$", text, flags=re.M):
        lines = [ln for ln in entry.splitlines() if not re.match(r"\s*(--|―|~~)\s*\S", ln)]
        out.append(" ".join(lines).replace("``", '"').replace("''", '"'))  # TeX-style quotes
    return _keep(out)
