"""The kernel benchmark runs and writes CONTRACT-shaped JSON lines (no speed is asserted)."""
import json
import subprocess
import sys
from pathlib import Path

FIELDS = {"op", "dtype", "M", "K", "N", "sparsity", "pattern", "threads", "isa", "time_us", "gops_effective",
          "peak_fraction", "speedup_vs_dense", "speedup_vs_onnxruntime", "speedup_vs_openvino"}


def test_kernel_bench_smoke(tmp_path):
    root = Path(__file__).resolve().parents[2]
    out = tmp_path / "k.jsonl"
    subprocess.run([sys.executable, str(root / "bench" / "kernels.py"), "--smoke", "--json", str(out),
                    "--md", str(tmp_path / "k.md"), "--plot", str(tmp_path / "k.png")], check=True)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    from edgekit import kernels as K

    bits = [8, 7] if K.cpu_info()["isa"] == "avx2" else [8]  # AVX2: full-range and 7-bit weights by default
    # both layouts (plain: X in, fp32 rows out; engine: X transposed in, u8 transposed out), each with its dense
    assert [(r["layout"], r["weight_bits"], r["sparsity"]) for r in rows] == [
        (lay, b, s) for lay in ("plain", "engine") for b in bits for s in (0.0, 0.8)]
    if K.cpu_info()["isa"] == "avx2":  # each ran the kernel its weights select
        assert [r["kernel"] for r in rows] == 2 * ["avx2-u8s8-dense", "avx2-u8s8-4x1", "avx2-u8s7-dense", "avx2-u8s7-4x1"]
    assert all(FIELDS <= set(r) for r in rows)
    assert rows[0]["openvino_precision"] == "int8"  # OpenVINO really ran an int8 FullyConnected
    assert (tmp_path / "k.png").stat().st_size > 0 and "| layout | M |" in (tmp_path / "k.md").read_text()
