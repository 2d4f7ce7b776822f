"""The native engine vs the torch fake-quant model of the same artifact (the reference semantics).

Tolerance: both compute the same integer GEMMs; they differ only in fp32 summation order, the
polynomial GELU (|err| < 2e-7 relative) and rare round-half ties when requantising (one u8 step on
a few values), so embeddings agree to cosine >= 0.9999 and logits to 1e-3 of their scale.
"""
from __future__ import annotations

import json
import sys

import numpy as np
import pytest

from edgekit.errors import ArtifactError, InputError
from edgekit.runtimes import load, load_tokenizer


def _feeds(art_dir, n=12, seq=96):
    from edgekit.data import load_dataset, tokenize

    tok = load_tokenizer(art_dir)
    f = tokenize(tok, load_dataset("bbc-news", "test").texts[:n], max_length=seq)
    f["attention_mask"][1, 40:] = 0
    f["input_ids"][1, 40:] = tok.pad_token_id
    return f


def _cos(a, b):
    return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


@pytest.mark.parametrize("which", ["quick_cls_artifact", "quick_fe_artifact"])
def test_native_matches_torch_fake_quant(request, which):
    art, _ = request.getfixturevalue(which)
    f = _feeds(art)
    ref = load(art, "torch", threads=1).run(f)
    sess = load(art, "native", threads=2, precision="fp32")
    out = sess.run(f)
    assert sess.precision == "int8-sparse" and out.shape == ref.shape
    assert _cos(out, ref).min() >= 0.9999
    np.testing.assert_allclose(out, ref, atol=1e-3 * np.abs(ref).max() + 1e-6)
    # a padded row equals the same row run alone at its true length (padding is dropped, not computed)
    alone = sess.run({k: v[1:2, :40].copy() for k, v in f.items()})
    np.testing.assert_allclose(alone[0], out[1], rtol=1e-5, atol=1e-6)
    # batch 1 equals the same row inside a batch
    np.testing.assert_allclose(sess.run({k: v[3:4] for k, v in f.items()})[0], out[3], rtol=1e-5, atol=1e-6)
    # no hint: int8 attention for a classifier on the VNNI path (close to torch, not as close), else fp32
    from edgekit import _engine

    dflt = load(art, "native", threads=2)
    int8_default = which == "quick_cls_artifact" and _engine.isa() == "avx512_vnni"
    assert dflt.precision == ("int8-sparse+int8-attention" if int8_default else "int8-sparse")
    got = dflt.run(f)
    assert _cos(got, ref).min() >= (0.999 if int8_default else 0.9999)
    if int8_default:
        assert (got.argmax(1) == ref.argmax(1)).mean() >= 0.9


@pytest.mark.parametrize("which", ["quick_fe_artifact", "quick_cls_artifact"])
def test_every_isa_path_gives_the_same_model_output(request, which):
    """Every kernel path (and so every attention path: scalar, AVX-512; CLS-only last layer for classifiers), switched
    in this process: the GEMM binding and the engine share one kernels library, so one switch moves both."""
    from edgekit import _engine, kernels
    from edgekit.data import load_dataset, tokenize

    art, _ = request.getfixturevalue(which)
    f = tokenize(load_tokenizer(art), load_dataset("bbc-news", "test").texts[:6], max_length=64)
    outs = {}
    for isa in kernels.available_isas():
        with kernels.using_isa(isa):
            assert _engine.isa() == isa
            sess = load(art, "native", threads=2, precision="fp32")
            outs[isa] = sess.run(f)
        if isa != kernels.cpu_info()["isa"]:  # its weights were packed for that path: refused on another
            with pytest.raises(RuntimeError, match="packed for ISA"):
                sess.run(f)
    ref = outs["ref"]
    for isa, out in outs.items():
        assert _cos(out, ref).min() >= 0.99999, isa


