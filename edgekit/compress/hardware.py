"""Hardware-aware sparsity allocation from latencies measured by edgekit's kernels on this CPU.

For each distinct Linear shape the table holds the median time of the int8 GEMM (M = 128 tokens) when
dense and at 4x1 sparsities 0.5 ... 0.95, measured once and cached per CPU in the edgekit cache. Each
layer then gets the LOWEST sparsity whose measured speedup over dense reaches ``target_speedup`` (least
accuracy cost for the speed asked for). Without a target, or without the kernels, allocation is uniform.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
TOKENS = 128


def _median_us(fn, reps: int = 30) -> float:
    for _ in range(3):
        fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e6)
    return float(np.median(ts))


def latency_table(shapes: set[tuple[int, int]], weight_bits: int = 8) -> dict[str, dict[str, float]]:
    """{"NxK": {"0.0": us, "0.5": us, ...}} for the int8 kernels on this CPU (cached). ``weight_bits`` 7 times
    weights in [-64, 63], which AVX2 CPUs run on other (faster) kernels than full-range ones."""
    from edgekit import kernels as K
    from edgekit.info import cpu_info
    from edgekit.paths import cache_dir

    cpu = cpu_info()
    wtag = "" if weight_bits == 8 else f"-w{weight_bits}"
    path = cache_dir() / f"latency-{cpu['model'].replace(' ', '_').replace('/', '_')}-{K.cpu_info()['isa']}{wtag}.json"
    try:
        table = json.loads(path.read_text()) if path.is_file() else {}
    except ValueError:  # a damaged cache is measured again
        table = {}
    rng = np.random.default_rng(0)
    for n, k in sorted(shapes):
        key = f"{n}x{k}"
        if key in table:
            continue
        lim = 128 if weight_bits == 8 else 64
        w = rng.integers(-lim, lim, (n, k), dtype=np.int16).astype(np.int8)
        x = rng.integers(0, 256, (TOKENS, k), dtype=np.uint8)
        ws = np.ones(n, np.float32)
        row = {"0.0": _median_us(lambda p=K.pack_s8(w, "dense"): K.gemm_u8s8(p, x, 1.0, 0, ws))}
        for s in GRID:
            keep = rng.random(((n + 3) // 4, k)) >= s
            p = K.pack_s8((w * np.repeat(keep, 4, 0)[:n]).astype(np.int8), "4x1")
            row[str(s)] = _median_us(lambda p=p: K.gemm_u8s8(p, x, 1.0, 0, ws))
        table[key] = row
    # atomic: ranks of a torchrun job (or two compress runs) may write the cache at the same time
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table, indent=1))
    os.replace(tmp, path)
    return table


def allocate(linears: dict, sparsity: float, target_speedup: float | None,
             weight_bits: int = 8) -> dict[str, float] | None:
    """Per-layer final sparsity, or None (uniform ``sparsity``) when no target or no kernels. ``weight_bits``:
    what the quantize stage will use (the kernels it selects differ on AVX2)."""
    if target_speedup is None:
        return None
    try:
        table = latency_table({tuple(m.weight.shape) for m in linears.values()}, weight_bits)
    except ImportError:
        return None
    out = {}
    for name, m in linears.items():
        row = table[f"{m.weight.shape[0]}x{m.weight.shape[1]}"]
        dense = row["0.0"]
        ok = [s for s in GRID if dense / row[str(s)] >= target_speedup]
        out[name] = min(ok) if ok else max(GRID)
    return out
