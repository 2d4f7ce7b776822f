"""The ViT path: Fashion-MNIST reader, the ViT / DeiT adapter, distillation with relations, 4x1 pruning and int8
fake-quant on a tiny random ViT, export parity torch vs ONNX Runtime vs OpenVINO, the image compress driver end
to end, and (slow) the real vit-fmnist teacher's test accuracy."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgekit.arch import drop_layers, encoder, encoder_linears
from edgekit.data.fashion_mnist import LABEL_NAMES, data_root, load_fashion_mnist
from edgekit.errors import InputError
from edgekit.data.images import ImagePreprocessConfig
from edgekit.vision.vit_models import ImageClassifier, hf_preprocess

HAVE_FMNIST = (data_root() / "t10k-images-idx3-ubyte.gz").is_file()
needs_fmnist = pytest.mark.skipif(not HAVE_FMNIST, reason="Debian dataset-fashion-mnist is not installed")


def tiny_vit(layers: int = 3, deit: bool = False, seed: int = 0):
    from transformers import DeiTConfig, DeiTForImageClassification, ViTConfig, ViTForImageClassification

    torch.manual_seed(seed)
    cfg_cls, model_cls = (DeiTConfig, DeiTForImageClassification) if deit else (ViTConfig, ViTForImageClassification)
    cfg = cfg_cls(image_size=28, patch_size=7, num_channels=1, hidden_size=32, num_hidden_layers=layers,
                  num_attention_heads=2, intermediate_size=64, num_labels=10, id2label=dict(enumerate(LABEL_NAMES)),
                  label2id={n: i for i, n in enumerate(LABEL_NAMES)})
    return ImageClassifier(model_cls(cfg).eval())


def tiny_folder(path, layers: int = 4):
    from edgekit.vision.vit_teacher import VitTeacherConfig, preprocessor_config

    model = tiny_vit(layers)
    model.model.save_pretrained(path)
    (path / "preprocessor_config.json").write_text(json.dumps(preprocessor_config(VitTeacherConfig())))
    return path


# ------------------------------------------------------------------------------------------ data
@needs_fmnist
def test_fashion_mnist_splits_sizes_disjoint_and_seeded():
    train, val, test = (load_fashion_mnist(s) for s in ("train", "validation", "test"))
    assert (len(train), len(val), len(test)) == (55000, 5000, 10000)
    assert train.pixels.shape[1:] == (28, 28) and train.pixels.dtype == np.uint8
    assert np.bincount(val.labels).tolist() == [500] * 10  # stratified
    assert val.label_names == LABEL_NAMES and val.id2label[9] == "Ankle boot"
    # validation images are cut from train: none of them is still in train (compare raw bytes of a sample)
    seen = {p.tobytes() for p in train.pixels[:20000]}
    assert sum(p.tobytes() in seen for p in val.pixels[:500]) <= 2  # Fashion-MNIST has a few exact repeats
    other = load_fashion_mnist("validation", seed=1)
    assert not np.array_equal(other.labels, val.labels) or not np.array_equal(other.pixels, val.pixels)
    assert np.array_equal(load_fashion_mnist("validation").pixels, val.pixels)


def test_fashion_mnist_missing_names_the_package(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKIT_FASHION_MNIST", str(tmp_path))
    with pytest.raises(InputError, match="dataset-fashion-mnist"):
        load_fashion_mnist("test")
    with pytest.raises(InputError, match="allowed: train, validation, test"):
        load_fashion_mnist("dev")


# ------------------------------------------------------------------------------------------ adapter
@pytest.mark.parametrize("deit", [False, True])
def test_adapter_describes_the_model(deit):
    model = tiny_vit(3, deit=deit)
    enc = encoder(model)
    base = model.model.base_model
    layer0 = (base.layers if hasattr(base, "layers") else base.encoder.layer)[0]
    assert enc.arch == "vit" and enc.norm == "pre" and enc.pooling == "cls"
    assert (enc.hidden, enc.heads, enc.intermediate, len(enc.layers)) == (32, 2, 64, 3)
    assert enc.image == {"image_size": (28, 28), "patch_size": (7, 7), "num_channels": 1,
                         "prefix_tokens": 2 if deit else 1}
    assert enc.max_position == 16 + enc.image["prefix_tokens"]
    assert enc.layers[0].attn_ln is layer0.layernorm_before and enc.layers[0].ffn_ln is layer0.layernorm_after
    linears = encoder_linears(model)
    assert len(linears) == 18 and linears["layers.0.ffn_in"].weight.shape == (64, 32)
    assert linears["layers.0.ffn_out"].weight.shape == (32, 64)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        hid = enc.hidden_states(x, None)
        assert len(hid) == 4 and hid[0].shape == (3, 16 + enc.image["prefix_tokens"], 32)
        assert torch.allclose(enc.head(hid[-1]), model(x), atol=1e-5)
        # a layer's output changes when its q Linear changes: the description holds the live modules
        linears["layers.2.q"].weight.mul_(0.0)
        assert not torch.allclose(enc.hidden_states(x, None)[-1], hid[-1])


def test_layer_dropping_keeps_a_working_shallower_vit():
    model = tiny_vit(4)
    drop_layers(model, [0, 2, 3])
    assert len(encoder(model).layers) == 3 and model.model.config.num_hidden_layers == 3
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_preprocessing_matches_the_teacher_normalisation(tmp_path):
    from edgekit.vision.vit_teacher import to_pixel_values

    prep = hf_preprocess(tiny_folder(tmp_path / "m"))
    imgs = np.random.default_rng(0).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    assert np.allclose(prep.apply(imgs), to_pixel_values(imgs), atol=1e-6)
    three = ImagePreprocessConfig(32, 32, (0.5,) * 3, (0.5,) * 3)  # grey -> 3 channels, resized
    out = three.apply(imgs)
    assert out.shape == (4, 3, 32, 32) and np.array_equal(out[:, 0], out[:, 2])
    assert ImagePreprocessConfig.from_dict(prep.to_dict()) == prep


# ------------------------------------------------------------------------------------------ techniques
def test_distill_with_relations_prune_4x1_and_fake_quant_on_a_tiny_vit():
    from edgekit.compress.prune import Pruner, total_sparsity
    from edgekit.compress.stages.distill import DistillConfig, make_student
    from edgekit.formats import fake_quant as FQ
    from edgekit.compress.vision import ImageDistiller, train

    teacher = tiny_vit(4)
    cfg = DistillConfig(student_layers=[0, 2, 3], relation_teacher_layer=2, hidden_weight=1.0)
    student = make_student(teacher, cfg)
    dist = ImageDistiller(teacher, student, cfg)
    assert (dist.t_rel, dist.s_rel, dist.layer_map) == (2, 2, [0, 2, 3])
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    loss, parts = dist.loss(x[:8], y[:8])
    assert set(parts) == {"logits", "labels", "hidden", "relation"} and all(np.isfinite(list(parts.values())))
    # a student identical to its teacher has no relation loss from the same layer
    same = ImageDistiller(teacher, make_student(teacher, DistillConfig(relation_teacher_layer=3)),
                          DistillConfig(relation_teacher_layer=3))
    assert same.loss(x[:8], y[:8])[1]["relation"] < 1e-6
    before = student.model.classifier.weight.clone()
    train(student, dist.loss, x, y, steps=2, lr=1e-3, batch=16, seed=0, desc="t", progress=False)
    assert not torch.equal(before, student.model.classifier.weight)

    linears = encoder_linears(student)
    pruner = Pruner(linears, "4x1")
    pruner.update(1.0, 0.8)
    train(student, dist.loss, x, y, steps=2, lr=1e-3, batch=16, seed=0, desc="t", progress=False, pruner=pruner)
    assert total_sparsity(linears) == pytest.approx(0.8, abs=0.01)
    w = linears["layers.1.ffn_in"].weight  # 4x1 blocks: 4 consecutive output rows share each zero column entry
    blocks = (w.reshape(-1, 4, w.shape[1]) == 0)
    assert torch.equal(blocks.all(1), blocks.any(1))

    with torch.no_grad():
        ref = student(x)
    fq = FQ.insert_fake_quant(student, weight_bits=8)
    assert len(fq) == 18
    with torch.no_grad():
        student(x)
    FQ.finish_calibration(fq)
    with torch.no_grad():
        out = student(x)
    assert not torch.equal(out, ref)  # quantised
    assert torch.nn.functional.cosine_similarity(out, ref, dim=-1).min() > 0.98


# ------------------------------------------------------------------------------------------ export / runtimes
def test_export_parity_torch_onnxruntime_openvino(tmp_path):
    from edgekit.export.vit_export import export_vit_artifact
    from edgekit.runtimes import load

    model = tiny_vit(2)
    prep = ImagePreprocessConfig(28, 28, (0.286,), (0.353,), channels="L")
    art = export_vit_artifact(model, prep, tmp_path / "a", model_name="tiny-vit", labels=list(LABEL_NAMES),
                                progress=False)
    man = art.manifest
    assert man.task == "image-classification" and man.tokenizer is None
    assert [(i.name, i.dtype, i.shape) for i in man.inputs] == [("pixel_values", "float32", ["batch", 1, 28, 28])]
    assert man.extra["preprocess"]["mean"] == [0.286]
    x = np.random.default_rng(0).standard_normal((5, 1, 28, 28)).astype(np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    # fp32 everywhere: differences are summation order only (~1e-6 relative on logits of size ~1)
    for rt in ("torch", "onnxruntime", "openvino"):
        out = load(art, rt, threads=1).run({"pixel_values": x})
        assert out.shape == (5, 10)
        np.testing.assert_allclose(out, ref, atol=1e-4, err_msg=rt)
    with pytest.raises(InputError, match="pixel_values must be a float32"):
        load(art, "onnxruntime", threads=1).run({"pixel_values": x.astype(np.float64)})


@needs_fmnist
def test_compress_cli_on_a_tiny_vit_writes_report_with_ablation(tmp_path, capsys):
    from edgekit.cli import main

    folder = tiny_folder(tmp_path / "vit")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("""name: tiny
