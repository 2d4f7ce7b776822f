#!/usr/bin/env python
"""Micro-benchmark of the native engine's attention for one (sequence, head), on the active ISA path.

Calls ``_engine.attention_head`` (the engine's per-head kernel, one thread) on random fp32 q, k, v and prints
the minimum and 10th percentile over many calls next to the FMA floor (2 * n * n * d MACs at 2 FMAs of
`--lanes` floats per cycle and `--ghz`). Never asserts; for comparing kernel changes on a quiet machine.

    python bench/attention_head.py --n 128 --d 32
    python bench/attention_head.py --n 128 --d 32 --transposed   # the engine's path after a sparse int8 QKV

The binding copies q, k, v into the engine's packed layout on every call (a few microseconds at n=128), so the
figures are an upper bound on the kernel's time; compare variants with the same flags.
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=128, help="sequence length")
    ap.add_argument("--d", type=int, default=32, help="head size")
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--lanes", type=int, default=8, help="fp32 lanes per FMA (8 for AVX2, 16 for AVX-512)")
    ap.add_argument("--ghz", type=float, default=3.0)
    ap.add_argument("--transposed", action="store_true",
                    help="q, k, v transposed, as the engine has them after a sparse int8 QKV (AVX-512 only)")
    a = ap.parse_args(argv)
    from edgekit import _engine
    from edgekit import kernels as K

    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((a.n, a.d)).astype(np.float32) for _ in range(3))
    for _ in range(50):
        _engine.attention_head(q, k, v, a.n, transposed=a.transposed)
    ts = []
    for _ in range(a.calls):
        t = time.perf_counter()
        _engine.attention_head(q, k, v, a.n, transposed=a.transposed)
        ts.append(time.perf_counter() - t)
    ts.sort()
    floor = 2 * a.n * a.n * a.d / (2 * a.lanes) / (a.ghz * 1e9)
    layout = "transposed" if a.transposed else "row-major"
    print(f"isa {K.cpu_info()['isa']}, {layout}: attention head n={a.n} d={a.d}: min {ts[0] * 1e6:.1f} us, "
          f"p10 {ts[len(ts) // 10] * 1e6:.1f} us; FMA floor {floor * 1e6:.1f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
