"""The CLI in-process through main(argv): exit codes and one-line errors (CONTRACT.md)."""
from __future__ import annotations

import json
import shutil

import pytest

from edgekit.cli import main


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("edgekit: error: ")
    return err


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("compress", "export", "eval", "bench", "info"):
        assert cmd in out
    for cmd in ("compress", "export", "eval", "bench", "info"):
        assert main([cmd, "--help"]) == 0
        assert "Usage: edgekit " + cmd in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, code, match",
    [
        (["bench", "/no/such/dir"], 2, "no such file or folder: /no/such/dir"),
        (["eval", "no-such-model"], 2, "unknown model 'no-such-model'"),
        (["bench", "tiny-bert", "--runtime", "tensorrt"], 2, "unknown runtime 'tensorrt'; allowed: torch, onnxruntime"),
        (["bench", "tiny-bert", "--batch", "0"], 2, "'--batch': takes comma-separated positive integers"),
        (["export", "tiny-bert", "-o", "{tmp}/x", "--format", "tflite"], 2, "unknown format 'tflite'; allowed: torch, onnx, openvino"),
        (["export", "tiny-bert"], 2, "Missing option '-o'"),
        (["frobnicate"], 2, "No such command 'frobnicate'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv, code, match):
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    assert main(argv) == code
    assert match in _one_line_error(capsys)


def test_export_then_tampered_artifact_is_rejected(capsys, tmp_path):
    out = tmp_path / "art"
    assert main(["export", "tiny-bert", "-o", str(out), "--format", "onnx"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(manifest["formats"]) == {"torch", "onnx"}
    capsys.readouterr()
    weights = out / "torch" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-10] ^= 0x01
    weights.write_bytes(bytes(data))
    assert main(["eval", str(out)]) == 2
    assert "checksum mismatch for torch/model.safetensors" in _one_line_error(capsys)


def test_export_refuses_a_foreign_nonempty_folder(capsys, tmp_path):
    (tmp_path / "keep.txt").write_text("user data")
    assert main(["export", "tiny-bert", "-o", str(tmp_path)]) == 2
    assert "not empty and is not an edgekit artifact" in _one_line_error(capsys)
    assert (tmp_path / "keep.txt").read_text() == "user data"


def test_debug_shows_traceback():
    with pytest.raises(Exception):
        main(["--debug", "eval", "no-such-model"])
