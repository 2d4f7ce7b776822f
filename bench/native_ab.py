#!/usr/bin/env python
"""A/B two compressed artifacts on the native engine, timed in alternation in one process.

Each round runs every (artifact, batch) variant `--runs` times and keeps its fastest run; the table shows the
median of those per-round minima, per sequence, and the median per-round ratio of the first variant's time per
sequence to each other's. Made for comparing variants of one model (e.g. 8- vs 7-bit weights, or batch 1 vs 8
per sequence) on a noisy machine. Never asserts.

    python bench/native_ab.py out/bbc8 out/bbc --seq 128
    python bench/native_ab.py out/bbc --batch 1,8
    python bench/native_ab.py out/bbc --batch 1,8 --whole-gemm         # tile-by-tile layers vs whole GEMMs
    python bench/native_ab.py out/bbc --batch 1,8 --precision fp32,int8  # fp32 vs int8 attention
    python bench/native_ab.py out/bbc --batch 1,8 --per-chunk           # one head-task region per chunk vs merged
"""
from __future__ import annotations

import argparse
import statistics
import time

import numpy as np


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", default="1", help="comma-separated batch sizes (each is a variant)")
    ap.add_argument("--precision", default="fp32", help="comma-separated native attention precisions (variants)")
    ap.add_argument("--whole-gemm", action="store_true",
                    help="also each variant with the layers after attention as whole GEMMs (Encoder.tile_fusion off)")
    ap.add_argument("--per-chunk", action="store_true",
                    help="also each variant with one attention region per chunk (Encoder.merge_chunks off)")
    a = ap.parse_args(argv)
    from edgekit.runtimes import load

    batches = [int(b) for b in a.batch.split(",")]
    precisions = [x.strip() for x in a.precision.split(",") if x.strip()]
    # Encoder switches per variant (attribute -> value) and their labels
    switches = [({}, "")]
    if a.whole_gemm:
        switches.append(({"tile_fusion": False}, " whole-GEMM"))
    if a.per_chunk:
        switches.append(({"merge_chunks": False}, " per-chunk"))
    rng = np.random.default_rng(0)
    variants = []  # (label, batch, session, feeds, switches)
    for p in a.artifacts:
        for pr in precisions:
            sess = load(p, "native", threads=a.threads, precision=pr)
            for sw, tag in switches:
                label = p + ("" if precisions == ["fp32"] else f" {pr}") + tag
                for b in batches:
                    feeds = {"input_ids": rng.integers(1000, 20000, (b, a.seq)).astype(np.int64),
                             "attention_mask": np.ones((b, a.seq), np.int64),
                             "token_type_ids": np.zeros((b, a.seq), np.int64)}
                    variants.append((label, b, sess, feeds, sw))

    def apply(s, sw):
        s._enc.tile_fusion = sw.get("tile_fusion", True)
        s._enc.merge_chunks = sw.get("merge_chunks", True)

    for _, _, s, feeds, sw in variants:
        apply(s, sw)
        for _ in range(3):
            s.run(feeds)
    best = [[] for _ in variants]
    for _ in range(a.rounds):
        for i, (_, b, s, feeds, sw) in enumerate(variants):
            apply(s, sw)
            ts = []
            for _ in range(a.runs):
                t = time.perf_counter()
                s.run(feeds)
                ts.append(time.perf_counter() - t)
            best[i].append(min(ts) * 1e3 / b)
    first = f"{variants[0][0]} b{variants[0][1]}"
    print(f"| variant | batch | kernels | ms per sequence (median of per-round best) | {first} / this |\n"
          "|---|---:|---|---:|---:|")
    for (p, b, s, _, _), t in zip(variants, best):
        ratio = statistics.median(x / y for x, y in zip(best[0], t))
        print(f"| {p} | {b} | {', '.join(s.kernels)} | {statistics.median(t):.2f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
