"""Every architecture on the native engine, ONNX Runtime and OpenVINO against torch, on random-weight models built
here (tests/arch/arch_models.py): BERT (head size 32 and 64, odd FFN widths, gelu / gelu_tanh), DistilBERT (relu and
gelu, no token types, relu pre-classifier), RoBERTa and XLM-RoBERTa (positions from padding index + 1),
sentence-transformers pooling (mean, CLS, max, with and without Normalize) and token classification.

Tolerances:
- fp32 engine vs torch: the same function in fp32, summed in another order (and GELU's erf from libm vs torch's):
  observed max abs error ~5e-6 on outputs up to ~5; asserted <= 1e-3 (logits and embeddings).
- int8 4x1 engine vs torch fake-quant of the same weights and activation qparams: the same integer products, so
  they differ only where fp32 rounding moves an activation across a u8 rounding boundary: cosine >= 0.999 and
  the same prediction on >= 99% of inputs (tokens, for token classification).
- ONNX Runtime / OpenVINO fp32 vs torch: other kernels, same fp32 maths: max abs error <= 1e-3.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from arch_models import build, feeds

FP32_ATOL = 1e-3

#: (arch, head, options) of the fp32 parity cases
CASES = {
    "bert-d32": ("bert", "sequence", dict(hidden=64, heads=2, ffn=96)),
    "bert-d64": ("bert", "sequence", dict(hidden=128, heads=2, ffn=200)),
    "bert-gelu-tanh": ("bert", "sequence", dict(act="gelu_new")),
    "distilbert-gelu": ("distilbert", "sequence", {}),
    "distilbert-relu": ("distilbert", "sequence", dict(act="relu")),
    "roberta": ("roberta", "sequence", {}),
    "xlm-roberta": ("xlm-roberta", "sequence", dict(act="gelu_pytorch_tanh")),
    "bert-token": ("bert", "token", {}),
    "distilbert-token": ("distilbert", "token", dict(act="relu")),
    "roberta-token": ("roberta", "token", {}),
}
POOLINGS = [(mode, norm) for mode in ("mean", "cls", "max") for norm in (True, False)]


def _torch_out(model, ids, mask):
    """What the engine computes for ``model`` (a task wrapper or a token classifier): [B, W] or [B, S, W] with
    zeros at padded positions."""
    with torch.no_grad():
        if hasattr(model, "task"):
            return model(ids, mask).numpy()
        return (model(input_ids=ids, attention_mask=mask).logits * mask[..., None]).numpy()


def _native(model, task, dest, qstate=None, attention="fp32"):
    from edgekit import _engine
    from edgekit.formats.native import read_native, write_native

    write_native(model, task, qstate, dest)
    cfg, tensors = read_native(dest)
    return _engine.Encoder(cfg, tensors, 2, attention), cfg


def _wrap(arch, head, pooling=None, **kw):
    from edgekit.models import SentenceEncoder, SequenceClassifier

    model = build(arch, head, **kw)
    if head == "sequence":
        return SequenceClassifier(model), "text-classification"
    if head == "token":
        return model, "token-classification"
    return SentenceEncoder(model, *(pooling or ("mean", True))), "feature-extraction"


@pytest.mark.parametrize("case", list(CASES))
def test_fp32_engine_matches_torch(case, tmp_path):
    arch, head, kw = CASES[case]
    model, task = _wrap(arch, head, **kw)
    ids, mask = feeds(n=8, seq=24)
    enc, cfg = _native(model, task, tmp_path / "native")
    ref = _torch_out(model, ids, mask)
    out = enc.run(ids.numpy(), mask.numpy(), None)
    assert out.shape == ref.shape and enc.per_token == (head == "token")
    assert np.abs(out - ref).max() <= FP32_ATOL, case
    assert np.abs(ref).max() > 0.5  # outputs of a useful size: the tolerance is tight relative to them
    if head == "token":
        assert (out[mask.numpy() == 0] == 0).all()  # padded positions are zeros
    act = {"relu": "relu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh"}.get(kw.get("act"), "gelu")
    assert cfg["activation"] == act and cfg["head"] == head
    assert cfg["type_vocab_size"] == (0 if arch == "distilbert" else 1 if "roberta" in arch else 2)
    assert cfg["position_offset"] == (1 if "roberta" in arch else 0)  # minilm's pad id is 0
    if head == "sequence":
        assert cfg["head_activation"] == ("relu" if arch == "distilbert" else "tanh")


@pytest.mark.parametrize("arch", ["bert", "distilbert", "roberta"])
@pytest.mark.parametrize("mode, normalize", POOLINGS)
def test_sentence_transformers_pooling_from_the_folder(tiny_folder, arch, mode, normalize, tmp_path):
    """A sentence-transformers folder's pooling (1_Pooling/config.json) and Normalize module (modules.json) are
    read on load, and the engine pools the same way."""
    from edgekit.zoo import load_torch, resolve

    folder = tiny_folder(arch, "none", pooling=(mode, normalize))
    model, _ = load_torch(resolve(str(folder)))
    assert (model.pooling, model.normalize) == (mode, normalize)
    ids, mask = feeds(n=6, seq=20)
    ref = _torch_out(model, ids, mask)
    if normalize:
        np.testing.assert_allclose(np.linalg.norm(ref, axis=1), 1.0, rtol=1e-5)
    else:
        assert np.abs(np.linalg.norm(ref, axis=1) - 1).max() > 0.1
    enc, cfg = _native(model, "feature-extraction", tmp_path / "native")
    assert (cfg["pooling"], cfg["normalize"], cfg["head"]) == (mode, normalize, "none")
    assert np.abs(enc.run(ids.numpy(), mask.numpy(), None) - ref).max() <= FP32_ATOL


def test_unsupported_pooling_and_activation_are_refused_in_one_line(tmp_path):
    import json

    from edgekit.arch import encoder
    from edgekit.errors import InputError
    from edgekit.models import SequenceClassifier, sentence_pooling

    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text(json.dumps(
        {"pooling_mode_mean_tokens": False, "pooling_mode_mean_sqrt_len_tokens": True}))
    with pytest.raises(InputError, match="pooling .*mean_sqrt_len_tokens.* is not supported; supported: exactly one"):
        sentence_pooling(tmp_path)
    model = SequenceClassifier(build("bert", "sequence", layers=1))
    model.model.config.hidden_act = "silu"
    with pytest.raises(InputError, match="^unsupported activation 'silu'; supported: gelu, gelu_fast, gelu_new, "):
        encoder(model)


def _prune_4x1(model):
    from edgekit.arch import encoder_linears
    from edgekit.compress.prune import mask_for

    with torch.no_grad():
        for lin in encoder_linears(model).values():
            lin.weight.mul_(mask_for(lin.weight.abs(), 0.8, "4x1"))


@pytest.mark.parametrize("arch, head, kw", [
    ("bert", "sequence", {}), ("distilbert", "sequence", dict(act="relu")), ("roberta", "sequence", {}),
    ("distilbert", "none", {}), ("roberta", "token", {}),
])
def test_int8_4x1_engine_matches_torch_fake_quant(arch, head, kw, tmp_path):
    """80% 4x1-pruned, int8 (minmax-calibrated) model: the engine against torch fake-quant of the same state."""
    from edgekit.formats.fake_quant import (attach_fake_quant, finish_calibration, insert_fake_quant, quant_state,
                                            remove_fake_quant)
    from edgekit.formats.native import is_4x1

    model, task = _wrap(arch, head, pooling=("mean", True), **kw)
    _prune_4x1(model)
    fq = insert_fake_quant(model)
    with torch.no_grad():
        model.eval()
        _torch_out(model, *feeds(n=16, seq=24, seed=5))  # observe
    finish_calibration(fq)
    state = quant_state(fq)
    remove_fake_quant(model)
    enc, cfg = _native(model, task, tmp_path / "native", state)
    assert (cfg["precision"], cfg["pattern"]) == ("int8", "4x1")
    assert all(is_4x1(m.weight) for m in fq.values())
    ref_model = attach_fake_quant(model, state)
    ids, mask = feeds(n=128, seq=16, seed=7)
    ref, out = _torch_out(ref_model, ids, mask), enc.run(ids.numpy(), mask.numpy(), None)
    if head == "token":  # per real token
        keep = mask.numpy().astype(bool)
        ref, out = ref[keep], out[keep]
    cos = (ref * out).sum(-1) / np.linalg.norm(ref, axis=-1) / np.linalg.norm(out, axis=-1)
    assert cos.min() >= 0.999, cos.min()
    if head != "none":
        assert (ref.argmax(-1) == out.argmax(-1)).mean() >= 0.99


@pytest.mark.parametrize("arch, head, pooling", [
    ("bert", "sequence", None), ("distilbert", "sequence", None), ("roberta", "sequence", None),
    ("xlm-roberta", "sequence", None), ("distilbert", "none", ("cls", False)), ("roberta", "none", ("max", True)),
])
def test_export_runs_on_onnxruntime_and_openvino(tiny_folder, arch, head, pooling, tmp_path):
    """Each architecture exported (fp32) runs on ONNX Runtime and OpenVINO as in torch; the artifact's torch folder
    keeps the sentence-transformers pooling (the torch runtime pools as the source model did)."""
    from edgekit.export import export
    from edgekit.runtimes import load

    folder = tiny_folder(arch, head, pooling=pooling)
    art = export(folder, tmp_path / "art", formats="onnx,openvino", progress=False)
    ids, mask = feeds(n=4, seq=20)
    f = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    ref = load(art.root if hasattr(art, "root") else tmp_path / "art", "torch", threads=1).run(f)
    from edgekit.zoo import load_torch, resolve

    src, _ = load_torch(resolve(str(folder)))
    np.testing.assert_allclose(ref, _torch_out(src, ids, mask), rtol=0, atol=1e-5)
    import onnx

    names = [i.name for i in onnx.load(str(tmp_path / "art" / "onnx" / "model.onnx")).graph.input]
    # segment ids are an input only where the model has a segment vocabulary (BERT), not RoBERTa / DistilBERT
    assert names == ["input_ids", "attention_mask"] + (["token_type_ids"] if arch == "bert" else [])
    for runtime in ("onnxruntime", "openvino"):
        out = load(tmp_path / "art", runtime, threads=1).run(f)
        assert out.shape == ref.shape and np.abs(out - ref).max() <= FP32_ATOL, runtime


@pytest.mark.parametrize("arch, head, pooling", [("roberta", "sequence", None), ("distilbert", "none", ("max", False))])
def test_c_api_runs_each_architecture(tmp_path, arch, head, pooling):
    """`make c-example`'s run_artifact (the C API) on a RoBERTa classifier and a DistilBERT max-pooled embedder:
    the same floats as the Python native session (print precision) and as torch (fp32)."""
    import shutil
    import subprocess
    from pathlib import Path

    from edgekit.export import export_artifact
    from edgekit.formats.native import write_native
    from edgekit.runtimes import load

    from arch_models import _tokenizer

    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc)")
    root = Path(__file__).resolve().parents[2]
    subprocess.run(["make", "-s", "c-example"], cwd=root, check=True, capture_output=True, timeout=600)
    model, task = _wrap(arch, head, pooling=pooling)
    art = tmp_path / "art"

    def native(tmp):
        write_native(model, task, None, tmp / "native")
        return {"native": "native"}

    export_artifact(model, _tokenizer(), art, task=task, model_name=arch, formats=("torch",), extra_files=native,
                    progress=False)
    ids = [101, 2023, 2003, 1037, 3231, 1997, 1996, 1039, 17928, 102]
    r = subprocess.run([str(root / "build" / "c-example" / "run_artifact"), str(art)], input=" ".join(map(str, ids)),
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    got = np.array([float(x) for x in r.stdout.split()], np.float32)
    f = {"input_ids": np.array([ids], np.int64), "attention_mask": np.ones((1, len(ids)), np.int64)}
    py = load(art, "native", threads=1).run(f)[0]
    assert got.shape == py.shape and np.abs(got - py).max() <= 1e-4
    ref = _torch_out(model, torch.from_numpy(f["input_ids"]), torch.from_numpy(f["attention_mask"]))[0]
    assert np.abs(got - ref).max() <= FP32_ATOL
