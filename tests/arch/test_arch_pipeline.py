"""The whole compression pipeline through each architecture's adapter: tiny random DistilBERT and RoBERTa
classifiers and sentence embedders go through `edgekit compress` (distillation on logits or embeddings, hidden
states and attention relations; gradual 4x1 pruning; int8 calibration and QAT) and the artifact runs on every
runtime, the native engine matching torch fake-quant (tests/arch/arch_models.py builds the models)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from arch_models import feeds

RECIPE = """
name: arch-smoke
batch: 8
max_length: 48
stages:
  - type: distill
  - type: prune
    pattern: "4x1"
    sparsity: 0.8
    steps: 3
    update_every: 1
  - type: quantize
    calibration_samples: 16
    qat_steps: 1
"""


@pytest.mark.parametrize("arch, head, pooling", [
    ("distilbert", "sequence", None),
    ("roberta", "none", ("cls", True)),
    pytest.param("roberta", "sequence", None, marks=pytest.mark.slow),
    pytest.param("distilbert", "none", ("max", False), marks=pytest.mark.slow),
])
def test_compress_and_run_everywhere(tiny_folder, tmp_path, arch, head, pooling):
    from edgekit.cli import main
    from edgekit.runtimes import load

    folder = tiny_folder(arch, head, pooling=pooling, num_labels=5)  # bbc-news has 5 classes
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"
    assert main(["compress", str(folder), "-o", str(out), "--recipe", str(recipe), "--max-steps", "3"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["precision"] == "int8" and report["sparsity"]["total"] == pytest.approx(0.8, abs=0.01)
    stages = {s["stage"]: s for s in report["stages"]}
    assert set(stages["distill"]["losses"]) >= {"hidden_weight", "relation_weight"}
    cfg = json.loads((out / "native" / "config.json").read_text())
    assert (cfg["arch"], cfg["pattern"], cfg["precision"]) == (arch, "4x1", "int8")
    assert cfg["head"] == ("sequence" if head == "sequence" else "none")
    if pooling:
        assert (cfg["pooling"], cfg["normalize"]) == pooling
    ids, mask = feeds(n=6, seq=20)
    f = {"input_ids": ids.numpy(), "attention_mask": mask.numpy()}
    outs = {r: load(out, r, threads=1).run(f) for r in ("torch", "onnxruntime", "openvino", "native")}
    ref = outs["torch"]  # fake-quant: edgekit's int8 scheme, which the native engine computes
    for runtime, got in outs.items():
        assert got.shape == ref.shape, runtime
        cos = (got * ref).sum(-1) / np.linalg.norm(got, axis=-1) / np.linalg.norm(ref, axis=-1)
        if runtime == "native":  # the same integer maths as torch's fake-quant
            assert cos.min() >= 0.999, cos.min()
        else:  # their own int8 schemes (NNCF, ONNX Runtime's QDQ) of the same weights: a sanity bound only (the
            # 5 logits of a random 2-layer model moved 0.86 in cosine by OpenVINO int8 in one run)
            assert cos.mean() >= 0.8, (runtime, cos.mean())
