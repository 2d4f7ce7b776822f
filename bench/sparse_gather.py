#!/usr/bin/env python
"""Diagnostic (issue 3): is the 4x1 VNNI kernel bound by its gathered XT rows? Times the engine-layout GEMM
(X transposed in, u8 transposed out, M = 128, 80% 4x1) with random kept columns against the same number of
kept blocks on the same first columns of every block-row (XT rows then stay in L1), interleaved, median us.
Never asserts.

    python bench/sparse_gather.py N K          # e.g. 1536 384 and 384 1536; threads: T=1 (default) or T=2
"""
import os
import sys
import time

import numpy as np

from edgekit import kernels as K

K.set_num_threads(int(os.environ.get("T", "1")))
rng = np.random.default_rng(0)
N, Kd, M, s = int(sys.argv[1]), int(sys.argv[2]), 128, 0.8
w = rng.integers(-128, 128, (N, Kd), dtype=np.int8)
keep = rng.random(((N + 3) // 4, Kd)) >= s
same = np.zeros_like(keep)
same[:, : int(round(Kd * (1 - s)))] = True
ws = np.ones(N, np.float32)
xt = np.zeros((Kd, 192), np.uint8)
xt[:, :M] = rng.integers(0, 256, (Kd, M), dtype=np.uint8)
packs = {name: K.pack_s8((w * np.repeat(k, 4, 0)[:N]).astype(np.int8), "4x1")
         for name, k in (("random columns", keep), ("same columns", same))}
fns = {n: (lambda p=p: K.gemm_u8s8_t(p, xt, M, True, True, 1.0, 3, ws, out_u8=True, out_scale=1.0))
       for n, p in packs.items()}
res = {n: [] for n in fns}
for f in fns.values():
    for _ in range(30):
        f()
for _ in range(15):
    for n, f in fns.items():
        ts = []
        for _ in range(40):
            t = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t)
        res[n].append(np.median(ts) * 1e6)
print(f"N={N} K={Kd} M={M} 80%:", {n: (packs[n].info.get("nnz_blocks"), round(float(np.median(v)), 1)) for n, v in res.items()})
