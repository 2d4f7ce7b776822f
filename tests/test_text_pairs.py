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


def test_fp32_engine_reads_segments(tmp_path, pair_model, pairs):
    """The native engine adds each token's segment row: fp32 logits on pairs (non-zero segment ids, padded rows)
    within 1e-3 of torch, and without segment ids the same as torch without them (all segment 0)."""
    import torch

    from edgekit import _engine
    from edgekit.formats.native import read_native, write_native
    from edgekit.zoo import load_torch, resolve

    model, tok = load_torch(resolve(str(pair_model)))
    # initialised at std 0.02, the random model's logits are ~0.02 and the segments move them by ~3e-4: below any
    # useful tolerance. Segment rows and classifier of std 1 make both O(1).
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for w in (model.encoder.embeddings.token_type_embeddings.weight, model.model.classifier.weight):
            w.copy_(torch.randn(w.shape, generator=g))
    feeds = _pair_feeds(tok, pairs)
    assert feeds["token_type_ids"].any() and not feeds["attention_mask"].all()
    write_native(model, "text-classification", None, tmp_path / "native")
    cfg, tensors = read_native(tmp_path / "native")
    assert cfg["type_vocab_size"] == 2
    enc = _engine.Encoder(cfg, tensors, 1, "fp32")
    ids, mask, types = feeds["input_ids"], feeds["attention_mask"], feeds["token_type_ids"]
    with torch.no_grad():
        t = {k: torch.from_numpy(v) for k, v in feeds.items()}
        ref = model(t["input_ids"], t["attention_mask"], t["token_type_ids"]).numpy()
        ref_single = model(t["input_ids"], t["attention_mask"]).numpy()
    assert np.abs(ref).max() > 0.5 and np.abs(ref - ref_single).max() > 2e-2  # 20x the tolerance below
    assert np.abs(enc.run(ids, mask, None, types) - ref).max() <= 1e-3
    assert np.abs(enc.run(ids, mask) - ref_single).max() <= 1e-3
    # a padded position's segment id is never read (it is packed away with its token)
    types_pad = types.copy()
    types_pad[mask == 0] = 1
    np.testing.assert_array_equal(enc.run(ids, mask, None, types_pad), enc.run(ids, mask, None, types))
    bad = types.copy()
    bad[0, 0] = 2
    with pytest.raises(ValueError, match="token type id 2 is outside"):
        enc.run(ids, mask, None, bad)


def test_native_pair_logits_agree_with_torch(compressed, pairs):
    """The int8 artifact on the native engine against torch (fake-quant) on pairs: the parity targets of tests/arch
    (cosine >= 0.999, the same prediction on >= 99% of inputs)."""
    from edgekit.runtimes import load, load_tokenizer

    feeds = _pair_feeds(load_tokenizer(compressed), pairs, 40)
    ref = load(compressed, "torch", threads=1).run(feeds)
    native = load(compressed, "native", threads=1)
    out = native.run(feeds)
    assert out.shape == ref.shape
    cos = np.sum(out * ref, 1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
    assert cos.mean() >= 0.999, (cos.min(), cos.mean())
    assert np.mean(out.argmax(1) == ref.argmax(1)) >= 0.99
    # the random model's segments move its ~0.02 logits by ~2e-4 (the fp32 test above measures them): here only
    # that the engine reads them, so that dropping them changes the output
    single = native.run({k: v for k, v in feeds.items() if k != "token_type_ids"})
    assert not np.array_equal(single, out)


def test_eval_native_on_pairs_agrees_with_torch(compressed, pairs, capsys):
    results = {}
    for rt in ("torch", "native"):
        capsys.readouterr()
        assert main(["eval", str(compressed), "--runtime", rt, "--data", str(pairs), *COLUMNS, "--json"]) == 0
        results[rt] = json.loads(capsys.readouterr().out)
    assert results["native"]["n"] == results["torch"]["n"] == 40
    assert abs(results["native"]["value"] - results["torch"]["value"]) <= 0.02


def test_c_api_runs_pairs(compressed, pairs):
    """ek_engine_run_with_types (the C API, through ctypes on libedgekit.so) gives the Python native session's
    floats on pairs; NULL types give ek_engine_run's, which are those of the session without segment ids."""
    import ctypes
    import importlib.util
    from pathlib import Path

    from edgekit.runtimes import load, load_tokenizer

    lib = ctypes.CDLL(str(Path(importlib.util.find_spec("edgekit._engine").origin).parent / "libedgekit.so"))
    i64p, f32p = ctypes.POINTER(ctypes.c_int64), ctypes.POINTER(ctypes.c_float)
    lib.ek_engine_load.argtypes = [ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_void_p)]
    lib.ek_engine_run.argtypes = [ctypes.c_void_p, i64p, i64p, ctypes.c_int, ctypes.c_int, f32p, ctypes.c_size_t]
    lib.ek_engine_run_with_types.argtypes = [ctypes.c_void_p, i64p, i64p, i64p, ctypes.c_int, ctypes.c_int, f32p,
                                             ctypes.c_size_t]
    lib.ek_engine_free.argtypes = [ctypes.c_void_p]
    lib.ek_engine_last_error.restype = ctypes.c_char_p
    feeds = _pair_feeds(load_tokenizer(compressed), pairs, 6)
    session = load(compressed, "native", threads=1)
    want = session.run(feeds)
    want_single = session.run({k: v for k, v in feeds.items() if k != "token_type_ids"})
    e = ctypes.c_void_p()
    assert lib.ek_engine_load(str(compressed).encode(), 1, ctypes.byref(e)) == 0, lib.ek_engine_last_error()
    try:
        b, s = feeds["input_ids"].shape
        arrays = {k: np.ascontiguousarray(v) for k, v in feeds.items()}  # alive while C reads them
        ptr = {k: v.ctypes.data_as(i64p) for k, v in arrays.items()}
        out = np.zeros(want.shape, np.float32)
        assert lib.ek_engine_run_with_types(e, ptr["input_ids"], ptr["attention_mask"], ptr["token_type_ids"], b, s,
                                            out.ctypes.data_as(f32p), out.size) == 0, lib.ek_engine_last_error()
        np.testing.assert_allclose(out, want, atol=1e-5)
        out_null = np.zeros(want.shape, np.float32)
        assert lib.ek_engine_run_with_types(e, ptr["input_ids"], ptr["attention_mask"], None, b, s,
                                            out_null.ctypes.data_as(f32p), out_null.size) == 0
        out_plain = np.zeros(want.shape, np.float32)
        assert lib.ek_engine_run(e, ptr["input_ids"], ptr["attention_mask"], b, s, out_plain.ctypes.data_as(f32p),
                                 out_plain.size) == 0
        np.testing.assert_array_equal(out_null, out_plain)
        np.testing.assert_allclose(out_plain, want_single, atol=1e-5)
        bad = feeds["token_type_ids"].copy()
        bad[0, 0] = 5
        assert lib.ek_engine_run_with_types(e, ptr["input_ids"], ptr["attention_mask"], bad.ctypes.data_as(i64p), b,
                                            s, out.ctypes.data_as(f32p), out.size) == -1  # EK_ENGINE_EINVAL
        assert b"token type id 5" in lib.ek_engine_last_error()
    finally:
        lib.ek_engine_free(e)
