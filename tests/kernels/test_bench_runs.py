"""The kernel benchmark runs and writes the JSON Lines fields scripts rely on (no speed is asserted)."""
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
    floor = rows[0]["call_floor_us"]  # the per-call cost of each contender on a 1 x 64 x 16 GEMM
    assert set(floor) == {"edgekit-dense", "edgekit-4x1", "onnxruntime", "openvino"} and min(floor.values()) > 0
    assert "Per-call floor" in (tmp_path / "k.md").read_text()


def test_engine_call_positional_arguments_mean_the_engine_form():
    """bench/kernels.py calls the engine-form GEMMs positionally (keyword matching costs microseconds in the
    binding); the positions must keep meaning u8 output with scale 0.1 and zero point 128."""
    import importlib.util

    import numpy as np
    from edgekit import kernels as K

    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.spec_from_file_location("bench_kernels", root / "bench" / "kernels.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rng = np.random.default_rng(3)
    m, k, n = 70, 96, 40
    w = rng.integers(-128, 128, (n, k), dtype=np.int8)
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    ws = rng.uniform(1e-3, 2e-2, n).astype(np.float32)
    xt = K.buffer_u8(k, K.padded_m(m))
    xt[:, :m] = x.T
    u8 = dict(out_u8=True, out_scale=0.1, out_zp=128)
    dense = bench.engine_call(K.pack_s8(w, "dense"), x, xt, m, ws, dense=True)()
    np.testing.assert_array_equal(dense, K.gemm_u8s8(K.pack_s8(w, "dense"), x, 0.02, 3, ws, **u8))
    p = K.pack_s8(bench.prune_4x1(w, 0.8, rng), "4x1")
    sparse = bench.engine_call(p, x, xt, m, ws, dense=False)()
    np.testing.assert_array_equal(sparse, K.gemm_u8s8_t(p, xt, m, True, True, 0.02, 3, ws, **u8))
    assert dense.dtype == sparse.dtype == np.uint8 and len(np.unique(dense)) > 10  # requantised, not saturated
