"""ViTs on the native engine: random-weight ViT / DeiT classifiers built here, written with the native writer and
run by the engine (patch GEMM, prefix tokens, positions, pre-LN layers, final LayerNorm, head) against torch; fp32
and 4x1-pruned int8; both kernel paths this CPU has; the artifact and CLI wiring; the cached vit-fmnist teacher
(slow)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.errors import ArtifactError, InputError
from edgekit.vision.vit_models import ImageClassifier

TASK = "image-classification"


def build_vit(channels: int = 1, patch: int = 7, layers: int = 2, heads: int = 2, deit: bool = False,
              seed: int = 0) -> ImageClassifier:
    """A random-weight 28x28 ViT (or DeiT) classifier, hidden 64, 10 classes. The position embeddings and the
    class token start at zero in transformers' init for some versions: fill them so that they matter."""
    from transformers import DeiTConfig, DeiTForImageClassification, ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    cfg_cls, model_cls = (DeiTConfig, DeiTForImageClassification) if deit else (ViTConfig, ViTForImageClassification)
    cfg = cfg_cls(image_size=28, patch_size=patch, num_channels=channels, hidden_size=64, num_hidden_layers=layers,
                  num_attention_heads=heads, intermediate_size=128, num_labels=10)
    model = model_cls(cfg).eval()
    emb = model.base_model.embeddings
    with torch.no_grad():
        for p in (emb.position_embeddings, emb.cls_token, getattr(emb, "distillation_token", None)):
            if p is not None:
                p.normal_(0, 0.5)
        for name, p in model.named_parameters():  # LayerNorm affine away from (1, 0): a wrong LN shows
            if "layernorm" in name.lower() and p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.2)
    return ImageClassifier(model).eval()


def pixels(n: int, channels: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, channels, 28, 28)).astype(np.float32)


