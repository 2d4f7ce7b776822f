"""7-bit weights (quantize.weight_bits: 7): |q_w| <= 63 in torch fake-quant, quant.json, native/ and the report."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import yaml

from edgekit.compress.config import load_recipe, recipe_from_dict
from edgekit.compress.stages.quantize import resolve_weight_bits
from edgekit.errors import ArtifactError, InputError
from edgekit.formats import fake_quant as Q
from edgekit.formats.fake_quant import FakeQuantLinear
from edgekit.formats.int8 import weight_qparams


# ------------------------------------------------------------------------------------------- recipe
@pytest.mark.parametrize("value", [6, 16, "7", "seven", None])
def test_recipe_rejects_other_weight_bits(value):
    with pytest.raises(InputError, match=r"quantize\.weight_bits: Input should be 7, 8 or 'auto'") as exc:
        recipe_from_dict({"stages": [{"type": "quantize", "weight_bits": value}]})
    assert "\n" not in str(exc.value)


def test_recipe_weight_bits_default_and_values():
    assert load_recipe("fast-distilbert").stage("quantize").weight_bits == "auto"
    assert recipe_from_dict({"stages": [{"type": "quantize"}]}).stage("quantize").weight_bits == "auto"
    for v in (7, 8, "auto"):
        assert recipe_from_dict({"stages": [{"type": "quantize", "weight_bits": v}]}).stage("quantize").weight_bits == v


@pytest.mark.parametrize("isa, bits", [("avx2", 7), ("avx512", 8), ("avx512_vnni", 8), ("ref", 8)])
def test_auto_weight_bits_follow_the_active_isa(monkeypatch, isa, bits):
    import edgekit.info

    monkeypatch.setattr(edgekit.info, "kernels_isa", lambda: isa)
    assert resolve_weight_bits("auto") == bits
    assert resolve_weight_bits(7) == 7 and resolve_weight_bits(8) == 8


@pytest.mark.parametrize("flags, bits", [({"avx2": True, "avx512bw": False}, 7),
                                         ({"avx2": True, "avx512bw": True, "avx512_vnni": False}, 8),
                                         ({"avx2": True, "avx512bw": True, "avx512_vnni": True}, 8), ({"avx2": False}, 8)])
def test_auto_weight_bits_without_kernels_use_cpu_flags(monkeypatch, flags, bits):
    import edgekit.info

    monkeypatch.setattr(edgekit.info, "kernels_isa", lambda: None)
    monkeypatch.setattr(edgekit.info, "cpu_info", lambda: {"isa": flags})
    assert resolve_weight_bits("auto") == bits


def test_print_recipe_shows_weight_bits(tmp_path, capsys):
    from edgekit.cli import main

    assert main(["compress", "tiny-bert", "--print-recipe"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["stages"][-1]["type"] == "quantize" and printed["stages"][-1]["weight_bits"] == "auto"
    printed["stages"][-1]["weight_bits"] = 8
    (tmp_path / "r8.yaml").write_text(yaml.safe_dump(printed, sort_keys=False))
    assert main(["compress", "tiny-bert", "--print-recipe", "--recipe", str(tmp_path / "r8.yaml")]) == 0
    assert yaml.safe_load(capsys.readouterr().out)["stages"][-1]["weight_bits"] == 8
    printed["stages"][-1]["weight_bits"] = "auto"
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(printed, sort_keys=False))
    assert main(["compress", "tiny-bert", "--print-recipe", "--recipe", str(tmp_path / "r.yaml")]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out)["stages"][-1]["weight_bits"] == "auto"
    assert f"# quantize.weight_bits auto resolves to {resolve_weight_bits('auto')} on this CPU" in out


# ------------------------------------------------------------------------------------------- pipeline
def _feeds(tok, n=6, seq=48):
    from edgekit.data import load_dataset, tokenize

    f = tokenize(tok, load_dataset("bbc-news", "test").texts[:n], max_length=seq)
    f["attention_mask"][1, 30:] = 0
    f["input_ids"][1, 30:] = tok.pad_token_id
    return f


@pytest.fixture(scope="module")
def seven_bit_artifact(tmp_path_factory):
    """tiny-bert-cls through the `quick` recipe with weight_bits 7, plus the fake-quant student's logits on
    fixed feeds taken just before export (when the pipeline removes the fake-quant modules)."""
    from edgekit.compress import compress
    from edgekit.compress.report import read_report
    from edgekit.zoo import load_torch, resolve

    tmp = tmp_path_factory.mktemp("w7")
    rec = load_recipe("quick").to_dict()
    rec["stages"][-1]["weight_bits"] = 7
    (tmp / "quick7.yaml").write_text(yaml.safe_dump(rec, sort_keys=False))
    _, tok = load_torch(resolve("tiny-bert-cls"))
    feeds = _feeds(tok)
    before = {}
    real_remove = Q.remove_fake_quant

    def spy(model, only=None):
        if only is None:  # the pipeline's final removal, right before the artifact is written
            fq = [m for m in model.modules() if isinstance(m, FakeQuantLinear)]
            before["bits"] = {m.weight_bits for m in fq}
            with torch.inference_mode():
                model.eval()
                before["logits"] = model(torch.from_numpy(feeds["input_ids"]),
                                         torch.from_numpy(feeds["attention_mask"])).float().numpy()
        return real_remove(model, only)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Q, "remove_fake_quant", spy)
        report = read_report(compress("tiny-bert-cls", tmp / "art", recipe=str(tmp / "quick7.yaml"), progress=False))
    return tmp / "art", report, feeds, before


def test_pipeline_7_bit_artifact_records_and_keeps_the_range(seven_bit_artifact):
    from safetensors.numpy import load_file

    from edgekit.formats.native import read_native

    out, report, _, before = seven_bit_artifact
    assert before["bits"] == {7}
    saved = json.loads((out / "report.json").read_text())
    assert saved["weight_bits"] == 7 == report["weight_bits"] and saved["precision"] == "int8"
    assert next(s for s in saved["stages"] if s["stage"] == "quantize")["weight_bits"] == 7
    assert "(7-bit weights)" in (out / "report.md").read_text()
    quant = json.loads((out / "torch" / "quant.json").read_text())
    assert quant["weight_bits"] == 7 and quant["scheme"] == "edgekit-u8s8-v1"
    assert json.loads((out / "native" / "config.json").read_text())["weight_bits"] == 7
    cfg, t = read_native(out / "native")
    assert cfg["weight_bits"] == 7 and cfg["precision"] == "int8"
    int8 = {k: v for k, v in t.items() if k.endswith(".weight") and v.dtype == np.int8}
    assert len(int8) == 12  # every encoder Linear
    for name, w in int8.items():
        assert int(np.abs(w.astype(np.int16)).max()) <= 63, name
    assert max(int(np.abs(w.astype(np.int16)).max()) for w in int8.values()) == 63
    # the native weights are weight_qparams(bits=7) of the exported (pruned) fp32 weights
    hf = load_file(str(out / "torch" / "model.safetensors"))
    q, ws = weight_qparams(torch.from_numpy(hf["bert.encoder.layer.1.intermediate.dense.weight"]), 7)
    np.testing.assert_array_equal(t["layers.1.ffn_in.weight"], q.numpy())
    np.testing.assert_allclose(t["layers.1.ffn_in.w_scale"], ws.numpy())


def test_pipeline_7_bit_torch_runtime_matches_the_model_before_export(seven_bit_artifact):
    from edgekit.runtimes import load

    out, report, feeds, before = seven_bit_artifact
    s = load(out, "torch", threads=1)
    assert s.precision == "int8-fakequant"
    got = s.run(feeds)
    np.testing.assert_allclose(got, before["logits"], rtol=0, atol=1e-5 * np.abs(before["logits"]).max())
    assert report["runtimes"]["torch"]["accuracy"] == report["compressed"]["accuracy"]


def test_pipeline_7_bit_native_engine_matches_torch(seven_bit_artifact):
    from edgekit.runtimes import load

    out, _, feeds, _ = seven_bit_artifact
    from edgekit import kernels as K

    ref = load(out, "torch", threads=1).run(feeds)
    sess = load(out, "native", threads=2, precision="fp32")  # fp32 attention: the tight parity below
    got = sess.run(feeds)
    np.testing.assert_allclose(got, ref, atol=1e-3 * np.abs(ref).max() + 1e-6)
    assert (got.argmax(1) == ref.argmax(1)).all()
    if K.cpu_info()["isa"] == "avx2":  # 7-bit weights select the vpmaddubsw kernels there
        assert sess.kernels == ["avx2-u8s7-4x1"]


def test_read_native_checks_weight_bits(seven_bit_artifact, tmp_path):
    from safetensors.numpy import load_file, save_file

    from edgekit.formats.native import read_native

    out, _, _, _ = seven_bit_artifact
    n = tmp_path / "n"
    shutil.copytree(out / "native", n)
    cfg = json.loads((n / "config.json").read_text())
    del cfg["weight_bits"]  # folders written before the field: 8-bit
    (n / "config.json").write_text(json.dumps(cfg))
    assert read_native(n)[0]["weight_bits"] == 8
    (n / "config.json").write_text(json.dumps({**cfg, "weight_bits": 6}))
    with pytest.raises(ArtifactError, match="weight_bits 6 is not supported; allowed: 7, 8"):
        read_native(n)
    t = load_file(str(n / "weights.safetensors"))
    t["layers.0.q.weight"][0, 0] = 100  # outside [-63, 63]
    save_file(t, str(n / "weights.safetensors"))
    (n / "config.json").write_text(json.dumps({**cfg, "weight_bits": 7}))
    with pytest.raises(ArtifactError, match=r"layers.0.q.weight has values outside \[-63, 63\]"):
        read_native(n)
    (n / "config.json").write_text(json.dumps(cfg))  # the same tensors are fine as 8-bit weights
    read_native(n)
