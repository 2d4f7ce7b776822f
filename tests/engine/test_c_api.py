"""The C API (kernels/include/edgekit/engine.h) through `make c-example`'s run_artifact, against the Python native
session on the same artifact: the same engine and weights, so the floats agree to print precision (<= 1e-4), and
the C loader refuses what edgekit/artifact.py refuses (a tampered file, a path with '..', a missing folder)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edgekit.runtimes import load

ROOT = Path(__file__).resolve().parents[2]
EXE = ROOT / "build" / "c-example" / "run_artifact"


@pytest.fixture(scope="module")
def run_artifact():
    if shutil.which("cc") is None:
        pytest.skip("no C compiler (cc)")
    subprocess.run(["make", "-s", "c-example"], cwd=ROOT, check=True, capture_output=True, timeout=600)
    assert EXE.is_file()
    return EXE


def _run(exe, art, ids):
    return subprocess.run([str(exe), str(art)], input=" ".join(map(str, ids)) + "\n", capture_output=True, text=True,
                          timeout=120)


def _copy(src, dst):
    shutil.copytree(src, dst)
    return dst


IDS = [101, 2023, 2003, 1037, 3231, 1997, 1996, 1039, 17928, 102]


@pytest.mark.parametrize("which", ["quick_fe_artifact", "quick_cls_artifact"])
def test_c_example_matches_python_native(request, run_artifact, which):
    art, _ = request.getfixturevalue(which)
    ids = np.array([IDS], np.int64)
    ref = load(art, "native", threads=1).run({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    r = _run(run_artifact, art, IDS)
    assert r.returncode == 0, r.stderr
    got = np.array([float(x) for x in r.stdout.split()], np.float32)
    assert got.shape == (ref.shape[1],) and r.stdout.count("\n") == 1
    assert np.abs(got - ref[0]).max() <= 1e-4


def _err_line(r):
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_c_example_refuses_tampered_weights(quick_fe_artifact, run_artifact, tmp_path):
    art = _copy(quick_fe_artifact[0], tmp_path / "a")
    w = art / "native" / "weights.safetensors"
    data = bytearray(w.read_bytes())
    data[-5] ^= 0x01  # one bit of one weight: still a valid file, only the checksum can tell
    w.write_bytes(bytes(data))
    r = _run(run_artifact, art, IDS)
    assert r.returncode == 2 and r.stdout == ""
    line = _err_line(r)
    assert "checksum mismatch" in line and "native/weights.safetensors" in line


def test_c_example_refuses_path_leaving_the_folder(quick_fe_artifact, run_artifact, tmp_path):
    art = _copy(quick_fe_artifact[0], tmp_path / "a")
    (tmp_path / "outside.txt").write_text("secret\n")
    m = json.loads((art / "manifest.json").read_text())
    m["files"]["../outside.txt"] = "0" * 64
    (art / "manifest.json").write_text(json.dumps(m))
    r = _run(run_artifact, art, IDS)
    assert r.returncode == 2
    assert "contains '..'" in _err_line(r)
    # the native folder itself pointed outside, through a symbolic link
    m["files"].pop("../outside.txt")
    (art / "elsewhere").symlink_to(tmp_path)
    m["formats"]["native"] = "elsewhere"
    (art / "manifest.json").write_text(json.dumps(m))
    r = _run(run_artifact, art, IDS)
    assert r.returncode == 2 and "outside the artifact folder" in _err_line(r)


def test_c_example_refuses_missing_folder_and_bad_ids(quick_fe_artifact, run_artifact, tmp_path):
    r = _run(run_artifact, tmp_path / "nope", IDS)
    assert r.returncode == 2 and "no such folder" in _err_line(r)
    r = _run(run_artifact, quick_fe_artifact[0], [101, "x", 102])
    assert r.returncode == 2 and "not a token id" in _err_line(r)
    r = _run(run_artifact, quick_fe_artifact[0], [101, 10**9, 102])
    assert r.returncode == 2 and "outside the vocabulary" in _err_line(r)


def test_c_example_refuses_artifact_without_native(tiny_artifact, run_artifact):
    r = _run(run_artifact, tiny_artifact.root, IDS)
    assert r.returncode == 2 and "no 'native' format" in _err_line(r)


def test_own_sha256_matches_hashlib(tmp_path):
    """The C API's SHA-256 (kernels/engine/c_api_util.cpp) at every padding edge: lengths 0..130 cover the tail
    fitting one final block or spilling into two (55/56 bytes, 63/64/65), plus a long random input."""
    import hashlib

    if shutil.which("g++") is None:
        pytest.skip("no C++ compiler (g++)")
    driver = tmp_path / "sha.cpp"
    driver.write_text('#include <cstdio>\n#include <vector>\n#include "c_api_util.h"\n'
                      "int main() { std::vector<unsigned char> b; int c; while ((c = getchar()) != EOF) b.push_back(c);"
                      " std::puts(ek::capi::sha256_hex(b.data(), b.size()).c_str()); }\n")
    exe = tmp_path / "sha"
    subprocess.run(["g++", "-O1", "-std=c++17", f"-I{ROOT / 'kernels/engine'}", str(driver),
                    str(ROOT / "kernels/engine/c_api_util.cpp"), "-o", str(exe)], check=True, timeout=300)
    rng = np.random.default_rng(0)
    for n in [*range(131), 1000, 1 << 20]:
        data = rng.integers(0, 256, n, dtype=np.uint8).tobytes()
        got = subprocess.run([str(exe)], input=data, capture_output=True, check=True).stdout.decode().strip()
        assert got == hashlib.sha256(data).hexdigest(), n


def test_c_example_reads_dense_linears(quick_fe_artifact, run_artifact, tmp_path):
    """A 4x1 model with some Linears on the dense kernels: the C loader reads the list as the Python one does (the
    same output; integer accumulation makes it the all-4x1 model's too), and refuses a name that is no Linear."""
    from tests.engine.test_native import MIXED, _with_dense_linears

    art, _ = quick_fe_artifact
    mixed = _with_dense_linears(art, tmp_path / "mixed", MIXED)
    ids = np.array([IDS], np.int64)
    ref = load(mixed, "native", threads=1).run({"input_ids": ids, "attention_mask": np.ones_like(ids)})
    r = _run(run_artifact, mixed, IDS)
    assert r.returncode == 0, r.stderr
    got = np.array([float(x) for x in r.stdout.split()], np.float32)
    assert np.abs(got - ref[0]).max() <= 1e-4
    bad = _with_dense_linears(art, tmp_path / "bad", ["layers.0.attn"])
    r = _run(run_artifact, bad, IDS)
    assert r.returncode != 0 and "dense_linears names 'layers.0.attn'" in _err_line(r)
