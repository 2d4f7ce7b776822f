#!/usr/bin/env python
"""Cost of GELU in the fused epilogue of one FFN-in-shaped sparse GEMM, in the engine's layouts.

K=384, N=1536, M=128, 80% 4x1-sparse 7-bit weights, X transposed in, u8 transposed out (as the engine chains
FFN-in into FFN-out), with and without GELU, interleaved round by round; prints the median of per-round best
times. Never asserts.

    python bench/gelu_epilogue.py --threads 2
"""
from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=15)
    a = ap.parse_args(argv)
    from edgekit import kernels as K

    K.set_num_threads(a.threads)
    rng = np.random.default_rng(0)
    m, k, n = 128, 384, 1536
    w = rng.integers(-64, 64, (n, k)).astype(np.int8)
    keep = rng.random(((n + 3) // 4, k)) >= 0.8
    p = K.pack_s8((w * np.repeat(keep, 4, 0)[:n]).astype(np.int8), "4x1")
    x = rng.integers(0, 256, (m, k), dtype=np.uint8)
    mp = K.padded_m(m)
    xt = np.zeros((k, mp), np.uint8)
    xt[:, :m] = x.T
    kw = dict(x_scale=0.02, x_zp=3, w_scale=np.full(n, 1e-3, np.float32),
              bias=rng.standard_normal(n).astype(np.float32), out_u8=True, out_scale=0.05, out_zp=3)
    res = {g: [] for g in (False, True)}
    for _ in range(a.rounds):
        for g in res:
            ts = []
            for _ in range(30):
                t = time.perf_counter()
                K.gemm_u8s8_t(p, xt, m, True, True, gelu=g, **kw)
                ts.append(time.perf_counter() - t)
            res[g].append(min(ts) * 1e6)
    print(f"threads {a.threads}, {p.info['kernel']}, K={k} N={n} 80%: without GELU {np.median(res[False]):.0f} us, "
          f"with GELU {np.median(res[True]):.0f} us")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