@pytest.mark.parametrize("which", ["quick_fe_artifact", "quick_cls_artifact"])
def test_tile_by_tile_layers_give_the_same_bits(request, which):
    """The steps after attention run one 64-token tile per task (ek_gemm_u8s8_t_tile) when the tiles share out
    over the threads, else as whole GEMMs split by output channels: the same values to the bit."""
    from edgekit import _engine

    art, _ = request.getfixturevalue(which)
    f = _feeds(art, n=6, seq=64)  # 6 x 64 tokens, one row cut to 40: 6 tiles on 2 threads
    sess = load(art, "native", threads=2)
    enc = sess._enc
    tiled = sess.run(f)
    n_tiled = enc.tile_fused_layers
    enc.tile_fusion = False
    whole = sess.run(f)
    assert enc.tile_fused_layers == 0
    np.testing.assert_array_equal(tiled, whole)
    if _engine.isa() == "avx512_vnni":
        # every layer but a classifier's last (CLS rows only: 6 tokens, one tile for two threads)
        layers = json.loads((art / "native" / "config.json").read_text())["layers"]
        assert n_tiled == layers - (which == "quick_cls_artifact"), n_tiled
    else:
        assert n_tiled == 0


@pytest.mark.parametrize("which", ["quick_fe_artifact", "quick_cls_artifact"])
@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_merged_chunk_region_gives_the_same_bits(request, which, precision):
    """The head tasks of a batch's 64-aligned chunks run in one parallel region, q, k, v in per-thread buffers
    (merge_chunks), or one region per chunk: the same values to the bit, for whole and mixed-length batches."""
    from edgekit import _engine

    art, _ = request.getfixturevalue(which)
    if precision == "int8" and _engine.isa() != "avx512_vnni":
        pytest.skip("int8 attention runs on AVX-512 VNNI only")
    sess = load(art, "native", threads=2, precision=precision)
    enc = sess._enc
    for n, seq, cut in ((3, 128, None), (8, 32, None), (6, 64, 40)):
        f = _feeds(art, n=n, seq=seq)
        if cut is None:  # _feeds cuts row 1 to 40 tokens; here every row is whole
            f = {k: v.copy() for k, v in f.items()}
            f["attention_mask"][1] = 1
        enc.merge_chunks = True
        a = sess.run(f)
        enc.merge_chunks = False
        b = sess.run(f)
        enc.merge_chunks = True
        np.testing.assert_array_equal(a, b, err_msg=f"n={n} seq={seq}")


def test_fp32_native_model_matches_torch(tmp_path):
    """A native folder written without quantisation runs on the fp32 kernels."""
    from edgekit.artifact import load_artifact
    from edgekit.formats.native import write_native
    from edgekit.export import export_artifact
    from edgekit.zoo import load_torch, resolve

    model, tok = load_torch(resolve("tiny-bert"))
    export_artifact(model, tok, tmp_path / "a", task="feature-extraction", model_name="tiny-bert", formats=(),
                    extra_files=lambda d: (write_native(model, "feature-extraction", None, d / "native"),
                                           {"native": "native"})[1], progress=False)
    art = load_artifact(tmp_path / "a")
    f = _feeds(art.root)
    s = load(art, "native", threads=2)
    assert s.precision == "fp32"
    np.testing.assert_allclose(s.run(f), load(art, "torch", threads=1).run(f), atol=2e-5)


def test_writer_lists_unpruned_linears_of_a_4x1_model_as_dense(tmp_path):
    """Linears left (nearly) unpruned in a 4x1 model are written to dense_linears and run on the dense kernels;
    the model still matches torch."""
    import torch

    from edgekit.arch import encoder_linears
    from edgekit.artifact import load_artifact
    from edgekit.compress.prune import mask_for
    from edgekit.export import export_artifact
    from edgekit.formats.native import write_native
    from edgekit.zoo import load_torch, resolve

    model, tok = load_torch(resolve("tiny-bert"))
    keep = {"layers.0.ffn_out", "layers.1.q", "layers.1.k", "layers.1.v"}
    with torch.no_grad():
        for name, lin in encoder_linears(model).items():
            sp = 0.1 if name == "layers.1.v" else 0.0 if name in keep else 0.8  # 10%: under DENSE_BELOW
            if sp:
                lin.weight.mul_(mask_for(lin.weight.abs(), sp, "4x1"))
    export_artifact(model, tok, tmp_path / "a", task="feature-extraction", model_name="tiny-bert", formats=(),
                    extra_files=lambda d: (write_native(model, "feature-extraction", None, d / "native"),
                                           {"native": "native"})[1], progress=False)
    cfg = json.loads((tmp_path / "a" / "native" / "config.json").read_text())
    assert cfg["pattern"] == "4x1" and cfg["dense_linears"] == sorted(keep)
    art = load_artifact(tmp_path / "a")
    f = _feeds(art.root)
    np.testing.assert_allclose(load(art, "native", threads=2).run(f), load(art, "torch", threads=1).run(f), atol=2e-5)


