"""evaluate() on fake sessions whose outputs follow a known rule (never the labels), so the expected
accuracy is computed independently; plus one real-runtime check on tiny-bert-cls (slow, ci)."""
from __future__ import annotations

import numpy as np
import pytest

from edgekit.data import load_dataset
from edgekit.errors import InputError
from edgekit.evaluate import PROBE_C, evaluate, linear_probe, mean_cosine, predict

WORDS = ("market", "film", "election", "match", "software")  # business, entertainment, politics, sport, tech


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from edgekit.zoo import _minilm_path

    return AutoTokenizer.from_pretrained(_minilm_path())


class KeywordSession:
    """Implements the Session Protocol. Classifier: logits = keyword counts (in ``order``) of the
    text it sees. Feature extractor: [1, counts of 16 topic words] (``sign`` flips the embedding)."""

    runtime, precision, threads = "fake", "fp32", 1
    TOPIC = ("market", "bank", "shares", "film", "music", "award", "election", "labour", "minister", "match",
             "game", "cup", "software", "users", "mobile", "internet")

    def __init__(self, tok, task="text-classification", order=WORDS, sign=1.0):
        self.tok, self.task, self.order, self.sign = tok, task, order, sign
        self.seen = 0

    def counts(self, text: str, words) -> list[int]:
        t = text.lower()
        return [t.count(w) for w in words]

    def run(self, feeds):
        texts = self.tok.batch_decode(feeds["input_ids"], skip_special_tokens=True)
        self.seen += len(texts)
        if self.task == "text-classification":
            # ties go to the earlier dataset label whatever the class order, as np.argmax does below
            tie = [1e-3 * (len(WORDS) - WORDS.index(w)) for w in self.order]
            return np.array([np.add(self.counts(t, self.order), tie) for t in texts], np.float32)
        return self.sign * np.array([[1.0, *self.counts(t, self.TOPIC)] for t in texts], np.float32)


def _expected_keyword_accuracy(tok, max_length=128):
    """The keyword rule applied by hand to the same truncated test texts."""
    test = load_dataset("bbc-news", "test")
    hits = 0
    for text, y in zip(test.texts, test.labels):
        ids = tok(text, max_length=max_length, truncation=True)["input_ids"]
        t = tok.decode(ids, skip_special_tokens=True).lower()
        hits += int(np.argmax([t.count(w) for w in WORDS]) == y)
    return hits / len(test)


def test_classification_accuracy_matches_independent_count(tok):
    res = evaluate(KeywordSession(tok), tok, progress=False)
    assert {"task", "data", "metric", "value", "n", "runtime"} <= set(res)
    assert res["metric"] == "accuracy" and res["task"] == "text-classification" and res["data"] == "bbc-news"
    assert res["n"] == len(load_dataset("bbc-news", "test")) and res["runtime"] == "fake"
    expected = _expected_keyword_accuracy(tok)
    assert res["value"] == pytest.approx(expected)
    assert 0.3 < res["value"] < 0.95  # a keyword rule: far better than chance (0.2), far from perfect


def test_class_order_follows_the_model_labels(tok):
    names = load_dataset("bbc-news", "test").label_names
    perm = [3, 0, 4, 1, 2]  # the model's class i is dataset label perm[i]
    sess = KeywordSession(tok, order=tuple(WORDS[p] for p in perm))
    res = evaluate(sess, tok, labels=[names[p] for p in perm], progress=False, batch=64)
    assert res["value"] == pytest.approx(_expected_keyword_accuracy(tok))
    generic = evaluate(KeywordSession(tok), tok, labels=[f"LABEL_{i}" for i in range(5)], progress=False, batch=64)
    assert generic["value"] == pytest.approx(res["value"])  # placeholders mean "dataset order"
    with pytest.raises(InputError, match="labels"):
        evaluate(KeywordSession(tok), tok, labels=["a", "b", "c", "d", "e"], progress=False, batch=64)
    with pytest.raises(InputError, match="classes"):
        evaluate(KeywordSession(tok, order=WORDS[:3]), tok, progress=False, batch=64)


def test_reference_agreement_for_classifiers(tok):
    res = evaluate(KeywordSession(tok), tok, reference_session=KeywordSession(tok), progress=False, batch=64)
    assert res["agreement"] == 1.0 and res["reference_runtime"] == "fake"


def test_feature_extraction_probe_and_cosine(tok):
    sess, ref = KeywordSession(tok, "feature-extraction"), KeywordSession(tok, "feature-extraction", sign=-1.0)
    res = evaluate(sess, tok, reference_session=ref, progress=False, batch=64)
    n = {s: len(load_dataset("bbc-news", s)) for s in ("train", "validation", "test")}
    assert res["metric"] == "linear_probe_accuracy" and res["task"] == "feature-extraction"
    assert res["n"] == n["test"] and res["probe_c"] in PROBE_C
    assert 0.6 < res["value"] <= 1.0  # 16 topic-word counts separate the 5 topics well
    assert res["embedding_cosine"] == pytest.approx(-1.0)
    # train, validation and test all embedded by both: the reference's own probe is the baseline of the drop
    assert sess.seen == sum(n.values()) and ref.seen == sum(n.values())
    # negated embeddings keep every cosine between texts: the same neighbours, the same probe accuracy
    assert res["neighbour_overlap_at_10"] == pytest.approx(1.0)
    assert res["reference_linear_probe_accuracy"] == pytest.approx(res["value"], abs=0.01)
    assert res["linear_probe_drop"] == pytest.approx(res["reference_linear_probe_accuracy"] - res["value"])
    with pytest.raises(InputError, match="probe"):
        evaluate(sess, tok, split="train", progress=False)


