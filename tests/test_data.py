from collections import Counter

import pytest

from edgekit.data import SPLITS, calibration_texts, load_dataset
from edgekit.errors import InputError


def test_split_sizes_are_stratified_and_disjoint():
    parts = {s: load_dataset("bbc-news", s) for s in SPLITS}
    # 2,225 articles, of which 100 repeat another verbatim and are dropped before splitting.
    assert sum(len(p) for p in parts.values()) == 2125
    texts = [set(p.texts) for p in parts.values()]
    assert not (texts[0] & texts[1]) and not (texts[0] & texts[2]) and not (texts[1] & texts[2])
    full = Counter(parts["train"].labels) + Counter(parts["validation"].labels) + Counter(parts["test"].labels)
    assert set(full) == {0, 1, 2, 3, 4} and parts["test"].label_names[0] == "business"
    test = Counter(parts["test"].labels)
    for c, n in full.items():  # each class keeps its share (20% +- 1 article) in test
        assert abs(test[c] - 0.2 * n) <= 1.5


def test_split_is_deterministic_and_seeded():
    a, b = load_dataset("bbc-news", "test", seed=0), load_dataset("bbc-news", "test", seed=0)
    assert a.texts == b.texts and a.labels == b.labels
    assert load_dataset("bbc-news", "test", seed=1).texts != a.texts


def test_calibration_comes_from_train_only():
    cal = set(calibration_texts(64))
    assert len(cal) == 64 and cal <= set(load_dataset("bbc-news", "train").texts)


def test_unknown_names_are_input_errors():
    with pytest.raises(InputError, match="allowed: bbc-news"):
        load_dataset("imagenet")
    with pytest.raises(InputError, match="allowed: train, validation, test"):
        load_dataset("bbc-news", "dev")


def test_windows_cover_each_text_in_order_and_keep_the_first_window_rows():
    from edgekit.data import tokenize, tokenize_windows
    from edgekit.zoo import load_torch, resolve

    _, tok = load_torch(resolve("tiny-bert"))
    texts = load_dataset("bbc-news", "train").texts[:12]
    first = tokenize(tok, texts, max_length=32)
    feeds, source = tokenize_windows(tok, texts, max_length=32, windows=3)
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    assert (ids[:12] == first["input_ids"]).all() and list(source[:12]) == list(range(12))
    assert len(ids) == 36  # every BBC article is longer than 3 x 30 tokens
    cls, sep = tok.cls_token_id, tok.sep_token_id
    for t in range(12):  # windows 0, 1, 2 of text t, stitched back, are its first 90 word-piece tokens
        rows = [r for r in range(len(ids)) if source[r] == t]
        assert rows == [t, 12 + t, 24 + t]
        assert all(ids[r, 0] == cls and ids[r, mask[r].sum() - 1] == sep for r in rows)
        body = [x for r in rows for x in ids[r, 1:mask[r].sum() - 1]]
        whole = tok(texts[t], add_special_tokens=False)["input_ids"]
        assert body == whole[:len(body)] and len(body) == 90
    same, _ = tokenize_windows(tok, texts, max_length=32, windows=1)
    assert (same["input_ids"] == first["input_ids"]).all()
