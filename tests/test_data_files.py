"""Your own data: every file format the reader takes, its splits and labels, and every bad input."""
from __future__ import annotations

import csv
import json
import tempfile
from collections import Counter
from pathlib import Path

import pytest

from edgekit.data import (DataSpec, dataset_splits, load_dataset, load_texts, load_token_dataset, split_passages,
                          tokenize, tokenize_words)
from edgekit.errors import InputError

QUEUES = ("outage", "billing", "spam")  # deliberately not sorted


def _tickets(per_class: int = 10) -> list[tuple[str, str]]:
    """(body, queue) rows, interleaved by class, every body unique."""
    return [(f"ticket {i} about {q}: the customer writes sentence number {i}", q)
            for i in range(per_class) for q in QUEUES]


def _write_csv(path: Path, header, rows, delimiter=",") -> Path:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, delimiter=delimiter)
        w.writerow(header)
        w.writerows(rows)
    return path


def _write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _source_labels(parts) -> dict[str, str]:
    return {t: p.label_names[y] for p in parts.values() for t, y in zip(p.texts, p.labels)}


# ---------------------------------------------------------------- formats

def test_csv_with_string_labels_and_a_text_column_not_called_text(tmp_path):
    path = _write_csv(tmp_path / "tickets.csv", ["id", "body", "queue"],
                      [(i, body, q) for i, (body, q) in enumerate(_tickets())])
    spec = DataSpec(str(path), text_column="body", label_column="queue")
    parts = dataset_splits(spec, seed=0)
    assert [len(parts[s]) for s in ("train", "validation", "test")] == [21, 3, 6]
    for p in parts.values():  # names sorted, the same for every split
        assert p.label_names == ("billing", "outage", "spam") and p.pairs is None and p.name == str(path)
        assert p.id2label == {0: "billing", 1: "outage", 2: "spam"}
    # stratified: 7 / 1 / 2 of each class
    assert Counter(parts["train"].labels) == {0: 7, 1: 7, 2: 7}
    assert Counter(parts["validation"].labels) == {0: 1, 1: 1, 2: 1}
    assert Counter(parts["test"].labels) == {0: 2, 1: 2, 2: 2}
    # every text keeps its own label, and every row is in exactly one split
    assert _source_labels(parts) == dict(_tickets())
    assert sum(len(p) for p in parts.values()) == len({t for p in parts.values() for t in p.texts}) == 30
    # seeded: same seed same split, another seed another split; load_dataset is a view of the same
    assert load_dataset(spec, "test", seed=0).texts == parts["test"].texts
    assert load_dataset(spec, "test", seed=1).texts != parts["test"].texts


def test_exact_duplicates_never_cross_splits(tmp_path):
    rows = _tickets()
    dup = rows + [(rows[0][0], rows[0][1]), ("  " + rows[1][0].replace(" ", "  "), rows[1][1])] * 3
    path = _write_csv(tmp_path / "d.csv", ["text", "label"], dup)
    parts = dataset_splits(str(path))
    texts = [" ".join(t.split()) for p in parts.values() for t in p.texts]
    assert len(texts) == len(set(texts)) == 30  # the 6 repeats (white space aside) are gone


def test_tsv_with_integer_labels_orders_them_numerically(tmp_path):
    stars = (10, 2, 1)
    rows = [(f"review {i} gave {s} stars", s) for i in range(10) for s in stars]
    path = _write_csv(tmp_path / "reviews.tsv", ["text", "label"], rows, delimiter="\t")
    parts = dataset_splits(str(path))
    assert parts["train"].label_names == ("1", "2", "10")
    assert _source_labels(parts) == {t: str(s) for t, s in rows}


def test_jsonl_sentence_pairs_stay_aligned(tmp_path):
    rows = [{"premise": f"premise {i} {l}", "hypothesis": f"hypothesis {i}", "label": l}
            for i in range(10) for l in ("entailment", "contradiction")]
    path = _write_jsonl(tmp_path / "nli.jsonl", rows)
    spec = DataSpec(str(path), text_column="premise", text_pair_column="hypothesis")
    parts = dataset_splits(spec)
    want = {r["premise"]: (r["hypothesis"], r["label"]) for r in rows}
    for p in parts.values():
        assert p.label_names == ("contradiction", "entailment") and len(p.pairs) == len(p.texts)
        for t, h, y in zip(p.texts, p.pairs, p.labels):
            assert want[t] == (h, p.label_names[y])
    assert parts["test"].head(2).pairs == parts["test"].pairs[:2]


