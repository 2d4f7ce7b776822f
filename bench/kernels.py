#!/usr/bin/env python
"""Kernel benchmark: edgekit int8 GEMMs (dense and 4x1 block-sparse) vs ONNX Runtime and OpenVINO int8.

For each shape Y[M,N] = X[M,K] W[N,K]^T it times, on the shared interleaved timer of `edgekit.bench` (warm-up,
then every contender in turn each round after untimed lead-in calls; medians per round, ratios per round), in one
process with the same threads: edgekit dense int8, edgekit 4x1 sparse int8 at each sparsity, ONNX Runtime (one
MatMulInteger node: u8 x s8 -> int32, no epilogue) and OpenVINO (u8 FakeQuantize -> MatMul with int8
weights dequantised per channel, which the CPU plugin runs as an int8 FullyConnected; the precision it
really ran is read from the compiled model and reported). The peak is measured in the same run with the
active path's multiply loop (vpdpbusd on AVX-512 VNNI; on AVX2 vpmaddubsw + vpmaddwd + vpaddd, exact with
7-bit weights). On AVX2 edgekit runs twice per shape by default: with full-range s8 weights (exact vpmaddwd
kernels) and with 7-bit weights in [-64, 64] (vpmaddubsw kernels, what `weight_bits: 7` recipes produce); the
stock runtimes get the full-range weights (their speed does not depend on the values).

Two layouts of edgekit's GEMMs, each with its own dense baseline (`x dense` compares within a layout):
- `plain`: what a caller of `gemm_u8s8` gets: X [M,K] in, fp32 Y [M,N] out (the 4x1 kernel transposes X into
  its own buffer on every call and writes fp32 rows through register transposes);
- `engine`: what the native engine runs: the 4x1 kernel reads X already transposed ([K, padded M] at the
  engine's stride, in `buffer_u8` memory) and writes u8 transposed ([N, padded M]), i.e. requantised for the
  next layer; its dense baseline is the dense kernel with u8 output, its natural form.
ONNX Runtime and OpenVINO run their own layouts in both comparisons. Every time includes its contender's per-call
cost (binding or session overhead, thread wake-up), which the run also measures on a 1 x 64 x 16 GEMM and writes
as `call_floor_us` (and under the Markdown table). Writes JSON lines (one object per layout x weights x shape x
sparsity: op, dtype, M, K, N, sparsity, pattern, threads, isa, time_us, gops_effective, peak_fraction,
speedup_vs_dense, speedup_vs_onnxruntime, speedup_vs_openvino, plus layout, kernel and the stock runtimes'
times), a Markdown table and a speedup plot. Never asserts.

    python bench/kernels.py --quick --json out/kernels.jsonl --md out/kernels.md --plot out/kernels.png
"""
from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

import numpy as np

from edgekit import kernels as K

SHAPES_KN = [(384, 384), (384, 1536), (1536, 384), (768, 768), (768, 3072), (3072, 768)]
MS = [1, 32, 128, 512]
SPARSITIES = [0.0, 0.5, 0.7, 0.8, 0.9]


def prune_4x1(w, s, rng):
    keep = rng.random(((w.shape[0] + 3) // 4, w.shape[1])) >= s
    return (w * np.repeat(keep, 4, axis=0)[: w.shape[0]]).astype(np.int8)


def ort_runner(w, x, threads):
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper

    m, k = x.shape
    g = helper.make_graph(
        [helper.make_node("MatMulInteger", ["x", "w", "xz"], ["y"])], "mmi",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, w.shape[0]])],
        [helper.make_tensor("w", TensorProto.INT8, [k, w.shape[0]], np.ascontiguousarray(w.T).tobytes(), raw=True),
         helper.make_tensor("xz", TensorProto.UINT8, [], [3])])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    opts.add_session_config_entry("session.force_spinning_stop", "1")
    s = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return lambda: s.run(None, {"x": x}), "int8"