def test_precomputed_outputs_and_cosine_without_probe(tok):
    """What edgekit compress uses: the reference given as outputs (e.g. a teacher's, from predict), this session's
    own outputs given too (nothing is run again), and feature extraction scored by that cosine alone."""
    sess, ref = KeywordSession(tok, "feature-extraction"), KeywordSession(tok, "feature-extraction", sign=-1.0)
    ref_out = predict(ref, tok, progress=False, batch=64)
    n_test = len(load_dataset("bbc-news", "test"))
    assert ref_out.shape == (n_test, 17) and ref.seen == n_test
    res = evaluate(sess, tok, reference_outputs=ref_out, probe=False, progress=False, batch=64)
    assert res["metric"] == "embedding_cosine" and res["value"] == pytest.approx(-1.0)
    assert res["embedding_cosine"] == res["value"] and "reference_runtime" not in res and "probe_c" not in res
    assert sess.seen == n_test  # no train / validation pass without the probe
    again = evaluate(sess, tok, reference_outputs=-ref_out, outputs=predict(sess, tok, progress=False), probe=False,
                     progress=False)
    assert again["value"] == pytest.approx(1.0) and sess.seen == 2 * n_test  # only predict() ran the session
    with pytest.raises(InputError, match="reference"):
        evaluate(sess, tok, probe=False, progress=False)
    cls = KeywordSession(tok)
    logits = predict(cls, tok, progress=False, batch=64)
    res = evaluate(cls, tok, reference_outputs=logits, outputs=logits, progress=False)
    assert res["agreement"] == 1.0 and res["value"] == pytest.approx(_expected_keyword_accuracy(tok))


def test_a_torch_module_of_this_process_scores_like_the_torch_runtime(tiny_cls_artifact):
    """edgekit compress scores its student through runtimes.torch_backend.ModuleSession: the same figure as the
    exported model on the torch runtime, and the module is put in eval mode."""
    from edgekit.runtimes import load, load_tokenizer
    from edgekit.runtimes.torch_backend import ModuleSession
    from edgekit.zoo import load_torch, resolve

    model, _ = load_torch(resolve("tiny-bert-cls"))
    model.train()
    tok = load_tokenizer(tiny_cls_artifact)
    mine = evaluate(ModuleSession(model, "text-classification"), tok, progress=False)
    assert not model.training
    theirs = evaluate(load(tiny_cls_artifact, "torch", threads=2), tok, progress=False)
    assert mine["runtime"] == "torch" and mine["value"] == pytest.approx(theirs["value"], abs=2 / mine["n"])


def test_bad_task_and_output_shape(tok):
    sess = KeywordSession(tok)
    sess.task = "fill-mask"
    with pytest.raises(InputError, match="task"):
        evaluate(sess, tok, progress=False)

    class Flat(KeywordSession):
        def run(self, feeds):
            return np.zeros(len(feeds["input_ids"]), np.float32)

    with pytest.raises(InputError, match="shape"):
        evaluate(Flat(tok), tok, progress=False)


def test_linear_probe_separable_and_random():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 5
    y = rng.integers(0, 3, 300)
    x = centers[y] + rng.normal(size=(300, 8))
    acc, c = linear_probe(x[:200], y[:200], x[200:250], y[200:250], x[250:], y[250:])
    assert acc > 0.95 and c in PROBE_C
    again = linear_probe(x[:200], y[:200], x[200:250], y[200:250], x[250:], y[250:])
    assert again == (acc, c)  # deterministic
    acc, _ = linear_probe(rng.normal(size=(200, 8)), y[:200], rng.normal(size=(50, 8)), y[200:250],
                          rng.normal(size=(50, 8)), y[250:])
    assert acc < 0.6


def test_mean_cosine():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert mean_cosine(a, a) == pytest.approx(1.0)
    assert mean_cosine(a, -a) == pytest.approx(-1.0)
    assert mean_cosine(a, np.array([[0.0, 1.0], [0.0, 1.0]])) == pytest.approx(0.5)
    with pytest.raises(InputError):
        mean_cosine(a, a[:1])


@pytest.mark.slow
@pytest.mark.ci
def test_tiny_bert_cls_on_onnxruntime_matches_torch(tiny_cls_artifact):
    """A real artifact through a real runtime: ONNX Runtime's accuracy equals torch's on the same
    (random) classifier, and their predictions agree."""
    from edgekit.evaluate import run_batched
    from edgekit.runtimes import load, load_tokenizer

    art = tiny_cls_artifact
    tok = load_tokenizer(art)
    ort, torch_s = load(art, "onnxruntime", threads=2), load(art, "torch", threads=2)
    res = evaluate(ort, tok, reference_session=torch_s, labels=art.manifest.labels, progress=False)
    assert res["metric"] == "accuracy" and res["runtime"] == "onnxruntime" and res["n"] == 426
    test = load_dataset("bbc-news", "test")
    logits = run_batched(torch_s, tok, test.texts, progress=False)
    torch_acc = float(np.mean(logits.argmax(1) == np.asarray(test.labels)))
    assert res["agreement"] >= 0.99
    assert res["value"] == pytest.approx(torch_acc, abs=0.01)
