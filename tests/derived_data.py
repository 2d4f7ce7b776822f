"""Small labelled sets DERIVED from the built-in BBC News articles, for tests of sentence pairs and token
classification (no such set ships offline). The text is real; the labels are computed from it by rules stated
here, so they are honest but not a human annotation:

- pairs: two sentences; label ``same`` when both come from the same article, ``different`` otherwise;
- names (IOB2): ``B-NUM``/``I-NUM`` on a run of numbers (``1.5``, ``£20m``, ``2004``), ``B-NAME``/``I-NAME`` on
  a run of capitalised words that does not start the sentence (mostly people, places, companies), ``O``
  elsewhere;
- shapes (not IOB, scored by token accuracy): each word's shape: ``upper`` (capitalised), ``lower``,
  ``number`` or ``punct``.
"""
from __future__ import annotations

import csv
import json
import random
import re
from pathlib import Path

WORD = re.compile(r"[£$€]?\d[\d,.]*\w*|\w+(?:['’-]\w+)*|[^\w\s]")


def bbc_sentences(n_articles: int = 60, per_article: int = 6, min_words: int = 6, max_words: int = 30):
    """[(article index, sentence)] from the first ``n_articles`` articles of every topic, in a fixed order."""
    from edgekit.data.builtin import bbc_news

    texts, labels, _ = bbc_news()
    by_topic: dict[int, list[str]] = {}
    for t, y in zip(texts, labels):
        by_topic.setdefault(y, []).append(t)
    out = []
    per_topic = max(1, n_articles // len(by_topic))
    for y in sorted(by_topic):
        for a, text in enumerate(by_topic[y][:per_topic]):
            sentences = [s for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", text)
                         if min_words <= len(s.split()) <= max_words]
            out += [(y * 1000 + a, s) for s in sentences[1 : 1 + per_article]]  # [0] is often the headline
    return out


def words_of(sentence: str) -> list[str]:
    return WORD.findall(sentence)


def name_tags(words: list[str]) -> list[str]:
    """IOB2 tags by the rule in the module doc."""
    tags, prev = [], "O"
    for i, w in enumerate(words):
        if w[0] in "£$€" or w[0].isdigit():
            kind = "NUM"
        elif i > 0 and w[0].isupper() and w.isalpha() is not False and w[:1].isalpha():
            kind = "NAME"
        else:
            kind = None
        tag = "O" if kind is None else ("I-" if prev.endswith(kind) else "B-") + kind
        tags.append(tag)
        prev = tag
    return tags


def shape_tags(words: list[str]) -> list[str]:
    return ["number" if w[0].isdigit() or w[0] in "£$€" else "upper" if w[0].isupper()
            else "lower" if w[0].isalpha() else "punct" for w in words]


def write_tokens_jsonl(path: Path, n: int = 240, scheme: str = "names") -> Path:
    """``n`` BBC sentences as JSON Lines ``{"tokens": [...], "tags": [...]}`` with ``names`` or ``shapes`` tags."""
    rule = name_tags if scheme == "names" else shape_tags
    rows = [words_of(s) for _, s in bbc_sentences(n_articles=100, per_article=8)][:n]
    with open(path, "w", encoding="utf-8") as f:
        for words in rows:
            f.write(json.dumps({"tokens": words, "tags": rule(words)}) + "\n")
    return path


def write_pairs_csv(path: Path, n: int = 200, seed: int = 0) -> Path:
    """``n`` sentence pairs (half from one article, half from two) as CSV ``first,second,relation``."""
    sents = bbc_sentences(n_articles=100, per_article=6)
    by_article: dict[int, list[str]] = {}
    for a, s in sents:
        by_article.setdefault(a, []).append(s)
    articles = sorted(a for a, ss in by_article.items() if len(ss) >= 2)
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < n:
        a = rng.choice(articles)
        if len(rows) % 2 == 0:
            first, second = rng.sample(by_article[a], 2)
            label = "same"
        else:
            b = rng.choice([x for x in articles if x != a])
            first, second = rng.choice(by_article[a]), rng.choice(by_article[b])
            label = "different"
        if (first, second) not in seen:
            seen.add((first, second))
            rows.append({"first": first, "second": second, "relation": label})
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["first", "second", "relation"])
        w.writeheader()
        w.writerows(rows)
    return path


def tiny_model(dest: Path, num_labels: int, kind: str = "token", seed: int = 0) -> Path:
    """A 2-layer random BERT (hidden 64) with a token- or sequence-classification head, saved as a Hugging Face
    folder with the minilm-l6 (fast WordPiece) tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertForTokenClassification

    from edgekit.zoo import _minilm_path

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(_minilm_path())
    cfg = BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=128, max_position_embeddings=512, num_labels=num_labels)
    model = (BertForTokenClassification if kind == "token" else BertForSequenceClassification)(cfg).eval()
    model.save_pretrained(dest, safe_serialization=True)
    tok.save_pretrained(dest)
    return dest