@pytest.mark.parametrize("mutate, match", [
    (lambda f: f.update(input_ids=np.full_like(f["input_ids"], 10**7)), "outside the vocabulary"),
    (lambda f: f.update(attention_mask=np.full_like(f["attention_mask"], 2)), "only 0 and 1"),
    (lambda f: f["attention_mask"].__setitem__((0, slice(None)), 0), "first token must be attended"),
    (lambda f: f.update(input_ids=f["input_ids"].astype(np.int32)), "int64"),
    (lambda f: f.update(input_ids=np.zeros((0, 5), np.int64), attention_mask=np.zeros((0, 5), np.int64)), "empty"),
    (lambda f: f.update(input_ids=np.ones((1, 600), np.int64), attention_mask=np.ones((1, 600), np.int64)), "maximum"),
])
def test_bad_inputs_are_clear_errors(quick_cls_artifact, mutate, match):
    art, _ = quick_cls_artifact
    f = _feeds(art, n=2, seq=16)
    mutate(f)
    with pytest.raises(InputError, match=match):
        load(art, "native", threads=1).run(f)


def test_native_needs_a_compressed_artifact(tiny_artifact, quick_cls_artifact, tmp_path):
    import shutil

    with pytest.raises(InputError, match="has no 'native' format"):
        load(tiny_artifact, "native", threads=1)
    art, _ = quick_cls_artifact
    copy = tmp_path / "v2"
    shutil.copytree(art, copy)
    cfg_path = copy / "native" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["version"] = 2
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="checksum mismatch"):
        load(copy, "native", threads=1)
    from edgekit.artifact import load_artifact

    with pytest.raises(ArtifactError, match="version 2"):
        load(load_artifact(copy, verify=False), "native", threads=1)


def test_profile_reports_every_stage(quick_cls_artifact):
    art, _ = quick_cls_artifact
    prof: dict = {}
    load(art, "native", threads=2).run(_feeds(art, n=2, seq=32), profile=prof)
    assert {"embeddings", "qkv", "attention", "o_proj", "add_ln", "ffn_in", "ffn_out", "pooling"} <= set(prof)
    assert all(v >= 0 for v in prof.values())


def test_bf16_attention_is_close_and_reported(quick_cls_artifact):
    """attention in bf16 (a precision hint): same classes as fp32 attention, logits within bf16 rounding."""
    from edgekit import _engine

    if not _engine.has_bf16():
        pytest.skip("CPU without AVX512_BF16")
    art, _ = quick_cls_artifact
    f = _feeds(art)
    s32, s16 = load(art, "native", threads=2, precision="fp32"), load(art, "native", threads=2, precision="bf16")
    assert s32.precision == "int8-sparse" and s16.precision == "int8-sparse+bf16-attention"
    a, b = s32.run(f), s16.run(f)
    assert not np.array_equal(a, b)  # really a different code path
    np.testing.assert_allclose(b, a, atol=2e-2 * np.abs(a).max())
    assert (a.argmax(1) == b.argmax(1)).mean() >= 0.9
    with pytest.raises(InputError, match="allowed: fp32, bf16, int8"):
        load(art, "native", threads=1, precision="int4")


