#!/usr/bin/env python
"""In-process A/B of two builds of the kernels library: engine-form int8 GEMMs, interleaved round by round.

Separate processes for the old and the new build differ by more than the change being judged on this VM (the
same build gave 0.5-1.6x between processes); here both builds are loaded side by side through their C ABI
(ctypes, RTLD_LOCAL: each keeps its own thread pool), their outputs are compared byte for byte, and each round
times A and B back to back (order alternating, a 1 ms pause between, so the other pool's workers have gone to
sleep). Prints per shape and sparsity the median time of each and the median and IQR of the per-round ratio B/A.

    cp .venv/lib/python3.11/site-packages/edgekit/libedgekit.so /tmp/a.so   # before the change
    # ... change, rebuild (pip install --no-build-isolation --no-deps -e .) ...
    python kernels/tools/ab_builds.py /tmp/a.so .venv/lib/python3.11/site-packages/edgekit/libedgekit.so

Any library that exports the C ABI works as a build: libedgekit.so, or the _kernels*.so module of a build from before
the kernels became a shared library (it linked them statically and exported the same ek_* symbols).

The times include a ctypes call (~1-2 us), the same for both builds. M = 128 tokens, 2 threads, u8 output
(requantised); the 4x1 kernel reads X transposed and writes Y transposed, as the native engine does.
"""
from __future__ import annotations

import argparse
import ctypes as C
import statistics
import time

import numpy as np


class Epilogue(C.Structure):  # ek_epilogue (kernels/include/edgekit/kernels.h)
    _fields_ = [("x_scale", C.c_float), ("x_zp", C.c_int32), ("w_scale", C.c_void_p), ("bias", C.c_void_p),
                ("gelu", C.c_int32), ("out_u8", C.c_int32), ("out_scale", C.c_float), ("out_zp", C.c_int32)]


def open_lib(path: str, threads: int):
    lib = C.CDLL(path, mode=C.RTLD_LOCAL)
    lib.ek_pack_s8.restype = C.c_void_p
    lib.ek_pack_s8.argtypes = [C.c_void_p, C.c_int64, C.c_int64, C.c_int]
    lib.ek_gemm_u8s8.argtypes = [C.c_void_p, C.c_void_p, C.c_int64, C.c_int64, C.c_void_p, C.c_void_p, C.c_int64]
    lib.ek_gemm_u8s8_t.argtypes = [C.c_void_p, C.c_void_p, C.c_int64, C.c_int64, C.c_int32, C.c_void_p, C.c_void_p,
                                   C.c_int64, C.c_int32]
    lib.ek_alloc_buffer.restype = C.c_void_p
    lib.ek_alloc_buffer.argtypes = [C.c_size_t]
    lib.ek_packed_free.argtypes = [C.c_void_p]
    lib.ek_set_num_threads(threads)
    return lib


def prune_4x1(w, s, rng):
    keep = rng.random(((w.shape[0] + 3) // 4, w.shape[1])) >= s
    return (w * np.repeat(keep, 4, axis=0)[: w.shape[0]]).astype(np.int8)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", help="build A (.so)")
    ap.add_argument("b", help="build B (.so)")
    ap.add_argument("--shapes", default="384x384,768x768,384x1536,1536x384", help="KxN list")
    ap.add_argument("--sparsity", default="0,0.8,0.9", help="0 = the dense kernel")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    libs = [open_lib(p, a.threads) for p in (a.a, a.b)]
    m, ldx = 128, 192  # the engine's XT stride: an odd number of 64-byte lines
    cases = []
    for shape in a.shapes.split(","):
        k, n = (int(v) for v in shape.split("x"))
        rng = np.random.default_rng(0)
        w = rng.integers(-128, 128, (n, k), dtype=np.int8)
        x = rng.integers(0, 256, (m, k), dtype=np.uint8)
        buf = libs[0].ek_alloc_buffer(k * ldx)  # 2 MB pages, as buffer_u8 gives the engine
        xt = np.ctypeslib.as_array((C.c_uint8 * (k * ldx)).from_address(buf)).reshape(k, ldx)
        xt[:] = 0
        xt[:, :m] = x.T
        ws = np.full(n, 1e-2, np.float32)
        ep = Epilogue(0.02, 3, ws.ctypes.data, None, 0, 1, 0.1, 128)
        for s in (float(v) for v in a.sparsity.split(",")):
            wq = np.ascontiguousarray(w if s == 0 else prune_4x1(w, s, rng))
            cases.append(dict(name=f"{k}x{n}@{s:g}", k=k, n=n, s=s, w=wq, x=x, xt=xt, ws=ws, ep=ep))

    def call(lib, c, y):
        """The GEMM of case c with lib on freshly packed weights (so that where they land varies by round)."""
        p = lib.ek_pack_s8(c["w"].ctypes.data, c["n"], c["k"], 0 if c["s"] == 0 else 1)
        if c["s"] == 0:
            args = (p, c["x"].ctypes.data, m, c["k"], C.byref(c["ep"]), y.ctypes.data, c["n"])
            return (lambda: lib.ek_gemm_u8s8(*args)), p
        args = (p, c["xt"].ctypes.data, m, ldx, 1, C.byref(c["ep"]), y.ctypes.data, m, 1)
        return (lambda: lib.ek_gemm_u8s8_t(*args)), p

    for c in cases:  # both builds give the same bytes
        ys = [np.zeros((m, c["n"]) if c["s"] == 0 else (c["n"], m), np.uint8) for _ in libs]
        for lib, y in zip(libs, ys):
            f, p = call(lib, c, y)
            rc = f()
            lib.ek_packed_free(C.c_void_p(p))
            if rc != 0:
                raise SystemExit(f"{c['name']}: a GEMM call failed")
        if not np.array_equal(*ys):
            raise SystemExit(f"{c['name']}: the two builds' outputs differ")
        c["y"] = ys[0]  # one output buffer for both builds
    res = {c["name"]: ([], []) for c in cases}
    for r in range(a.rounds):
        for c in cases:
            for i in ((0, 1) if r % 2 == 0 else (1, 0)):
                f, p = call(libs[i], c, c["y"])
                time.sleep(0.001)
                for _ in range(20):
                    f()
                last = res[c["name"]][i][-1] if res[c["name"]][i] else 50.0
                reps = max(100, int(20000 / max(1.0, last)))  # ~20 ms a sample
                t0 = time.perf_counter()
                for _ in range(reps):
                    f()
                res[c["name"]][i].append((time.perf_counter() - t0) / reps * 1e6)
                libs[i].ek_packed_free(C.c_void_p(p))
    print(f"{'shape@sparsity':16s} {'A us':>8s} {'B us':>8s}  B/A median [IQR] over {a.rounds} rounds")
    for name, (ta, tb) in res.items():
        rat = sorted(y / x for x, y in zip(ta, tb))
        q = len(rat)
        print(f"{name:16s} {statistics.median(ta):8.2f} {statistics.median(tb):8.2f}  "
              f"{statistics.median(rat):.3f} [{rat[q // 4]:.2f}-{rat[3 * q // 4]:.2f}]")


if __name__ == "__main__":
    main()