def test_the_same_pair_twice_is_a_duplicate_but_a_new_pair_is_not(tmp_path):
    rows = [{"a": f"s{i}", "b": f"t{i}", "label": i % 2} for i in range(20)]
    rows += [{"a": "s0", "b": "t0", "label": 0}, {"a": "s0", "b": "another", "label": 0}]
    parts = dataset_splits(DataSpec(str(_write_jsonl(tmp_path / "p.jsonl", rows)), text_column="a",
                                    text_pair_column="b"))
    pairs = [(t, q) for p in parts.values() for t, q in zip(p.texts, p.pairs)]
    assert len(pairs) == len(set(pairs)) == 21


def test_parquet(tmp_path):
    import datasets

    path = tmp_path / "t.parquet"
    body, queue = zip(*_tickets())
    datasets.Dataset.from_dict({"body": list(body), "queue": list(queue)}).to_parquet(str(path))
    parts = dataset_splits(DataSpec(str(path), text_column="body", label_column="queue"))
    assert [len(parts[s]) for s in ("train", "validation", "test")] == [21, 3, 6]
    assert _source_labels(parts) == dict(_tickets())


def test_save_to_disk_dataset_keeps_class_label_order(tmp_path):
    import datasets

    names = ["neg", "pos", "neutral"]  # ids follow the ClassLabel, not the sorted names
    feats = datasets.Features({"text": datasets.Value("string"), "label": datasets.ClassLabel(names=names)})
    rows = {"text": [f"opinion {i}" for i in range(30)], "label": [i % 3 for i in range(30)]}
    datasets.Dataset.from_dict(rows, features=feats).save_to_disk(str(tmp_path / "saved"))
    parts = dataset_splits(str(tmp_path / "saved"))
    assert parts["train"].label_names == tuple(names)
    assert [len(parts[s]) for s in ("train", "validation", "test")] == [21, 3, 6]
    got = {t: y for p in parts.values() for t, y in zip(p.texts, p.labels)}
    assert got == dict(zip(rows["text"], rows["label"]))


def test_save_to_disk_dataset_dict_keeps_its_splits_and_cuts_the_missing_one(tmp_path):
    import datasets

    def ds(prefix, n):
        return datasets.Dataset.from_dict({"text": [f"{prefix} {i}" for i in range(n)],
                                           "label": ["a" if i % 2 else "b" for i in range(n)]})

    datasets.DatasetDict({"train": ds("tr", 32), "test": ds("te", 10), "unsupervised": ds("u", 5)}) \
        .save_to_disk(str(tmp_path / "two"))
    parts = dataset_splits(str(tmp_path / "two"))
    # test kept whole; validation = 1/8 of train, stratified (2 of each class out of 16)
    assert len(parts["test"]) == 10 and {t.split()[0] for t in parts["test"].texts} == {"te"}
    assert len(parts["train"]) == 28 and len(parts["validation"]) == 4
    assert Counter(parts["validation"].labels) == {0: 2, 1: 2}
    assert {t.split()[0] for p in ("train", "validation") for t in parts[p].texts} == {"tr"}

    datasets.DatasetDict({"train": ds("tr", 12), "validation": ds("va", 4), "test": ds("te", 6)}) \
        .save_to_disk(str(tmp_path / "three"))
    parts = dataset_splits(str(tmp_path / "three"), seed=3)
    assert {s: (len(p), {t.split()[0] for t in p.texts}) for s, p in parts.items()} == \
        {"train": (12, {"tr"}), "validation": (4, {"va"}), "test": (6, {"te"})}
    # own splits are shuffled with the seed (files are often sorted by class)
    assert parts["train"].texts != tuple(f"tr {i}" for i in range(12))
    assert dataset_splits(str(tmp_path / "three"), seed=3)["train"].texts == parts["train"].texts