@pytest.mark.parametrize("which", ["quick_fe_artifact", "quick_cls_artifact"])
def test_int8_attention_is_close_and_reported(request, which):
    """attention='int8' (Q K^T and P V on vpdpbusd): outputs within the rounding of q, k, p, v of the fp32 ones,
    reported in the precision; refused where it cannot run (other ISAs, a model that is not sparse int8)."""
    from edgekit import _engine
    from edgekit.errors import EdgekitError

    art, _ = request.getfixturevalue(which)
    if _engine.isa() != "avx512_vnni":
        with pytest.raises(EdgekitError, match="needs the AVX-512 VNNI kernel path"):
            load(art, "native", threads=1, precision="int8")
        return
    f = _feeds(art)
    s32, s8 = load(art, "native", threads=2, precision="fp32"), load(art, "native", threads=2, precision="int8")
    assert s8.precision == "int8-sparse+int8-attention"
    a, b = s32.run(f), s8.run(f)
    assert not np.array_equal(a, b)  # really a different code path
    assert _cos(a, b).min() >= 0.999
    if which == "quick_cls_artifact":
        assert (a.argmax(1) == b.argmax(1)).mean() >= 0.9
    with pytest.raises(ValueError, match="4x1 sparse int8 model"):
        _engine.Encoder(*_random_fp32_encoder(128, 4, False), 1, "int8")


def test_engine_breakdown_bench_runs(quick_cls_artifact, tmp_path):
    """bench/engine_breakdown.py profiles both attention precisions and writes one row per stage (no speed asserted)."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    from edgekit import _engine

    art, _ = quick_cls_artifact
    prec = "fp32,bf16" if _engine.has_bf16() else "fp32"
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "b.jsonl"
    subprocess.run([sys.executable, str(root / "bench" / "engine_breakdown.py"), str(art), "--seq", "32",
                    "--attention", prec, "--runs", "4", "--rounds", "2", "--json", str(out),
                    "--md", str(tmp_path / "b.md")], check=True, timeout=300)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["attention"] for r in rows} == set(prec.split(","))
    assert {r["stage"] for r in rows} >= {"qkv", "attention", "ffn_in", "ffn_out", "add_ln"}
    assert all(r["ms"] >= 0 for r in rows)
    assert "| stage |" in (tmp_path / "b.md").read_text()


def test_stage_macs_counts_kept_blocks():
    """The floor's MAC count: a dense layer does T*K*N per Linear; a half-density FFN-in half of that."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location(
        "engine_breakdown", Path(__file__).resolve().parents[2] / "bench" / "engine_breakdown.py")
    eb = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eb)
    cfg = {"hidden": 8, "intermediate": 32, "layers": 1, "heads": 2}
    m = eb.stage_macs(cfg, {"layers.0.ffn_in": 0.5}, batch=2, seq=4)
    assert m["qkv"] == 8 * 8 * 8 * 3 and m["o_proj"] == 8 * 8 * 8
    assert m["ffn_in"] == 8 * 8 * 32 * 0.5 and m["ffn_out"] == 8 * 32 * 8
    assert m["attention"] == 2 * 2 * 2 * 4 * 4 * 4
    c = eb.stage_macs(cfg | {"pooling": "cls-pooler"}, {}, batch=2, seq=4)  # one layer = the last: 2 rows go on
    assert c["qkv"] == 8 * 8 * 8 * 3 and c["o_proj"] == 2 * 8 * 8 and c["attention"] == 2 * 2 * 2 * 4 * 4
    w = np.zeros((8, 4), np.float32)
    w[0, 1] = 1.0  # one block of two (rows 0-3 and 4-7) per column, in one column of four
    assert eb.block_density({"layers.0.q.weight": w}, cfg) == {"layers.0.q": 1 / 8}


