"""Sentence pairs through every stage: segment ids (token_type_ids) in the exported graphs, training and
calibration on pairs in compress, and `edgekit eval` on each runtime, on pairs of BBC sentences (label: same
article or not; tests/derived_data.py)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from derived_data import tiny_model, write_pairs_csv
from edgekit.cli import main

COLUMNS = ["--text-column", "first", "--text-pair-column", "second", "--label-column", "relation"]


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_pairs_csv(tmp_path_factory.mktemp("data") / "pairs.csv", 200)


@pytest.fixture(scope="module")
def pair_model(tmp_path_factory):
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny-pair", 2, kind="sequence", seed=3)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, pair_model, pairs):
    out = tmp_path_factory.mktemp("c") / "pair"
    assert main(["compress", str(pair_model), "--recipe", "quick", "--max-steps", "2", "--data", str(pairs),
                 *COLUMNS, "-o", str(out)]) == 0
    return out


def _pair_feeds(tok, pairs, n=12):
    from edgekit.data import DataSpec, load_dataset, tokenize

    ds = load_dataset(DataSpec(str(pairs), text_column="first", text_pair_column="second",
                               label_column="relation"), "test")
    return tokenize(tok, ds.texts[:n], pairs=ds.pairs[:n], max_length=96, pad_to_max=False)


def test_training_rows_keep_pairs_and_segments(pair_model, pairs):
    from transformers import AutoTokenizer

    from edgekit.data import DataSpec, training_rows

    tok = AutoTokenizer.from_pretrained(pair_model)
    spec = DataSpec(str(pairs), text_column="first", text_pair_column="second", label_column="relation")
    feeds, labels = training_rows(tok, spec, "text-classification", max_length=64)
    assert feeds["token_type_ids"].shape == feeds["input_ids"].shape == (len(labels), 64)
    sep = tok.sep_token_id
    for r in range(4):  # segment 1 starts right after the first [SEP]
        first_sep = int(np.flatnonzero(feeds["input_ids"][r] == sep)[0])
        assert feeds["token_type_ids"][r, : first_sep + 1].sum() == 0 and feeds["token_type_ids"][r, first_sep + 1] == 1
    assert set(labels.tolist()) == {0, 1}


def test_exported_graphs_read_segments(tmp_path, pair_model, pairs):
    from edgekit.export import export
    from edgekit.runtimes import load, load_tokenizer

    art = export(str(pair_model), tmp_path / "art", formats="onnx,openvino", progress=False)
    assert [i.name for i in art.manifest.inputs] == ["input_ids", "attention_mask", "token_type_ids"]
    feeds = _pair_feeds(load_tokenizer(art), pairs)
    ref = load(art, "torch", threads=1).run(feeds)
    single = {k: v for k, v in feeds.items() if k != "token_type_ids"}
    ref_single = load(art, "torch", threads=1).run(single)
    assert np.abs(ref - ref_single).max() > 1e-4  # the segments change the model's output
    for rt in ("onnxruntime", "openvino"):
        s = load(art, rt, threads=1)
        np.testing.assert_allclose(s.run(feeds), ref, atol=1e-4)
        np.testing.assert_allclose(s.run(single), ref_single, atol=1e-4)  # no segments given: all zeros


def test_compress_on_pairs_reports_and_agrees_across_runtimes(compressed, pairs, capsys):
    report = json.loads((compressed / "report.json").read_text())
    assert report["task"] == "text-classification" and report["data"] == str(pairs)
    manifest = json.loads((compressed / "manifest.json").read_text())
    assert manifest["labels"] == ["different", "same"]
    assert "token_type_ids" in [i["name"] for i in manifest["inputs"]]
    results = {}
    for rt in ("torch", "onnxruntime", "openvino"):
        capsys.readouterr()
        assert main(["eval", str(compressed), "--runtime", rt, "--data", str(pairs), *COLUMNS, "--json"]) == 0
        results[rt] = json.loads(capsys.readouterr().out)
        assert results[rt]["n"] == 40 and results[rt]["metric"] == "accuracy"
        assert report["runtimes"][rt]["accuracy"] == pytest.approx(results[rt]["value"])
    for rt in ("onnxruntime", "openvino"):
        assert abs(results[rt]["value"] - results["torch"]["value"]) <= 0.02


def test_compressed_pair_logits_agree_across_runtimes(compressed, pairs):
    """Logit-level agreement of the int8 artifact on pairs (accuracy alone hides a model that ignores segments)."""
    from edgekit.runtimes import load, load_tokenizer

    feeds = _pair_feeds(load_tokenizer(compressed), pairs, 24)
    ref = load(compressed, "torch", threads=1).run(feeds)
    for rt in ("onnxruntime", "openvino"):
        out = load(compressed, rt, threads=1).run(feeds)
        assert np.mean(out.argmax(1) == ref.argmax(1)) >= 0.9
        cos = np.sum(out * ref, 1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
        assert cos.mean() > 0.99


def test_native_refuses_pairs_in_one_line(compressed, pairs, capsys):
    """The native engine reads segment 0 only today: scoring BERT pairs on it would silently score another model."""
    capsys.readouterr()
    assert main(["eval", str(compressed), "--runtime", "native", "--data", str(pairs), *COLUMNS]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "token_type_ids" in err[0] and "onnxruntime" in err[0]