def ov_runner(w, x, threads):
    import openvino as ov
    import openvino.opset13 as ops

    m, k = x.shape
    n = w.shape[0]
    xf = x.astype(np.float32)
    p = ops.parameter([m, k], np.float32, name="x")
    fq = ops.fake_quantize(p, np.float32(0), np.float32(255), np.float32(0), np.float32(255), 256)
    wc = ops.convert(ops.constant(w), np.float32)
    ws = ops.multiply(wc, ops.constant(np.full((n, 1), 1e-2, np.float32)))
    y = ops.matmul(fq, ws, False, True)
    model = ov.Model([y], [p])
    c = ov.Core().compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32",
                                                "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1})
    prec = "?"
    for op in c.get_runtime_model().get_ops():  # the executed graph: layerType + runtimePrecision per node
        rt = op.get_rt_info()
        keys = set(rt.keys())
        if {"layerType", "runtimePrecision"} <= keys and rt["layerType"].astype(str) == "FullyConnected":
            prec = {"u8": "int8", "i8": "int8"}.get(rt["runtimePrecision"].astype(str), rt["runtimePrecision"].astype(str))
    req = c.create_infer_request()
    return lambda: req.infer({0: xf}), prec


def engine_call(p, x, xt, m, ws, dense):
    """The engine's form of the call (u8 out, requantised; the 4x1 kernel on transposed X and Y), as a closure.

    Positional arguments only: pybind11 matches keyword arguments by name on every call, which cost 1.3-2.6 us
    more than the same call made positionally (measured on a 16-output engine-form call), 8-16% of a 16 us GEMM,
    spent in the binding rather than the kernel.
    """
    if dense:  # gemm_u8s8(w, x, x_scale, x_zp, w_scale, bias, gelu, out_u8, out_scale, out_zp)
        return lambda: K.gemm_u8s8(p, x, 0.02, 3, ws, None, False, True, 0.1, 128)
    # gemm_u8s8_t(w, x, m, x_transposed, y_transposed, x_scale, x_zp, w_scale, bias, gelu, out_u8, out_scale, out_zp)
    return lambda: K.gemm_u8s8_t(p, xt, m, True, True, 0.02, 3, ws, None, False, True, 0.1, 128)


def call_floor(threads: int, rounds: int) -> dict[str, float]:
    """Per-call time (us) of each contender on a 1 x 64 x 16 GEMM: the cost of a call that does almost no work
    (binding or session overhead, thread wake-up), to read the small shapes' times against."""
    rng = np.random.default_rng(1)
    w = rng.integers(-128, 128, (16, 64), dtype=np.int8)
    x = rng.integers(0, 256, (1, 64), dtype=np.uint8)
    ws = np.full(16, 1e-2, np.float32)
    xt = K.buffer_u8(64, K.padded_m(1))
    xt[:, :1] = x.T
    fns = {"edgekit-dense": engine_call(K.pack_s8(w, "dense"), x, xt, 1, ws, dense=True),
           "edgekit-4x1": engine_call(K.pack_s8(prune_4x1(w, 0.8, rng), "4x1"), x, xt, 1, ws, dense=False),
           "onnxruntime": ort_runner(w, x, threads)[0], "openvino": ov_runner(w, x, threads)[0]}
    return {name: float(np.median(ts)) for name, ts in time_interleaved(fns, 0.2, rounds).items()}


class _Call:
    """A zero-argument call as a Session (``run(feeds)``), so the shared timer of ``edgekit.bench`` can time it."""

    def __init__(self, fn):
        self.fn = fn

    def run(self, feeds):
        self.fn()


#: Untimed calls before each contender's timed block in a round (the harness's default is 1). A GEMM is short,
#: and the previous contender's threads may still be spinning and its data filling the caches: without lead-in
#: calls our dense GEMM right after OpenVINO measured 52% / 40% of the peak, with three 61% / 66% (ONNX Runtime's
#: and OpenVINO's own times unchanged). The kernel figures in the README were measured with three.
LEAD_IN_CALLS = 3


