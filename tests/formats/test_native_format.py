"""The native folder of a compressed artifact (edgekit.formats.native): what it stores and what its reader refuses."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgekit.formats.int8 import weight_qparams
from edgekit.formats.native import read_native


def test_native_format_round_trip(quick_cls_artifact):
    from safetensors.numpy import load_file

    out, _ = quick_cls_artifact
    cfg, t = read_native(out / "native")
    assert cfg["pattern"] == "4x1" and cfg["precision"] == "int8" and cfg["layers"] == 2 and cfg["num_labels"] == 5
    quant = json.loads((out / "torch" / "quant.json").read_text())["layers"]
    hf = load_file(str(out / "torch" / "model.safetensors"))
    w = hf["bert.encoder.layer.1.intermediate.dense.weight"]
    q, ws = weight_qparams(torch.from_numpy(w), cfg["weight_bits"])  # the quick recipe's "auto": 7 on AVX2 CPUs
    assert cfg["weight_bits"] == json.loads((out / "torch" / "quant.json").read_text())["weight_bits"]
    np.testing.assert_array_equal(t["layers.1.ffn_in.weight"], q.numpy())
    np.testing.assert_allclose(t["layers.1.ffn_in.w_scale"], ws.numpy())
    assert t["layers.1.ffn_in.x_zp"][0] == quant["layers.1.ffn_in"]["x_zp"]
    # q, k, v read the same tensor, so their activation qparams coincide (the engine fuses them)
    assert quant["layers.0.q"] == quant["layers.0.k"] == quant["layers.0.v"]


def test_bad_native_version_rejected(quick_cls_artifact, tmp_path):
    import shutil

    from edgekit.errors import ArtifactError

    out, _ = quick_cls_artifact
    shutil.copytree(out / "native", tmp_path / "n")
    cfg = json.loads((tmp_path / "n" / "config.json").read_text())
    cfg["version"] = 7
    (tmp_path / "n" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ArtifactError, match="version 7"):
        read_native(tmp_path / "n")