def test_folder_of_split_files(tmp_path):
    folder = tmp_path / "splits"
    folder.mkdir()
    rows = _tickets(12)
    _write_csv(folder / "train.csv", ["text", "label"], rows[:24])
    _write_csv(folder / "dev.csv", ["text", "label"], rows[24:30])
    _write_csv(folder / "test.csv", ["text", "label"], rows[30:] + [rows[0]])  # a train text repeated in test
    (folder / "README.md").write_text("not data")
    parts = dataset_splits(str(folder))
    assert set(parts["train"].texts) == {t for t, _ in rows[:24]}
    assert set(parts["validation"].texts) == {t for t, _ in rows[24:30]}
    assert set(parts["test"].texts) == {t for t, _ in rows[30:]}  # the repeat is dropped from test


def test_class_folders_with_and_without_split_folders(tmp_path):
    def fill(root: Path, n: int, tag: str):
        for c in ("sport", "arts"):
            (root / c).mkdir(parents=True)
            for i in range(n):
                (root / c / f"{i:03d}.txt").write_text(f"  {tag} {c} story {i}\n\nsecond paragraph\n", encoding="utf-8")

    fill(tmp_path / "flat", 10, "x")
    parts = dataset_splits(str(tmp_path / "flat"))
    assert parts["test"].label_names == ("arts", "sport")
    assert [len(parts[s]) for s in ("train", "validation", "test")] == [14, 2, 4]
    t0 = parts["train"].texts[0]
    assert t0 == t0.strip() and parts["train"].label_names[parts["train"].labels[0]] in t0

    fill(tmp_path / "nested" / "train", 8, "tr")
    fill(tmp_path / "nested" / "test", 3, "te")
    parts = dataset_splits(str(tmp_path / "nested"))
    assert len(parts["test"]) == 6 and all(t.startswith("te ") for t in parts["test"].texts)
    assert len(parts["train"]) + len(parts["validation"]) == 16 and len(parts["validation"]) == 2


def test_token_classification_jsonl_with_iob_strings_and_with_ints(tmp_path):
    rows = [{"tokens": ["Ada", "Lovelace", "wrote", f"note{i}"], "tags": ["B-PER", "I-PER", "O", "O"]}
            for i in range(8)]
    rows += [{"tokens": ["in", "London", f"day{i}"], "tags": ["O", "B-LOC", "O"]} for i in range(8)]
    ner = tmp_path / "ner.jsonl"
    _write_jsonl(ner, rows)
    parts = {s: load_token_dataset(str(ner), s) for s in ("train", "validation", "test")}
    assert sum(len(p) for p in parts.values()) == 16
    assert [len(p) for p in parts.values()] == [11, 2, 3]
    names = parts["train"].label_names
    assert names == ("B-LOC", "B-PER", "I-PER", "O") and parts["train"].is_iob
    want = {tuple(r["tokens"]): r["tags"] for r in rows}
    for p in parts.values():
        for words, tags in zip(p.tokens, p.tags):
            assert [names[t] for t in tags] == want[words]

    ints = tmp_path / "pos.jsonl"
    _write_jsonl(ints, [{"words": ["a", f"b{i}"], "pos": [3, 7]} for i in range(10)])
    ds = load_token_dataset(DataSpec(str(ints), tokens_column="words", tags_column="pos"), "train")
    assert ds.label_names == ("3", "7") and not ds.is_iob and set(ds.tags) == {(0, 1)}


def test_tokenize_words_labels_the_first_sub_token_of_each_word():
    from edgekit.zoo import load_torch, resolve

    _, tok = load_torch(resolve("tiny-bert"))
    words = [["Ada", "Lovelace", "wrote"], ["unbelievably", "so"]]
    feeds, labels = tokenize_words(tok, words, [[1, 2, 0], [0, 0]], max_length=16)
    assert feeds["input_ids"].shape == labels.shape == (2, 16)
    for r, sent in enumerate(words):
        firsts = [j for j in range(16) if labels[r, j] >= 0]
        assert len(firsts) == len(sent)  # one labelled position per word, the rest -100
        for j, w in zip(firsts, sent):  # the labelled position starts that word
            assert tok.convert_ids_to_tokens(int(feeds["input_ids"][r, j])) == tok.tokenize(w)[0]
    assert [labels[0, j] for j in range(16) if labels[0, j] >= 0] == [1, 2, 0]
    assert labels[0, 0] == -100  # [CLS]
    _, short = tokenize_words(tok, [["one"] * 30], max_length=8)  # truncated: 6 words fit
    assert (short >= 0).sum() == 6