def test_cli_bench_with_fp32_baseline_in_the_same_rounds(quick_cls_artifact, tiny_cls_artifact, tmp_path, monkeypatch):
    """--baseline adds the original on the stock runtimes as RUNTIME-fp32 contenders, interleaved in the same
    rounds (same round count, ratios against the chosen reference); native is not run on the baseline."""
    import json

    from edgekit import bench as B
    from edgekit.cli import main

    for name, value in dict(MIN_RUNS=5, WARMUP_RUNS=2, WARMUP_S=0.0, ROUNDS=2).items():
        monkeypatch.setattr(B, name, value)
    art, _ = quick_cls_artifact
    out = tmp_path / "b.jsonl"
    assert main(["bench", str(art), "--runtime", "native,onnxruntime", "--baseline", str(tiny_cls_artifact.root),
                 "--reference", "onnxruntime-fp32", "--batch", "1", "--seq", "16", "--min-time", "0.02",
                 "--json", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["runtime"] for r in rows] == ["native", "onnxruntime", "onnxruntime-fp32"]
    assert rows[2]["precision"] != rows[1]["precision"]  # the fp32 original, not the int8 export again
    assert len({r["rounds"] for r in rows}) == 1 and all(r["ratio_vs"]["reference"] == "onnxruntime-fp32" for r in rows)
    assert rows[2]["runtime_version"] == rows[1]["runtime_version"]
    assert main(["bench", str(art), "--runtime", "native", "--baseline", str(tiny_cls_artifact.root)]) == 2


def _attention_vs_numpy():
    """The ISA-dependent checks of test_attention_every_isa_path_matches_numpy_at_odd_shapes on the active path;
    returns the worst error and how many transposed cases ran."""
    from edgekit import _engine

    rng = np.random.default_rng(7)
    worst, transposed = 0.0, 0
    for n in (1, 7, 8, 9, 16, 17, 33, 130):
        for d in (8, 16, 24, 32, 40, 64, 128):
            q, k, v = (rng.normal(0, 1.5, (n, d)).astype(np.float32) for _ in range(3))
            for nq in sorted({1, n}):
                got = _engine.attention_head(q, k, v, nq)
                s = (q.astype(np.float64) @ k.T.astype(np.float64)) / np.sqrt(d)
                p = np.exp(s - s.max(1, keepdims=True)); want = (p / p.sum(1, keepdims=True)) @ v
                err = np.abs(got[:nq] - want[:nq]).max()
                assert err < 2e-5, (n, d, nq, err)
                assert (got[nq:] == 0).all()
                worst = max(worst, err)
                if _engine.isa() in ("avx512", "avx512_vnni") and d % 16 == 0:  # transposed q, k, v (engine layout)
                    got_t = _engine.attention_head(q, k, v, nq, transposed=True)
                    err_t = np.abs(got_t[:nq] - want[:nq]).max()
                    assert err_t < 2e-5 and (got_t[nq:] == 0).all(), (n, d, nq, err_t)
                    transposed += 1
                    if _engine.isa() == "avx512_vnni":  # int8 Q K^T and P V, emulated on the same rounded operands
                        f32 = np.float32
                        sq, sk = f32(np.abs(q[:nq]).max()) / f32(127), f32(np.abs(k).max()) / f32(127)
                        qi = np.clip(np.round(q * (f32(1) / sq)), -127, 127).astype(np.int64)
                        ki = np.clip(np.round(k * (f32(1) / sk)), -127, 127).astype(np.int64)
                        s8 = (qi @ ki.T) * (float(sq) * float(sk) / np.sqrt(d))
                        pq = np.round(255 * np.exp(s8 - s8.max(1, keepdims=True)))  # u8 probabilities
                        sv = np.abs(v).max(0) / f32(127)  # s8 V, one scale per feature
                        vi = np.round(v * (f32(1) / sv)).astype(np.int64)
                        want8 = (pq @ vi) * sv / pq.sum(1, keepdims=True)
                        got8 = _engine.attention_head(q, k, v, nq, transposed=True, int8=True)
                        err8 = np.abs(got8[:nq] - want8[:nq]).max()
                        # the kernel's short exp may round a probability that sits at a .5 tie the other way: one
                        # step of 1/255 of the row's largest weight, at most |v| / (row sum) on an output
                        tol = 2e-5 + np.abs(v).max() / pq.sum(1).min()
                        assert err8 < tol and (got8[nq:] == 0).all(), (n, d, nq, err8, tol)
                        # and the whole int8 attention stays near the exact one (8-bit probabilities and values)
                        assert np.abs(got8[:nq] - want[:nq]).max() < 0.05 * np.abs(v).max(), (n, d, nq)
                        transposed += 1
                    else:
                        try:
                            _engine.attention_head(q, k, v, nq, transposed=True, int8=True)
                            raise AssertionError("int8 attention accepted off the VNNI path")
                        except ValueError:
                            pass
                elif d % 16 == 0:
                    try:
                        _engine.attention_head(q, k, v, nq, transposed=True)
                        raise AssertionError("transposed attention accepted off the AVX-512 path")
                    except ValueError:
                        pass
    return worst, transposed


def test_attention_every_isa_path_matches_numpy_at_odd_shapes():
    """Each ISA's attention (scalar, AVX2, AVX-512; on VNNI also int8 Q K^T and P V against numpy on the same
    rounded operands) vs float64 numpy: sequence lengths that are not multiples of the 8/16-key tiles, head sizes 8..128,
    every query row and the CLS-only (first row) case."""
    from edgekit import _engine, kernels

    for isa in kernels.available_isas():
        with kernels.using_isa(isa):
            assert _engine.isa() == isa
            worst, transposed = _attention_vs_numpy()
        # the transposed variant (what the engine runs after a sparse int8 QKV) was checked wherever AVX-512 is
        assert transposed > 0 or not isa.startswith("avx512"), isa
        assert worst < 2e-5, isa


def _random_fp32_encoder(hidden, heads, cls, layers=2, vocab=50, maxpos=160):
    """A random dense fp32 encoder's (config, tensors) for _engine.Encoder."""
    rng = np.random.default_rng(hidden * 10 + heads + cls)
    r = lambda *shape, sd: rng.normal(0, sd, shape).astype(np.float32)
    t = {"embeddings.word": r(vocab, hidden, sd=1.0), "embeddings.position": r(maxpos, hidden, sd=0.5),
         "embeddings.token_type": r(2, hidden, sd=0.5),
         "embeddings.ln.weight": 1 + r(hidden, sd=0.1), "embeddings.ln.bias": r(hidden, sd=0.1)}
    shapes = {"q": (hidden, hidden), "k": (hidden, hidden), "v": (hidden, hidden), "o": (hidden, hidden),
              "ffn_in": (2 * hidden, hidden), "ffn_out": (hidden, 2 * hidden)}
    for i in range(layers):
        for name, (n, k) in shapes.items():  # sd 1.5/sqrt(k): peaked attention rows, not uniform ones
            t[f"layers.{i}.{name}.weight"] = r(n, k, sd=1.5 / np.sqrt(k))
            t[f"layers.{i}.{name}.bias"] = r(n, sd=0.1)
        for ln in ("attn_ln", "ffn_ln"):
            t[f"layers.{i}.{ln}.weight"] = 1 + r(hidden, sd=0.1)
            t[f"layers.{i}.{ln}.bias"] = r(hidden, sd=0.1)
    cfg = dict(hidden=hidden, heads=heads, layers=layers, intermediate=2 * hidden, vocab_size=vocab,
               max_position=maxpos, layer_norm_eps=1e-12, pooling="cls-pooler" if cls else "mean",
               pattern="dense", type_vocab_size=2, num_labels=5)
    if cls:
        t |= {"pooler.weight": r(hidden, hidden, sd=1 / np.sqrt(hidden)), "pooler.bias": r(hidden, sd=0.1),
              "classifier.weight": r(5, hidden, sd=1 / np.sqrt(hidden)), "classifier.bias": r(5, sd=0.1)}
    return cfg, t


def _fp32_model_outputs():
    """Each random fp32 encoder's output on a padded batch, and each row run alone, on the active path."""
    from edgekit import _engine

    lens = np.array([1, 7, 9, 33, 130])  # one padded batch: not multiples of 8 or of the 16-key score tiles
    ids = np.random.default_rng(1).integers(0, 50, (len(lens), lens.max())).astype(np.int64)
    mask = (np.arange(lens.max())[None] < lens[:, None]).astype(np.int64)
    out = {}
    for hidden, heads, cls in [(h, n, c) for h, n in ((128, 4), (128, 2), (120, 5)) for c in (False, True)]:
        enc = _engine.Encoder(*_random_fp32_encoder(hidden, heads, cls), 1, "fp32")
        y = enc.run(ids, mask, None)
        alone = np.concatenate([enc.run(ids[i:i + 1, :l].copy(), mask[i:i + 1, :l].copy(), None) for i, l in enumerate(lens)])
        out[f"{hidden}-{heads}-{cls}"] = np.stack([y, alone])
    return out


def test_avx2_attention_and_layernorm_match_the_scalar_path():
    """A random fp32 encoder (no quantisation: every ISA computes the same function, up to fp32 summation
    order) on the avx2 path (AVX2 attention + add/LayerNorm) vs ref (scalar loops), switched in this process: head sizes 32, 64
    and 24 (hidden 120: LayerNorm with h % 16 != 0), sequence lengths 1, 7, 9, 33 and 130 padded into one
    batch, mean pooling (every query row) and the classifier (CLS-only query row in the last layer); each
    padded row also equals that row run alone."""
    from edgekit import kernels

    if "avx2" not in kernels.available_isas():
        pytest.skip("CPU without AVX2")
    res = {}
    for isa in ("ref", "avx2"):
        with kernels.using_isa(isa):
            res[isa] = _fp32_model_outputs()
    assert res["ref"].keys() == res["avx2"].keys() and len(res["ref"]) == 6
    for key, ref in res["ref"].items():
        got = res["avx2"][key]
        tol = 1e-5 * np.abs(ref).max()
        np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=tol, err_msg=f"avx2 vs ref, {key}")
        np.testing.assert_allclose(got[1], got[0], rtol=0, atol=tol, err_msg=f"avx2 padded vs alone, {key}")
        assert not np.array_equal(got[0], ref[0]), key  # really a different code path