batch: 16
stages:
  - {type: distill, relation_teacher_layer: 2, student_layers: [0, 2, 3], steps: 2, ablate_relation: true}
  - {type: prune, pattern: "4x1", sparsity: 0.8, steps: 3, ramp: 0.5, update_every: 1}
  - {type: quantize, calibration_samples: 32, qat_steps: 1}
""")
    out = tmp_path / "out"
    assert main(["compress", str(folder), "-o", str(out), "--recipe", str(recipe), "--data", "fashion-mnist"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["task"] == "image-classification" and rep["precision"] == "int8"
    assert rep["sparsity"]["total"] >= 0.8 and rep["sparsity"]["pattern"] == "4x1"
    assert set(rep["ablation"]) >= {"student_with_relation", "student_without_relation", "teacher"}
    assert set(rep["runtimes"]) == {"torch", "onnxruntime", "openvino", "native"}
    # int8 4x1 on the native engine against torch fake-quant of the same model (parity: tests/test_vit_native.py)
    assert abs(rep["runtimes"]["native"]["accuracy"] - rep["runtimes"]["torch"]["accuracy"]) <= 0.003
    assert "Ablation" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main(["eval", str(out), "--runtime", "onnxruntime", "--data", "fashion-mnist", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["metric"] == "accuracy" and res["n"] == 10000 and res["runtime"] == "onnxruntime"
    assert res["value"] == pytest.approx(rep["runtimes"]["onnxruntime"]["accuracy"], abs=1e-4)
    assert main(["eval", str(out), "--runtime", "native", "--data", "fashion-mnist", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["runtime"] == "native" and res["value"] == pytest.approx(rep["runtimes"]["native"]["accuracy"], abs=1e-4)


# ------------------------------------------------------------------------------------------ real teacher
@pytest.mark.slow
@needs_fmnist
def test_vit_fmnist_teacher_accuracy_on_the_test_split():
    from edgekit.api_images import evaluate_image

    res = evaluate_image("vit-fmnist", "torch", data="fashion-mnist")
    # the seeded 8-epoch build scores 0.8854; issue 26 asks for >= 0.88
    assert res["n"] == 10000 and res["value"] >= 0.88