def test_tokenize_pairs_adds_token_type_ids():
    from edgekit.zoo import load_torch, resolve

    _, tok = load_torch(resolve("tiny-bert"))
    single = tokenize(tok, ["a cat sat"], max_length=16)
    assert set(single) == {"input_ids", "attention_mask"}
    both = tokenize(tok, ["a cat sat"], max_length=16, pairs=["on the mat"])
    assert set(both) == {"input_ids", "attention_mask", "token_type_ids"}
    n_first = len(tok.tokenize("a cat sat")) + 2  # [CLS] a cat sat [SEP]
    assert both["token_type_ids"][0, :n_first].sum() == 0 and both["token_type_ids"][0, n_first] == 1
    with pytest.raises(InputError, match="2 texts but 1 pairs"):
        tokenize(tok, ["a", "b"], pairs=["c"])


# ---------------------------------------------------------------- unlabelled text

def test_passages_join_short_paragraphs_and_cut_long_ones():
    text = "Title\n\n" + " ".join(f"w{i}" for i in range(25)) + "\n\nend here\n"
    p = split_passages(text, min_words=5, max_words=10)
    assert [len(x.split()) for x in p] == [10, 10, 8]  # Title + 25 words + 2 = 28 words
    assert p[0].startswith("Title w0") and p[-1].endswith("end here")
    lines = "first line of text\nsecond line of text\n"  # no blank lines: one text per line
    assert split_passages(lines, min_words=4, max_words=50) == ["first line of text", "second line of text"]


def test_unlabelled_text_from_txt_files_tables_and_builtin(tmp_path):
    docs = tmp_path / "docs" / "deep"
    docs.mkdir(parents=True)
    (docs / "a.txt").write_text("alpha " * 30 + "\n\n" + "beta " * 30, encoding="utf-8")
    (docs / "b.rst").write_text("gamma " * 30, encoding="utf-8")
    (docs / "skip.bin").write_bytes(b"\xff\xfe")
    got = load_texts(str(tmp_path / "docs"), min_words=10, max_words=40)
    assert got == ["alpha " * 29 + "alpha", "beta " * 29 + "beta", "gamma " * 29 + "gamma"]

    table = _write_csv(tmp_path / "t.csv", ["body", "queue"], _tickets(2))
    texts = load_texts(DataSpec(str(table), text_column="body"))
    assert texts == [b for b, _ in _tickets(2)]
    # several sources, repeats dropped, excluded texts never returned
    both = load_texts([str(table), str(table)], text_column="body", exclude=[texts[0]])
    assert both == texts[1:]

    bbc = load_texts("bbc-news")
    assert len(bbc) == len(load_dataset("bbc-news", "train")) and set(bbc) == set(load_dataset("bbc-news", "train").texts)


def test_unlabelled_text_of_data_with_splits_is_its_train_split_only(tmp_path):
    import datasets

    datasets.DatasetDict({s: datasets.Dataset.from_dict({"text": [f"{s} {i}" for i in range(3)]})
                          for s in ("train", "validation", "test")}).save_to_disk(str(tmp_path / "dd"))
    assert load_texts(str(tmp_path / "dd")) == ["train 0", "train 1", "train 2"]


def test_unlabelled_bad_files_raise_or_are_skipped(tmp_path):
    (tmp_path / "good.txt").write_text("fine words here", encoding="utf-8")
    (tmp_path / "bad.txt").write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"bad.txt: line 1 is not UTF-8"):
        load_texts(str(tmp_path))
    assert load_texts(str(tmp_path), on_bad_file="skip", min_words=1) == ["fine words here"]
    with pytest.raises(InputError, match=r"unknown file type '\.cor'.*\.txt"):
        (tmp_path / "x.cor").write_text("words")
        load_texts(str(tmp_path / "x.cor"))
    with pytest.raises(InputError, match="no such file or folder"):
        load_texts(str(tmp_path / "nope"))


# ---------------------------------------------------------------- bad input: one line, nothing written

def _error(source, **kw) -> str:
    """The one-line InputError that reading ``source`` raises; the data's folder is left as it was."""
    folder = Path(source).parent
    before = _snapshot(folder)
    with pytest.raises(InputError) as info:
        dataset_splits(DataSpec(str(source), **kw))
    msg = str(info.value)
    assert "\n" not in msg and info.value.exit_code == 2
    assert _snapshot(folder) == before
    return msg


