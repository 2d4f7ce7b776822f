"""The real EfficientNet-Lite0 through recipe ptq on held-out crops of real photos (Debian plasma-workspace-wallpapers
and mate-backgrounds): int8 top-1 agreement with fp32 on ONNX Runtime and OpenVINO, fp32 exports identical to torch.
Minutes on 2 cores: slow.

Issue 26 targets agreement >= 0.95. On an AVX2 host without VNNI recipe ptq (stem, depthwise and projection
convolutions in float, residual stream ranges from the 99.999th percentile, GPTQ rounding of OpenVINO's 7-bit weights,
300 calibration crops) reached 0.958 on ONNX Runtime and 0.950 on OpenVINO on the 600 held-out crops (see
export/image_export.py for every setting tried); the floors (FLOOR) guard what is reached with a margin, the target
test asks for the issue's figure."""
from __future__ import annotations

import json

import pytest

from edgekit.cli import main
from edgekit.data.images import MIN_PHOTOS, installed_photographs

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(len(installed_photographs()) < MIN_PHOTOS,
                                 reason="plasma-workspace-wallpapers / mate-backgrounds (the real photos) not installed")]
FLOOR = {"onnxruntime": 0.94, "openvino": 0.93}  # measured (0.958 / 0.950 with these settings) minus a margin


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.delenv("EDGEKIT_PHOTO_DIR", raising=False)
    out = tmp_path_factory.mktemp("lite0") / "lite0"
    assert main(["compress", "efficientnet-lite0", "--recipe", "ptq", "-o", str(out)]) == 0
    yield out, json.loads((out / "report.json").read_text())
    mp.undo()


def test_efficientnet_lite0_ptq_agreement_floor(lite0, capsys):
    out, report = lite0
    rts = report["runtimes"]
    assert report["photo_source"]["name"] == "photos" and report["photo_source"]["photographs"]
    stage = report["stages"][0]
    assert stage["float_ops"] == ["stem", "depthwise", "projection"] and stage["stream_percentile"] == 99.999
    assert stage["gptq"] is True
    for rt in ("onnxruntime", "openvino"):
        assert rts[rt]["n"] >= 500 and rts[rt]["agreement"] >= FLOOR[rt], (rt, rts[rt])
        assert rts[f"{rt}-fp32"]["agreement"] >= 0.995, (rt, rts[f"{rt}-fp32"])  # fp32 export vs torch
    capsys.readouterr()
    assert main(["eval", str(out), "-r", "onnxruntime", "--reference", "efficientnet-lite0", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] >= 500 and res["agreement"] == pytest.approx(rts["onnxruntime"]["agreement"])


def test_efficientnet_lite0_ptq_meets_the_issue_target(lite0):
    _, report = lite0
    assert min(report["runtimes"][rt]["agreement"] for rt in ("onnxruntime", "openvino")) >= 0.95