def torch_logits(model, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def native_encoder(model, dest: Path, qstate=None, threads: int = 1):
    from edgekit import _engine
    from edgekit.formats.native import read_native, write_native

    write_native(model, TASK, qstate, dest)
    cfg, tensors = read_native(dest)
    return _engine.Encoder(cfg, tensors, threads, "fp32"), cfg


def run_native(enc, cfg, x: np.ndarray) -> np.ndarray:
    from edgekit.formats.native import image_patches

    return enc.run_image(image_patches(x, cfg["image"]))


def prune_and_quantize(model, x_cal: np.ndarray) -> dict:
    """80% 4x1 pruning and minmax int8 of every encoder Linear, as compress's prune and quantize stages leave them;
    returns the quant state (the fake-quant modules are taken out again)."""
    from edgekit.arch import encoder_linears
    from edgekit.compress.prune import mask_for
    from edgekit.formats.fake_quant import finish_calibration, insert_fake_quant, quant_state, remove_fake_quant

    with torch.no_grad():
        for lin in encoder_linears(model).values():
            lin.weight.mul_(mask_for(lin.weight.abs(), 0.8, "4x1"))
    fq = insert_fake_quant(model)
    torch_logits(model, x_cal)  # observe the activation ranges
    finish_calibration(fq)
    state = quant_state(fq)
    remove_fake_quant(model)
    return state


# ------------------------------------------------------------------------------------------ fp32 parity
@pytest.mark.parametrize("kw", [
    dict(channels=1, patch=7, layers=2, heads=2),
    dict(channels=3, patch=4, layers=4, heads=4),
    dict(channels=3, patch=7, layers=3, heads=2, deit=True),  # two prefix tokens (class, distillation)
])
def test_fp32_native_matches_torch(kw, tmp_path):
    model = build_vit(**kw)
    enc, cfg = native_encoder(model, tmp_path / "native")
    assert (cfg["norm"], cfg["precision"], cfg["pattern"]) == ("pre", "fp32", "dense")
    assert cfg["image"]["prefix_tokens"] == (2 if kw.get("deit") else 1)
    assert enc.image_input and enc.out_width == 10
    # batch 1 and a batch of several QKV + attention chunks (128 tokens each: 7 images of 17 tokens, 2 of 50)
    for n in (1, 19):
        x = pixels(n, kw["channels"], seed=n)
        ref, out = torch_logits(model, x), run_native(enc, cfg, x)
        assert out.shape == (n, 10)
        # fp32 throughout; only summation order differs (errors ~1e-6 on logits of size ~1)
        assert np.abs(out - ref).max() <= 1e-3, np.abs(out - ref).max()


def test_two_threads_give_the_one_thread_result(tmp_path):
    model = build_vit(channels=1, patch=4, layers=2, heads=2)
    enc1, cfg = native_encoder(model, tmp_path / "a", threads=1)
    enc2, _ = native_encoder(model, tmp_path / "b", threads=2)
    x = pixels(9, 1)
    np.testing.assert_allclose(run_native(enc2, cfg, x), run_native(enc1, cfg, x), atol=1e-5)


# ------------------------------------------------------------------------------------------ int8, 4x1 sparse
@pytest.mark.parametrize("kw", [dict(channels=1, patch=7, layers=2, heads=2),
                                dict(channels=3, patch=4, layers=3, heads=4)])
def test_int8_4x1_native_matches_torch_fake_quant(kw, tmp_path):
    from edgekit.arch import encoder_linears
    from edgekit.formats.fake_quant import attach_fake_quant
    from edgekit.formats.native import is_4x1

    model = build_vit(**kw)
    state = prune_and_quantize(model, pixels(64, kw["channels"], seed=3))
    assert all(is_4x1(lin.weight) for lin in encoder_linears(model).values())
    enc, cfg = native_encoder(model, tmp_path / "native", state)
    assert (cfg["precision"], cfg["pattern"]) == ("int8", "4x1")
    assert any("4x1" in k for k in enc.kernels)
    ref_model = attach_fake_quant(model, state)
    x = pixels(200, kw["channels"], seed=4)
    ref, out = torch_logits(ref_model, x), run_native(enc, cfg, x)
    cos = (ref * out).sum(-1) / np.linalg.norm(ref, axis=-1) / np.linalg.norm(out, axis=-1)
    assert cos.min() >= 0.999, cos.min()
    assert (ref.argmax(-1) == out.argmax(-1)).mean() >= 0.99


ISA_SCRIPT = """
import sys, numpy as np
from edgekit import _engine, kernels
from edgekit.formats.native import image_patches, read_native
cfg, t = read_native(sys.argv[1])
x = np.load(sys.argv[2])
enc = _engine.Encoder(cfg, t, 1, "fp32")
np.save(sys.argv[3], enc.run_image(image_patches(x, cfg["image"])))
print(kernels.cpu_info()["isa"])
"""


def test_kernel_paths_agree_with_the_env_override(tmp_path):
    """EDGEKIT_ISA=ref and =avx2 (read once, when the library loads: one process each) on the same int8 4x1 ViT.
    int32 accumulation is exact on both paths; what may differ is fp32 summation order in LayerNorm, attention and
    the fp32 GEMMs (~1e-6 relative), which can move an activation across a u8 rounding boundary: one step of one
    input of a dot product, a logit change well under 1e-2 here."""
    from edgekit import kernels

    isas = [i for i in ("ref", "avx2") if i in kernels.available_isas()]
    if len(isas) < 2:
        pytest.skip("this CPU has no AVX2 path to compare with the reference")
    model = build_vit(channels=1, patch=7, layers=2, heads=2)
    state = prune_and_quantize(model, pixels(64, 1, seed=3))
    from edgekit.formats.native import write_native

    write_native(model, TASK, state, tmp_path / "native")
    np.save(tmp_path / "x.npy", pixels(32, 1, seed=5))
    outs = {}
    for isa in isas:
        got = subprocess.run([sys.executable, "-c", ISA_SCRIPT, str(tmp_path / "native"), str(tmp_path / "x.npy"),
                              str(tmp_path / f"{isa}.npy")], env={**os.environ, "EDGEKIT_ISA": isa},
                             capture_output=True, text=True, check=True).stdout.strip()
        assert got == isa
        outs[isa] = np.load(tmp_path / f"{isa}.npy")
    assert np.abs(outs["ref"] - outs["avx2"]).max() <= 1e-2
    assert (outs["ref"].argmax(-1) == outs["avx2"].argmax(-1)).all()


def test_kernel_paths_agree_in_process(tmp_path):
    """The same with the in-process switch (kernels.using_isa), fp32 and int8: weights are packed for the path
    active when the encoder is built."""
    from edgekit import kernels

    isas = [i for i in ("ref", "avx2") if i in kernels.available_isas()]
    if len(isas) < 2:
        pytest.skip("this CPU has no AVX2 path to compare with the reference")
    model = build_vit(channels=3, patch=4, layers=2, heads=4)
    x = pixels(8, 3)
    for qstate in (None, prune_and_quantize(model, pixels(64, 3, seed=3))):
        outs = []
        for isa in isas:
            with kernels.using_isa(isa):
                enc, cfg = native_encoder(model, tmp_path / f"{isa}-{qstate is None}", qstate)
                outs.append(run_native(enc, cfg, x))
        assert np.abs(outs[0] - outs[1]).max() <= (1e-4 if qstate is None else 1e-2)


# ------------------------------------------------------------------------------------------ format and errors
def test_bad_inputs_and_configs_are_refused_in_one_line(tmp_path):
    from edgekit import _engine
    from edgekit.formats.native import read_native

    model = build_vit()
    enc, cfg = native_encoder(model, tmp_path / "native")
    with pytest.raises(ValueError, match=r"image patches must be \[batch, 16, 49\]"):
        enc.run_image(np.zeros((2, 9, 49), np.float32))
    with pytest.raises(ValueError, match="takes images"):
        enc.run(np.zeros((1, 4), np.int64), np.ones((1, 4), np.int64))
    good = json.loads((tmp_path / "native" / "config.json").read_text())
    for change, message in (({"norm": "post"}, "norm 'pre' goes with an image entry"),
                            ({"norm": "sideways"}, "norm 'sideways' is not supported; allowed: post, pre"),
                            ({"image": {**good["image"], "patch_size": [5, 5]}}, "whole patches"),
                            ({"max_position": 40}, r"max_position = prefix_tokens \+ patches \(17\)")):
        (tmp_path / "native" / "config.json").write_text(json.dumps({**good, **change}))
        with pytest.raises(ArtifactError, match=message):
            read_native(tmp_path / "native")
    # the engine makes its own checks too (the C API and the Python binding share them)
    (tmp_path / "native" / "config.json").write_text(json.dumps(good))
    cfg, tensors = read_native(tmp_path / "native")
    del tensors["final_ln.weight"]
    with pytest.raises(ValueError, match="missing tensor final_ln.weight"):
        _engine.Encoder(cfg, tensors, 1, "fp32")


# ------------------------------------------------------------------------------------------ artifact and CLI
def test_artifact_eval_and_bench_on_native(tmp_path, capsys):
    from edgekit.cli import main
    from edgekit.data.images import ImagePreprocessConfig
    from edgekit.export.vit_export import export_vit_artifact
    from edgekit.runtimes import load

    model = build_vit(channels=1, patch=7, layers=2, heads=2)
    prep = ImagePreprocessConfig(28, 28, (0.286,), (0.353,), channels="L")
    art = export_vit_artifact(model, prep, tmp_path / "a", model_name="tiny-vit", labels=[str(i) for i in range(10)],
                              formats=("openvino",), progress=False, native=True)
    assert art.manifest.formats["native"] == "native" and art.manifest.precision["native"] == "fp32"
    x = pixels(6, 1)
    session = load(art, "native", threads=1)
    np.testing.assert_allclose(session.run({"pixel_values": x}), torch_logits(model, x), atol=1e-3)
    with pytest.raises(InputError, match=r"pixel_values must be \[batch, 1, 28, 28\]"):
        session.run({"pixel_values": pixels(2, 3)})
    with pytest.raises(InputError, match="pixel_values must be a float32"):
        session.run({"pixel_values": x.astype(np.float64)})
    out = tmp_path / "bench.jsonl"
    assert main(["bench", str(art.root), "-r", "native,openvino", "-b", "1,2", "--min-time", "0.01",
                 "--json", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(r["runtime"], r["batch"]) for r in rows} == {(rt, b) for rt in ("native", "openvino") for b in (1, 2)}
    assert all(r["seq"] == 28 and r["latency_ms"]["p50"] > 0 for r in rows)


@pytest.mark.skipif(not Path("/usr/share/datasets/fashion-mnist").is_dir(), reason="no Fashion-MNIST")
def test_eval_cli_native_matches_torch_on_fashion_mnist(tmp_path, capsys):
    from edgekit.cli import main
    from edgekit.data.images import ImagePreprocessConfig
    from edgekit.export.vit_export import export_vit_artifact

    model = build_vit(channels=1, patch=7, layers=2, heads=2)
    prep = ImagePreprocessConfig(28, 28, (0.286,), (0.353,), channels="L")
    art = export_vit_artifact(model, prep, tmp_path / "a", model_name="tiny-vit", labels=[str(i) for i in range(10)],
                              formats=(), progress=False, native=True)
    res = {}
    for rt in ("torch", "native"):
        capsys.readouterr()
        assert main(["eval", str(art.root), "--runtime", rt, "--data", "fashion-mnist", "--json"]) == 0
        res[rt] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["native"]["runtime"] == "native" and res["native"]["n"] == res["torch"]["n"] == 10000
    assert res["native"]["value"] == pytest.approx(res["torch"]["value"], abs=0.003)


# ------------------------------------------------------------------------------------------ real teacher
@pytest.mark.slow
def test_cached_vit_fmnist_teacher_native_vs_torch_accuracy(tmp_path):
    """The cached vit-fmnist teacher (never rebuilt here), fp32 on the native engine and on torch: accuracy on the
    first 500 Fashion-MNIST test images within 0.3 point."""
    from edgekit.data.fashion_mnist import image_splits
    from edgekit.evaluate import evaluate_session
    from edgekit.formats.native import read_native, write_native
    from edgekit.paths import cache_dir
    from edgekit.runtimes.torch_backend import ModuleSession
    from edgekit.vision.vit_models import load_image_classifier

    folder = cache_dir() / "models" / "vit-fmnist"
    if not (folder / "model.safetensors").is_file():
        pytest.skip(f"no cached vit-fmnist teacher in {folder} (built on first use by edgekit; not rebuilt here)")
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("no Fashion-MNIST")
    from edgekit import _engine
    from edgekit.runtimes.native_backend import NativeImageSession

    model, prep = load_image_classifier(folder)
    write_native(model, TASK, None, tmp_path / "native")
    cfg, tensors = read_native(tmp_path / "native")
    native = NativeImageSession(_engine.Encoder(cfg, tensors, 2, "fp32"), TASK, 2, "fp32", cfg["image"])
    test = image_splits("fashion-mnist")["test"]
    x, y = prep.apply(test.pixels[:500]), test.labels[:500]
    acc = {name: evaluate_session(s, x, y)["value"]
           for name, s in (("torch", ModuleSession(model, TASK)), ("native", native))}
    assert acc["torch"] >= 0.85, acc
    assert abs(acc["native"] - acc["torch"]) <= 0.003, acc


def test_c_api_refuses_an_image_model_in_one_line(tmp_path):
    """The C API (run_artifact example) takes token ids only: a ViT artifact is refused, exit 2, one line."""
    import shutil

    from edgekit.data.images import ImagePreprocessConfig
    from edgekit.export.vit_export import export_vit_artifact

    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc)")
    root = Path(__file__).resolve().parents[1]
    subprocess.run(["make", "-s", "c-example"], cwd=root, check=True, capture_output=True, timeout=600)
    prep = ImagePreprocessConfig(28, 28, (0.286,), (0.353,), channels="L")
    art = export_vit_artifact(build_vit(), prep, tmp_path / "a", model_name="tiny-vit", labels=None, formats=(),
                              progress=False, native=True)
    r = subprocess.run([str(root / "build" / "c-example" / "run_artifact"), str(art.root)], input="1 2 3\n",
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "an image model (ViT)" in lines[0], r.stderr
