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
    assert [r["sparsity"] for r in rows] == [0.0, 0.8]
    assert all(FIELDS <= set(r) for r in rows)
    assert rows[0]["openvino_precision"] == "int8"  # OpenVINO really ran an int8 FullyConnected
    assert (tmp_path / "k.png").stat().st_size > 0 and "| M |" in (tmp_path / "k.md").read_text()
