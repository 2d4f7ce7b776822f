#!/usr/bin/env python
"""A/B two compressed artifacts on the native engine, timed in alternation in one process.

Each round runs every artifact `--runs` times at batch 1 and keeps its fastest run; the table shows the median
of those per-round minima and the median per-round ratio of the first artifact's time to each other's. Made for
comparing variants of one model (e.g. 8- vs 7-bit weights) on a noisy machine. Never asserts.

    python bench/native_ab.py out/bbc8 out/bbc --seq 128
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
    a = ap.parse_args(argv)
    from edgekit.runtimes import load

    sessions = [load(p, "native", threads=a.threads) for p in a.artifacts]
    rng = np.random.default_rng(0)
    feeds = {"input_ids": rng.integers(1000, 20000, (1, a.seq)).astype(np.int64),
             "attention_mask": np.ones((1, a.seq), np.int64), "token_type_ids": np.zeros((1, a.seq), np.int64)}
    for s in sessions:
        for _ in range(5):
            s.run(feeds)
    best = [[] for _ in sessions]
    for _ in range(a.rounds):
        for i, s in enumerate(sessions):
            ts = []
            for _ in range(a.runs):
                t = time.perf_counter()
                s.run(feeds)
                ts.append(time.perf_counter() - t)
            best[i].append(min(ts) * 1e3)
    print(f"| artifact | kernels | ms (median of per-round best) | {a.artifacts[0]} / this |\n|---|---|---:|---:|")
    for p, s, b in zip(a.artifacts, sessions, best):
        ratio = statistics.median(x / y for x, y in zip(best[0], b))
        print(f"| {p} | {', '.join(s.kernels)} | {statistics.median(b):.2f} | {ratio:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