def _with_dense_linears(art, dest, names):
    """A copy of artifact ``art`` whose native config runs ``names`` on the dense kernels (checksums renewed)."""
    import shutil

    from edgekit.artifact import finalize_manifest, load_artifact

    shutil.copytree(art, dest)
    cfg_path = dest / "native" / "config.json"
    cfg = json.loads(cfg_path.read_text())
    assert cfg["pattern"] == "4x1" and cfg["dense_linears"] == []
    cfg["dense_linears"] = names
    cfg_path.write_text(json.dumps(cfg))
    finalize_manifest(dest, load_artifact(dest, verify=False).manifest)
    return dest


# layer 0: q, k, v all dense (one dense fused QKV) and FFN-out dense; layer 1: q alone (QKV stays 4x1), O and FFN-in
MIXED = ["layers.0.q", "layers.0.k", "layers.0.v", "layers.0.ffn_out", "layers.1.q", "layers.1.o", "layers.1.ffn_in"]


@pytest.mark.parametrize("which", ["quick_fe_artifact", "quick_cls_artifact"])
def test_dense_linears_beside_4x1_ones_match_torch_on_every_isa_path(request, which, tmp_path):
    """A 4x1 model whose dense_linears run on the dense kernels (mixed layouts between the GEMMs: transposed for
    the 4x1 kernels, row-major for the dense ones): the same model output as the torch fake-quant reference and
    as the all-4x1 engine, on every kernel path, tile by tile or whole."""
    from edgekit import _engine, kernels

    art, _ = request.getfixturevalue(which)
    mixed = _with_dense_linears(art, tmp_path / "mixed", MIXED)
    f = _feeds(art, n=6, seq=64)
    ref = load(art, "torch", threads=1).run(f)
    for isa in kernels.available_isas():
        with kernels.using_isa(isa):
            sess = load(mixed, "native", threads=2, precision="fp32")
            kinds = set(sess._enc.kernels)  # the reference path has one kernel for both layouts
            assert isa == "ref" or (any("4x1" in k for k in kinds) and any("4x1" not in k for k in kinds)), kinds
            out = sess.run(f)
            assert _cos(out, ref).min() >= 0.9999, isa
            np.testing.assert_allclose(out, ref, atol=1e-3 * np.abs(ref).max() + 1e-6)
            allsparse = load(art, "native", threads=2, precision="fp32").run(f)
            np.testing.assert_allclose(out, allsparse, atol=1e-4 * np.abs(ref).max() + 1e-6)
            if isa == _engine.isa():
                sess._enc.tile_fusion = False
                np.testing.assert_array_equal(sess.run(f), out)


def test_dense_linears_naming_no_linear_is_a_clear_error(quick_fe_artifact, tmp_path):
    art, _ = quick_fe_artifact
    bad = _with_dense_linears(art, tmp_path / "bad", ["layers.0.ffn_in", "layers.9.q"])
    from edgekit.errors import EdgekitError

    with pytest.raises(EdgekitError, match="dense_linears names 'layers.9.q', not an encoder Linear"):
        load(bad, "native", threads=1)
