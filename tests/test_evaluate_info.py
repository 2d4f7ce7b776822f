from __future__ import annotations

import numpy as np
import pytest

from edgekit.evaluate import evaluate, linear_probe, mean_cosine


class KeywordClassifier:
    """Logits from a fixed keyword rule, so the expected accuracy can be computed independently."""

    runtime, precision, threads, task = "fake", "fp32", 1, "text-classification"
    words = ("market", "film", "election", "match", "software")  # business, entertainment, politics, sport, tech

    def __init__(self, tok):
        self.tok = tok

    def run(self, feeds):
        texts = self.tok.batch_decode(feeds["input_ids"], skip_special_tokens=True)
        return np.array([[t.lower().count(w) for w in self.words] for t in texts], np.float32)


def test_classification_accuracy_matches_independent_count():
    from edgekit.data import load_dataset
    from edgekit.zoo import load_torch, resolve

    _, tok = load_torch(resolve("tiny-bert"))
    sess = KeywordClassifier(tok)
    res = evaluate(sess, tok, progress=False)
    test = load_dataset("bbc-news", "test")
    expected = 0
    for text, y in zip(test.texts, test.labels):
        ids = tok(text, max_length=128, truncation=True)["input_ids"]
        t = tok.decode(ids, skip_special_tokens=True).lower()
        expected += int(np.argmax([t.count(w) for w in KeywordClassifier.words]) == y)
    assert res["metric"] == "accuracy" and res["n"] == len(test) == 426
    assert res["value"] == pytest.approx(expected / len(test))
    assert 0.3 < res["value"] < 0.95  # a keyword rule is far better than chance, far from perfect


def test_linear_probe_separable_and_random():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8)) * 5
    y = rng.integers(0, 3, 300)
    x = centers[y] + rng.normal(size=(300, 8))
    acc, _ = linear_probe(x[:200], y[:200], x[200:250], y[200:250], x[250:], y[250:])
    assert acc > 0.95
    acc, _ = linear_probe(rng.normal(size=(200, 8)), y[:200], rng.normal(size=(50, 8)), y[200:250],
                          rng.normal(size=(50, 8)), y[250:])
    assert acc < 0.6


def test_mean_cosine():
    a = np.array([[1.0, 0.0], [0.0, 2.0]])
    assert mean_cosine(a, a) == pytest.approx(1.0)
    assert mean_cosine(a, -a) == pytest.approx(-1.0)
    assert mean_cosine(a, np.array([[0.0, 1.0], [0.0, 1.0]])) == pytest.approx(0.5)


def test_info_json_schema(capsys):
    import json

    from edgekit.cli import main

    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["cpu"]) >= {"model", "cores", "isa"}
    assert set(info["cpu"]["isa"]) == {"avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_int8"}
    assert all(isinstance(v, bool) for v in info["cpu"]["isa"].values())
    assert set(info["runtimes"]) >= {"torch", "onnxruntime", "openvino", "native"}
    assert info["runtimes"]["onnxruntime"] and "isa" in info["kernels"]


@pytest.mark.slow
@pytest.mark.ci
def test_eval_probe_openvino_within_one_point_of_torch(tmp_path):
    """Issue 2 must-show: linear-probe accuracy on OpenVINO within 1 point of torch (minilm-l6)."""
    from edgekit.cli import main
    import json, io, contextlib

    art = tmp_path / "m"
    assert main(["export", "minilm-l6", "-o", str(art), "--format", "openvino"]) == 0
    vals = {}
    for rt in ("torch", "openvino"):
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert main(["eval", str(art), "--runtime", rt, "--json"]) == 0
        vals[rt] = json.loads(buf.getvalue().strip().splitlines()[-1])["value"]
    assert vals["torch"] > 0.9
    assert abs(vals["torch"] - vals["openvino"]) <= 0.01
