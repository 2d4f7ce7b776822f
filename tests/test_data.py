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