def _snapshot(folder: Path) -> set:
    return {(p, p.stat().st_size) for p in folder.rglob("*")}


@pytest.fixture(autouse=True)
def _reading_writes_nothing():
    """No test here leaves a file in the datasets cache or a scratch folder behind (reads and errors alike)."""
    import datasets

    cache = Path(datasets.config.HF_DATASETS_CACHE)
    scratch = Path(tempfile.gettempdir())
    before = (_snapshot(cache) if cache.exists() else set(), set(scratch.glob("edgekit-data-*")))
    yield
    after = (_snapshot(cache) if cache.exists() else set(), set(scratch.glob("edgekit-data-*")))
    assert after == before


@pytest.fixture
def nothing_written(tmp_path):
    """The data folder of a bad-input test (tests compare its contents before and after where it matters)."""
    return tmp_path


def test_missing_column_names_the_columns_that_exist(nothing_written):
    path = _write_csv(nothing_written / "t.csv", ["body", "queue"], _tickets())
    assert _error(path) == f"data {path}: no column 'text' (--text-column); its columns: body, queue"
    assert "no column 'label' (--label-column); its columns: body, queue" in _error(path, text_column="body")
    assert "no column 'premise' (--text-pair-column)" in _error(path, text_column="body", label_column="queue",
                                                                text_pair_column="premise")


def test_empty_files_and_files_without_rows(nothing_written):
    for name in ("e.csv", "e.jsonl", "e.parquet", "e.tsv"):
        (nothing_written / name).write_bytes(b"")
        assert f"{name}: the file is empty" in _error(nothing_written / name)
    (nothing_written / "blank.jsonl").write_text("\n \n")
    assert "blank.jsonl: the file is empty" in _error(nothing_written / "blank.jsonl")
    (nothing_written / "h.csv").write_text("text,label\n")
    assert _error(nothing_written / "h.csv") == f"data {nothing_written / 'h.csv'}: the file has no rows"


def test_one_class_only(nothing_written):
    path = _write_csv(nothing_written / "one.csv", ["text", "label"], [(f"t{i}", "spam") for i in range(20)])
    assert _error(path) == (f"data {path}: column 'label' has one class only ('spam'); a classifier needs "
                            f"at least two")


def test_label_in_test_unseen_in_train(nothing_written):
    folder = nothing_written / "s"
    folder.mkdir()
    _write_csv(folder / "train.csv", ["text", "label"], [(f"a{i}", "x" if i % 2 else "y") for i in range(10)])
    _write_csv(folder / "test.csv", ["text", "label"], [("b0", "x"), ("b1", "refund")])
    msg = _error(folder)
    assert msg == f"data {folder / 'test.csv'}: row 2 has label 'refund' that no train row has; train labels: x, y"


def test_non_utf8_file_names_the_line(nothing_written):
    path = nothing_written / "latin.csv"
    path.write_bytes("text,label\nfine,a\ncaf\xe9,b\n".encode("latin-1"))
    assert _error(path) == f"data {path}: line 3 is not UTF-8 (byte 0xe9); save the file as UTF-8"
    folder = nothing_written / "classes" / "a"
    folder.mkdir(parents=True)
    (folder / "1.txt").write_bytes(b"\xff bad")
    (nothing_written / "classes" / "b").mkdir()
    (nothing_written / "classes" / "b" / "1.txt").write_text("ok")
    assert "1.txt: line 1 is not UTF-8 (byte 0xff)" in _error(nothing_written / "classes")


def test_row_with_an_empty_text(nothing_written):
    rows = _tickets()
    rows[4] = ("   ", rows[4][1])
    path = _write_csv(nothing_written / "t.csv", ["text", "label"], rows)
    assert _error(path) == (f"data {path}: row 5 has an empty text in column 'text'; every row needs a "
                            f"non-empty text")
    jl = _write_jsonl(nothing_written / "t.jsonl", [{"text": "a", "label": 1}, {"text": None, "label": 2}])
    assert "t.jsonl: row 2 has an empty text in column 'text'" in _error(jl)
    nolabel = _write_csv(nothing_written / "n.csv", ["text", "label"], [("a", "x"), ("b", "")])
    assert _error(nolabel) == (f"data {nolabel}: row 2 has no label in column 'label'; every row needs a "
                               f"label (a string or an integer)")


