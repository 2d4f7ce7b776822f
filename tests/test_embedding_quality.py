"""Embedding quality as users feel it: top-10 neighbour overlap, the teacher's linear probe and the drop, in
``edgekit eval --reference`` and in the compress report (every runtime, native included)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.evaluate import neighbour_overlap
from edgekit.errors import InputError


def test_neighbour_overlap_is_one_for_the_same_geometry_and_low_for_unrelated():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 16))
    q, _ = np.linalg.qr(rng.normal(size=(16, 16)))
    assert neighbour_overlap(x, x @ q * 3.0) == pytest.approx(1.0)  # rotation and scale keep every cosine
    unrelated = neighbour_overlap(x, rng.normal(size=(60, 16)))
    assert unrelated < 0.4  # chance level is k / (n - 1) = 10 / 59
    # one point moved next to row 0 replaces one of row 0's ten neighbours and no one else's loses more than one
    y = x.copy()
    y[1] = x[0] + 1e-3 * rng.normal(size=16)
    assert 0.8 < neighbour_overlap(x, y) < 1.0
    with pytest.raises(InputError, match="shapes"):
        neighbour_overlap(x, x[:, :8])


def test_neighbour_overlap_counts_exactly_on_a_small_case():
    # four points on a line: with k=1 each point's nearest neighbour by cosine is fixed by the angles
    angles = np.array([0.0, 0.1, 1.0, 1.3])
    a = np.stack([np.cos(angles), np.sin(angles)], 1)
    b = a[[0, 1, 3, 2]]  # rows 2 and 3 swapped: their own neighbour sets swap too
    assert neighbour_overlap(a, b, k=1) == 1.0
    c = a.copy()
    c[3] = [np.cos(2.5), np.sin(2.5)]  # row 3 moves away: row 2's nearest becomes row 1, row 3's stays row 2
    assert neighbour_overlap(a, c, k=1) == pytest.approx(0.75)


def test_eval_reference_json_has_overlap_and_probe_drop(tiny_artifact, capsys):
    from edgekit.cli import main

    assert main(["eval", str(tiny_artifact.root), "--runtime", "onnxruntime", "--reference", "tiny-bert",
                 "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["metric"] == "linear_probe_accuracy"
    assert res["embedding_cosine"] > 0.999 and res["neighbour_overlap_at_10"] > 0.95
    assert res["reference_linear_probe_accuracy"] == pytest.approx(res["value"], abs=0.01)
    assert res["linear_probe_drop"] == pytest.approx(res["reference_linear_probe_accuracy"] - res["value"])


def test_compress_report_has_the_three_figures_on_every_runtime(quick_fe_artifact):
    out, _ = quick_fe_artifact
    report = json.loads((out / "report.json").read_text())
    c = report["compressed"]
    assert {"embedding_cosine", "neighbour_overlap_at_10", "accuracy", "linear_probe_drop"} <= set(c)
    assert c["linear_probe_drop"] == pytest.approx(report["baseline"]["accuracy"] - c["accuracy"])
    assert 0.0 <= c["neighbour_overlap_at_10"] <= 1.0
    assert set(report["runtimes"]) == {"torch", "onnxruntime", "openvino", "native"}
    for rt, v in report["runtimes"].items():
        assert {"embedding_cosine", "neighbour_overlap_at_10", "accuracy", "linear_probe_drop"} <= set(v), rt
    md = (out / "report.md").read_text()
    assert "| model | cosine to teacher | top-10 neighbour overlap | linear probe | probe drop (points) |" in md
    assert "| native (" in md