def time_interleaved(fns: dict, min_s: float, rounds: int) -> dict[object, list[float]]:
    """Median time (us) of each contender per round, on the shared interleaved timer of ``edgekit.bench``:
    warm-up, then contenders in turn every round with untimed lead-in calls, at least ``min_s`` seconds and
    3 calls per round for each. Index r of every list was measured in the same round r."""
    from edgekit import bench as B

    saved, B.LEAD_IN_RUNS = B.LEAD_IN_RUNS, LEAD_IN_CALLS
    try:
        res = B.measure_point({name: _Call(fn) for name, fn in fns.items()}, {}, min_runs=3 * rounds,
                              min_time_s=min_s, warmup_runs=5, warmup_s=0.1, rounds=rounds)
    finally:
        B.LEAD_IN_RUNS = saved
    return {name: [statistics.median(r) * 1e3 for r in res[name]["rounds_ms"]] for name in fns}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="M=128 on (384,1536) and (1536,384) at sparsity 0/0.8/0.9")
    ap.add_argument("--smoke", action="store_true", help="tiny run for tests")
    ap.add_argument("--m", default=None, help="comma list of M (tokens) instead of the preset's")
    ap.add_argument("--sparsity", default=None, help="comma list of 4x1 sparsities instead of the preset's (0 = dense)")
    ap.add_argument("--threads", type=int, default=None, help="threads for every contender (default: physical cores)")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds timed per contender per shape")
    ap.add_argument("--rounds", type=int, default=10, help="interleaved rounds per shape (more if a quota is short)")
    ap.add_argument("--json", type=Path, help="write one JSON object per line per point")
    ap.add_argument("--md", type=Path, help="write a Markdown table")
    ap.add_argument("--plot", type=Path, help="draw the speedups over the stock runtimes to a PNG")
    ap.add_argument("--weight-bits", default=None,
                    help="comma list of 8 and/or 7 (7: weights in [-64, 64]); default 8,7 on avx2, else 8")
    a = ap.parse_args(argv)
    from edgekit.runtimes import default_threads

    threads = a.threads or default_threads()
    K.set_num_threads(threads)
    isa = K.cpu_info()["isa"]
    if a.smoke:
        ms, kns, sps, a.min_time, a.rounds = [16], [(64, 64)], [0.0, 0.8], 0.05, 2
    elif a.quick:
        ms, kns, sps = [128], [(384, 1536), (1536, 384)], [0.0, 0.8, 0.9]
    else:
        ms, kns, sps = MS, SHAPES_KN, SPARSITIES
    try:
        if a.m:
            ms = [int(v) for v in a.m.split(",")]
        if a.sparsity:
            sps = sorted({0.0} | {float(v) for v in a.sparsity.split(",")})  # dense is every ratio's baseline
    except ValueError:
        ap.error("--m and --sparsity take comma-separated numbers")
    if not all(v >= 1 for v in ms) or not all(0 <= v < 1 for v in sps):
        ap.error("--m values must be >= 1 and --sparsity values in [0, 1)")
    wbits = [int(b) for b in (a.weight_bits or ("8,7" if isa == "avx2" else "8")).split(",")]
    if not set(wbits) <= {7, 8}:
        ap.error(f"--weight-bits: {a.weight_bits!r}; allowed: 8, 7 or 8,7")
    peak = max(K.peak_macs(0.3) for _ in range(5))  # best of 5: a shared VM's noise only ever lowers it
    loop = {"avx512_vnni": "vpdpbusd", "avx2": "vpmaddubsw+vpmaddwd+vpaddd"}.get(isa, "no")
    print(f"isa {isa}, {threads} threads, measured {loop} peak {peak / 1e9:.1f} G MAC/s", file=sys.stderr)
    floor = call_floor(threads, a.rounds)
    print("per-call floor (1 x 64 x 16): " + ", ".join(f"{k} {v:.1f} us" for k, v in floor.items()), file=sys.stderr)
    rng = np.random.default_rng(0)
    rows = []
    for m in ms:
        for k, n in kns:
            w = rng.integers(-128, 128, (n, k), dtype=np.int8)
            x = rng.integers(0, 256, (m, k), dtype=np.uint8)
            ws = np.full(n, 1e-2, np.float32)
            fns, meta = {}, {}
            kernels = {}
            mp = K.padded_m(m)
            xt = K.buffer_u8(k, mp + 64 if (mp // 64) % 2 == 0 else mp)  # the engine's stride: an odd number of lines
            xt[:, :m] = x.T
            for b in wbits:
                wb = w if b == 8 else (w.astype(np.int16) // 2).astype(np.int8)  # [-64, 63]
                for s in sps:
                    ww = wb if s == 0 else prune_4x1(wb, s, rng)
                    p = K.pack_s8(ww, "dense" if s == 0 else "4x1")
                    kernels[(b, s)] = p.info.get("kernel", "")
                    fns[("edgekit", b, s)] = (lambda p=p: K.gemm_u8s8(p, x, 0.02, 3, ws))
                    fns[("edgekit-engine", b, s)] = engine_call(p, x, xt, m, ws, dense=s == 0)
            ort_fn, _ = ort_runner(w, x, threads)
            ov_fn, ov_prec = ov_runner(w, x, threads)
            fns[("onnxruntime", 0.0)], fns[("openvino", 0.0)] = ort_fn, ov_fn
            res = time_interleaved(fns, a.min_time, a.rounds)
            ortr, ovr = np.asarray(res[("onnxruntime", 0.0)]), np.asarray(res[("openvino", 0.0)])
            for layout, b, s in itertools.product(("plain", "engine"), wbits, sps):
                key = "edgekit" if layout == "plain" else "edgekit-engine"
                dense = np.asarray(res[(key, b, 0.0)])
                mine = np.asarray(res[(key, b, s)])
                t = float(np.median(mine))
                macs = m * k * n
                rows.append({
                    "op": "dense" if s == 0 else "sparse", "dtype": "int8", "layout": layout,
                    "M": m, "K": k, "N": n, "sparsity": s,
                    "pattern": "dense" if s == 0 else "4x1", "threads": threads, "isa": isa, "time_us": t,
                    "weight_bits": b, "kernel": kernels[(b, s)],
                    "gops_effective": 2 * macs * (1 - s) / t / 1e3, "gops_dense_equiv": 2 * macs / t / 1e3,
                    "peak_fraction": (macs * (1 - s) / (t * 1e-6)) / peak if peak else None,
                    "speedup_vs_dense": float(np.median(dense / mine)),
                    "speedup_vs_onnxruntime": float(np.median(ortr / mine)),
                    "speedup_vs_openvino": float(np.median(ovr / mine)),
                    "onnxruntime_time_us": float(np.median(ortr)), "openvino_time_us": float(np.median(ovr)),
                    "openvino_precision": ov_prec, "peak_gmacs": peak / 1e9, "rounds": len(mine),
                    "call_floor_us": floor,
                })
                r = rows[-1]
                print(f"{layout:6s} M={m} K={k} N={n} w{b} s={s:.1f}: {t:8.1f} us  {r['gops_effective']:6.1f} GOPS eff  "
                      f"peak {100 * (r['peak_fraction'] or 0):4.0f}%  x{r['speedup_vs_dense']:.2f} dense  "
                      f"x{r['speedup_vs_onnxruntime']:.2f} ORT  x{r['speedup_vs_openvino']:.2f} OV({ov_prec})",
                      file=sys.stderr)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if a.md:
        head = ("| layout | M | K | N | weights | sparsity | time us | GOPS eff | % peak | x dense | x ORT int8 | "
                "x OpenVINO int8 |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
        body = "".join(f"| {r['layout']} | {r['M']} | {r['K']} | {r['N']} | s{r['weight_bits']} | {r['sparsity']:.1f} | {r['time_us']:.1f} | "
                       f"{r['gops_effective']:.1f} | {100 * (r['peak_fraction'] or 0):.0f}% | {r['speedup_vs_dense']:.2f} | "
                       f"{r['speedup_vs_onnxruntime']:.2f} | {r['speedup_vs_openvino']:.2f} |\n" for r in rows)
        a.md.parent.mkdir(parents=True, exist_ok=True)
        note = ("\nPer-call floor (the same calls on a 1 x 64 x 16 GEMM, median us): "
                + ", ".join(f"{k} {v:.1f}" for k, v in floor.items()) + ". Every time above includes its contender's.\n")
        a.md.write_text(head + body + note)
    if a.plot:  # edgekit.plots draws it (linear axes from 0, one panel per contender x layout)
        from edgekit.plots import plot_kernels

        plot_kernels(rows, a.plot, f"edgekit int8 GEMM, {threads} threads, {isa}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
