#!/usr/bin/env python
"""What pybind11's keyword arguments cost per call: the engine-form 4x1 GEMM (64 tokens, 64 inputs, 16 outputs)
called with the epilogue's fields by keyword and then positionally, best of 7 x 20,000 calls each, three times.

    python bench/binding_overhead.py
"""
import timeit

import numpy as np

from edgekit import kernels as K


def main() -> None:
    rng = np.random.default_rng(1)
    w = rng.integers(-128, 128, (16, 64), dtype=np.int8)
    ws = np.full(16, 1e-2, np.float32)
    p = K.pack_s8(w, "4x1")
    xt = K.buffer_u8(64, K.padded_m(64))
    by_keyword = lambda: K.gemm_u8s8_t(p, xt, 64, True, True, 0.02, 3, ws, out_u8=True, out_scale=0.1, out_zp=128)
    positional = lambda: K.gemm_u8s8_t(p, xt, 64, True, True, 0.02, 3, ws, None, False, True, 0.1, 128)
    for _ in range(3):
        a, b = (min(timeit.repeat(f, number=20000, repeat=7)) / 20000 * 1e6 for f in (by_keyword, positional))
        print(f"keywords {a:.2f} us, positional {b:.2f} us, difference {a - b:.2f} us")


if __name__ == "__main__":
    main()
