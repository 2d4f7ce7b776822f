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


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.parametrize("arch", ["distilbert", pytest.param("roberta", marks=pytest.mark.slow)])
def test_a_users_csv_and_folder_through_compress_eval_everywhere_and_bench(tiny_folder, tmp_path, capsys, arch):
    """Issue 24's path: a CSV with string labels in a column not called ``label`` and the text in one not called
    ``text``, a DistilBERT / RoBERTa classifier folder; every runtime scores the CSV's test split within 2
    points of torch (random weights: the same predictions up to a row or so), and the bench runs on it."""
    import csv

    from edgekit.cli import main

    words = {"billing": "invoice charge refund payment card", "login": "password account sign locked reset",
             "shipping": "parcel delivery courier tracking late"}
    path = tmp_path / "tickets.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "queue", "body"])
        for k in range(150):
            for queue, ws in words.items():
                ws = ws.split()
                w.writerow([f"{queue}-{k}", queue, f"case {k}: my {ws[k % 5]} and {ws[(k * 3 + 1) % 5]} issue, "
                                                   f"ref {k * 7919 % 1000}"])
    cols = ["--data", str(path), "--text-column", "body", "--label-column", "queue"]
    folder = tiny_folder(arch, "sequence", num_labels=3)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"
    assert main(["compress", str(folder), "-o", str(out), "--recipe", str(recipe), "--max-steps", "3", *cols]) == 0
    assert json.loads((out / "manifest.json").read_text())["labels"] == sorted(words)
    capsys.readouterr()
    scores = {}
    for runtime in ("torch", "onnxruntime", "openvino", "native"):
        assert main(["eval", str(out), "--runtime", runtime, "--json", *cols]) == 0
        res = json.loads(capsys.readouterr().out)
        assert (res["n"], res["metric"], res["runtime"]) == (90, "accuracy", runtime)  # 20% of 450 rows
        scores[runtime] = res["value"]
    for runtime, value in scores.items():
        assert abs(value - scores["torch"]) <= 0.02, scores
    table = tmp_path / "bench.jsonl"
    assert main(["bench", str(out), "-r", "native,onnxruntime,openvino", "--reference", "openvino", "-b", "1",
                 "-s", "32", "--min-time", "0.05", "--rounds", "2", "--json", str(table)]) == 0
    rows = [json.loads(line) for line in table.read_text().splitlines()]
    assert {r["runtime"] for r in rows} == {"native", "onnxruntime", "openvino"}
    assert all(r["latency_ms"]["p50"] > 0 and r["batch"] == 1 and r["seq"] == 32 for r in rows)
