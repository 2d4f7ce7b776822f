"""Export + runtimes parity. Tolerances: fp32 runtimes reorder sums; on normalised embeddings / small
logits the difference stays near fp32 epsilon times the reduction depth (~1e-7 * sqrt(K) per layer),
so 1e-4 absolute is a generous bound that still catches any real mismatch (a wrong mask or pooling
shows up at 1e-2 or more)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.artifact import load_artifact
from edgekit.errors import ArtifactError, InputError
from edgekit.runtimes import load


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_runtime_matches_torch_on_tiny_bert(tiny_artifact, real_feeds, runtime):
    ref = load(tiny_artifact, "torch", threads=1).run(real_feeds)
    out = load(tiny_artifact, runtime, threads=2).run(real_feeds)
    assert out.shape == ref.shape == (8, 64)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    # Padding must be ignored: the padded row equals the same row run alone at its true length.
    short = {k: v[1:2, :40].copy() for k, v in real_feeds.items()}
    np.testing.assert_allclose(load(tiny_artifact, runtime, threads=1).run(short)[0], ref[1], atol=1e-4)


@pytest.mark.parametrize("runtime", ["torch", "onnxruntime", "openvino"])
def test_classifier_logits_agree(tiny_cls_artifact, real_feeds, runtime):
    ref = load(tiny_cls_artifact, "torch", threads=1).run(real_feeds)
    out = load(tiny_cls_artifact, runtime, threads=2).run(real_feeds)
    assert out.shape == (8, 5)
    np.testing.assert_allclose(out, ref, atol=1e-4)


def test_manifest_describes_the_folder(tiny_artifact):
    m = tiny_artifact.manifest
    assert m.task == "feature-extraction" and m.format_version == 1
    assert [i.name for i in m.inputs] == ["input_ids", "attention_mask", "token_type_ids"]  # BERT: segments
    assert m.outputs[0].name == "embeddings" and m.outputs[0].shape == ["batch", 64]
    assert set(m.formats) == {"torch", "onnx", "openvino"}
    for rel in m.files:
        assert (tiny_artifact.root / rel).is_file()
    assert any(rel.startswith("tokenizer/") for rel in m.files)
    assert "openvino/model.bin" in m.files


def test_openvino_precision_is_explicit(tiny_artifact):
    """The session reports the precision OpenVINO compiled for, not the hint: what the ops of its runtime model
    execute in. bf16 where the CPU has bf16 instructions; on AVX-512 CPUs without them OpenVINO 2026 still runs
    bf16 (seen on an Ice Lake Xeon); fp32, its fallback, on CPUs without AVX-512."""
    from edgekit.info import cpu_info

    def op_precisions(session):
        rt = session._compiled.get_runtime_model()
        return {op.get_rt_info()["runtimePrecision"].astype(str) for op in rt.get_ordered_ops()
                if "runtimePrecision" in op.get_rt_info()}

    isa = cpu_info()["isa"]
    s = load(tiny_artifact, "openvino", threads=1)
    assert s.precision == "fp32" and "bf16" not in op_precisions(s)
    s = load(tiny_artifact, "openvino", threads=1, precision="bf16")
    ran_bf16 = "bf16" in op_precisions(s)
    assert s.precision == ("bf16" if ran_bf16 else "fp32")
    if isa["avx512_bf16"] or isa["amx_int8"]:
        assert ran_bf16
    if not isa["avx512f"]:
        assert not ran_bf16
    with pytest.raises(InputError, match="allowed: f32, bf16"):
        load(tiny_artifact, "openvino", threads=1, precision="fp8")


def test_tampered_artifact_fails_checksum(tiny_artifact, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_artifact.root, copy)
    load_artifact(copy)  # intact copy verifies
    onnx = copy / "onnx" / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="checksum mismatch for onnx/model.onnx"):
        load_artifact(copy)


def test_other_format_version_is_rejected(tiny_artifact, tmp_path):
    import shutil

    copy = tmp_path / "v99"
    shutil.copytree(tiny_artifact.root, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["format_version"] = 99
    (copy / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="format version 99"):
        load_artifact(copy)


@pytest.mark.parametrize(
    "feeds, match",
    [
        ({"input_ids": np.zeros((1, 8), np.int32), "attention_mask": np.ones((1, 8), np.int64)}, "int64"),
        ({"input_ids": np.zeros((2, 8), np.int64), "attention_mask": np.ones((2, 7), np.int64)}, "same shape"),
        ({"input_ids": np.zeros((0, 8), np.int64), "attention_mask": np.ones((0, 8), np.int64)}, "empty input"),
        ({"input_ids": np.zeros((1, 600), np.int64), "attention_mask": np.ones((1, 600), np.int64)}, "maximum 512"),
        ({"input_ids": np.zeros((1, 8), np.int64)}, "missing input"),
    ],
)
@pytest.mark.parametrize("runtime", ["torch", "onnxruntime", "openvino"])
def test_bad_feeds_are_clear_errors(tiny_artifact, runtime, feeds, match):
    with pytest.raises(InputError, match=match):
        load(tiny_artifact, runtime, threads=1).run(feeds)


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    from edgekit.export import onnx_export
    from edgekit.export import export

    def boom(*a, **k):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(onnx_export, "to_onnx", boom)
    out = tmp_path / "out"
    with pytest.raises(RuntimeError, match="simulated"):
        export("tiny-bert", out, formats="onnx", progress=False)
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow
@pytest.mark.ci
def test_minilm_export_parity(tmp_path):
    """The real model: ONNX Runtime and OpenVINO (f32 hint) embeddings match torch to 1e-4."""
    from edgekit.data import load_dataset, tokenize
    from edgekit.export import export
    from edgekit.runtimes import load_tokenizer

    art = export("minilm-l6", tmp_path / "minilm", formats="onnx,openvino", progress=False)
    feeds = tokenize(load_tokenizer(art), load_dataset("bbc-news", "test").texts[:4], max_length=128)
    ref = load(art, "torch", threads=2).run(feeds)
    for rt in ("onnxruntime", "openvino"):
        out = load(art, rt, threads=2).run(feeds)
        np.testing.assert_allclose(out, ref, atol=1e-4)
        assert (np.sum(out * ref, axis=1) > 0.99999).all()


@pytest.mark.slow
@pytest.mark.ci
def test_eval_probe_openvino_within_one_point_of_torch(tmp_path):
    """Linear-probe accuracy on OpenVINO within 1 point of torch (minilm-l6)."""
    from edgekit.cli import main
    import contextlib
    import io
    import json


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