def test_csv_with_ragged_rows(nothing_written):
    path = nothing_written / "r.csv"
    path.write_text("text,label\nfine,a\n\"two\nlines\",b\nthis, has, too many,a\nok,b\n", encoding="utf-8")
    assert _error(path) == (f"data {path}: row 3 has 4 fields but the header has 2; every row needs exactly "
                            f"the header's columns (quote fields that contain the separator)")


def test_bad_json_lines_name_the_line(nothing_written):
    bad = nothing_written / "b.jsonl"
    bad.write_text('{"text": "a", "label": 1}\n{"text": "b", "label": 2\n')
    assert _error(bad).startswith(f"data {bad}: line 2 is not valid JSON")
    listed = nothing_written / "l.jsonl"
    listed.write_text('{"text": "a", "label": 1}\n[1, 2]\n')
    assert _error(listed) == (f"data {listed}: line 2 is a JSON list, not an object; JSON Lines holds one object "
                              f"per line")
    mixed = nothing_written / "m.jsonl"  # a blank line and a column whose type changes
    mixed.write_text('{"text": "a", "label": 1}\n\n{"text": "b"}\n{"text": "c", "label": "x"}\n')
    assert _error(mixed) == (f"data {mixed}: line 4: 'label' is a text but a number on line 1; a column holds "
                             f"one type")


def test_mixed_integer_and_string_labels_are_all_strings(tmp_path):
    rows = [{"text": f"t{i}", "label": 1 if i % 2 else "x"} for i in range(20)]
    parts = dataset_splits(str(_write_jsonl(tmp_path / "m.jsonl", rows)))
    assert parts["train"].label_names == ("1", "x")
    assert _source_labels(parts) == {r["text"]: str(r["label"]) for r in rows}


def test_unknown_extension_and_missing_path(nothing_written):
    odd = nothing_written / "data.xlsx"
    odd.write_bytes(b"PK")
    msg = _error(odd)
    assert msg.startswith(f"data {odd}: unknown file type '.xlsx'; allowed: .csv, .tsv, .jsonl")
    assert _error(nothing_written / "nope.csv") .startswith(f"data {nothing_written / 'nope.csv'}: no such file or "
                                                           f"folder; allowed: CSV (.csv)")
    with pytest.raises(InputError, match=r"^unknown data 'imagenet'; allowed: bbc-news or a path to CSV"):
        load_dataset("imagenet")


def test_token_data_errors(nothing_written):
    path = _write_jsonl(nothing_written / "ner.jsonl", [{"tokens": ["a", "b"], "tags": ["O", "B-X"]},
                                                        {"tokens": ["c", "d"], "tags": ["O"]}])
    with pytest.raises(InputError, match=r"ner.jsonl: row 2 has 2 tokens but 1 tags in column 'tags'"):
        load_token_dataset(str(path))
    with pytest.raises(InputError, match=r"no column 'tokens' \(tokens_column\); its columns: text, label"):
        load_token_dataset(str(_write_jsonl(nothing_written / "t.jsonl", [{"text": "a", "label": 1}])))


def test_bad_spec_options():
    with pytest.raises(InputError, match="must differ"):
        DataSpec("x.csv", text_column="a", label_column="a")
    with pytest.raises(InputError, match="unknown data option 'text_col'; allowed: source, text_column"):
        DataSpec.from_dict({"source": "x.csv", "text_col": "a"})


def test_registered_text_source_is_read_like_plain_text(monkeypatch):
    from edgekit.data import TEXT_SOURCES, register_text_source

    monkeypatch.setattr("edgekit.data.unlabelled.TEXT_SOURCES", dict(TEXT_SOURCES))
    register_text_source("tiny-corpus", lambda: ["one two three\n\nfour five six", "seven eight nine"], "test only")
    assert load_texts("tiny-corpus", min_words=3, max_words=10) == ["one two three", "four five six",
                                                                    "seven eight nine"]
    register_text_source("absent-corpus", lambda: [])
    with pytest.raises(InputError, match="no text in absent-corpus"):
        load_texts("absent-corpus")
    with pytest.raises(InputError, match="allowed: bbc-news, absent-corpus, tiny-corpus, plain text"):
        load_texts("unknown-corpus")
    with pytest.raises(InputError, match="plain name other than bbc-news"):
        register_text_source("bbc-news", lambda: [])
