"""Sparsity allocation: how much of its weights (or heads / neurons) each encoder Linear loses, by prune scope.

A scope is a function registered in :data:`SCOPES` under its ``prune.scope`` name; it returns each Linear's (or
structured group's) final sparsity, or None for the same ``sparsity`` everywhere.

- ``per-layer``: uniform, or with ``kind_sparsity`` / ``layer_sparsity`` the listed Linears fixed and the others
  sharing what remains of ``sparsity`` (:func:`kind_allocation`).
- ``global``: one magnitude threshold across all layers (:func:`global_allocation`).
- ``search``: a multi-objective (NSGA-II) search over per-Linear sparsities for predicted latency and measured
  sensitivity (:mod:`edgekit.compress.search`).
- ``hardware-aware``: from latencies measured by edgekit's kernels on this CPU (:func:`hardware_allocation`).
  For each distinct Linear shape the table holds the median time of the int8 GEMM (M = 128 tokens) when dense
  and at 4x1 sparsities 0.5 ... 0.95, measured once and cached per CPU in the edgekit cache. Each layer then
  gets the LOWEST sparsity whose measured speedup over dense reaches ``target_speedup`` (least accuracy cost for
  the speed asked for). Without a target, or without the kernels, allocation is uniform.
"""
from __future__ import annotations

import json
import os
import time
from typing import Callable

import numpy as np
import torch

from edgekit.errors import InputError

from .prune import group_scores, structured_groups, unit_scores
from .stages.prune import STRUCTURED, PruneConfig

GRID = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
TOKENS = 128


def _median_us(fn, reps: int = 30, min_s: float = 0.25) -> float:
    """Median time of ``fn`` in µs over at least ``reps`` calls and ``min_s`` seconds (30 calls of a 0.1 ms GEMM
    alone once timed 70% 4x1 slower than 60% on a 2-core host)."""
    for _ in range(3):
        fn()
    ts: list[float] = []
    start = time.perf_counter()
    while len(ts) < reps or time.perf_counter() - start < min_s:
        t = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t) * 1e6)
    return float(np.median(ts))


def latency_table(shapes: set[tuple[int, int]], weight_bits: int = 8, levels=GRID) -> dict[str, dict[str, float]]:
    """{"NxK": {"0.0": us, "0.5": us, ...}} for the int8 kernels on this CPU (cached); ``levels``: the 4x1
    sparsities timed besides dense (those missing from the cache are measured). ``weight_bits`` 7 times
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
    changed = False
    for n, k in sorted(shapes):
        key = f"{n}x{k}"
        row = table.get(key, {})
        todo = [s for s in (float(v) for v in levels) if s > 0 and str(s) not in row]
        if "0.0" in row and not todo:
            continue
        changed = True
        lim = 128 if weight_bits == 8 else 64
        w = rng.integers(-lim, lim, (n, k), dtype=np.int16).astype(np.int8)
        x = rng.integers(0, 256, (TOKENS, k), dtype=np.uint8)
        ws = np.ones(n, np.float32)
        if "0.0" not in row:
            row["0.0"] = _median_us(lambda p=K.pack_s8(w, "dense"): K.gemm_u8s8(p, x, 1.0, 0, ws))
        for s in todo:
            keep = rng.random(((n + 3) // 4, k)) >= s
            p = K.pack_s8((w * np.repeat(keep, 4, 0)[:n]).astype(np.int8), "4x1")
            row[str(s)] = _median_us(lambda p=p: K.gemm_u8s8(p, x, 1.0, 0, ws))
        table[key] = row
    if not changed:
        return table
    # atomic: ranks of a torchrun job (or two compress runs) may write the cache at the same time
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(table, indent=1))
    os.replace(tmp, path)
    return table


def hardware_allocation(linears: dict, sparsity: float, target_speedup: float | None,
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


def kind_allocation(linears, sparsity: float, kinds: dict[str, float],
                    layers: dict[int, float] | None = None) -> dict[str, float]:
    """Per-layer sparsities with the Linears of the encoder layers in ``layers`` and then the kinds in ``kinds``
    fixed (a layer's value wins over its kinds'), the others sharing one value chosen so that the zeros over all
    encoder Linears come to ``sparsity``."""
    layers = layers or {}
    size = {n: m.weight.numel() for n, m in linears.items()}
    kind = {n: n.rsplit(".", 1)[1] for n in linears}
    index = {n: int(n.split(".")[1]) for n in linears}  # names are layers.<i>.<kind>
    depth = max(index.values()) + 1
    if any(i >= depth for i in layers):
        raise InputError(f"prune.layer_sparsity names layer(s) {sorted(i for i in layers if i >= depth)}; "
                         f"this model's encoder layers are 0..{depth - 1}")
    fixed_of = {n: layers[index[n]] if index[n] in layers else kinds.get(kind[n]) for n in linears}
    free = sum(size[n] for n in linears if fixed_of[n] is None)
    what = " and ".join(f"prune.{k} {v}" for k, v in (("layer_sparsity", layers), ("kind_sparsity", kinds)) if v)
    if not free:
        raise InputError(f"{what} fix every encoder Linear; leave some free to take the rest of sparsity {sparsity}")
    fixed = sum(fixed_of[n] * size[n] for n in linears if fixed_of[n] is not None)
    rest = (sparsity * sum(size.values()) - fixed) / free
    if not 0.0 <= rest < 1.0:
        raise InputError(f"{what} leave {rest:.3f} for the other Linears to reach sparsity {sparsity}; it must be "
                         f"in [0, 1): lower or raise the listed values")
    return {n: rest if fixed_of[n] is None else fixed_of[n] for n in linears}


def global_allocation(linears, sparsity: float, pattern: str, heads: int | None = None,
                      head_sparsity: float | None = None) -> dict[str, float]:
    """One magnitude threshold across all layers (per-block scores for 4x1; per head / neuron for the
    structured patterns, one threshold per kind), turned into per-layer (per-group) sparsities."""
    if pattern in STRUCTURED:
        groups = structured_groups(linears, pattern, heads)
        weights = {n: m.weight.detach() for n, m in linears.items()}
        g_scores = {g.name: group_scores(g, weights) for g in groups}
        alloc = {}
        for kind in ("head", "neuron"):
            mine = [g for g in groups if g.kind == kind]
            if not mine:
                continue
            target = head_sparsity if kind == "head" and head_sparsity is not None else sparsity
            allv = torch.cat([g_scores[g.name] for g in mine])
            thr = allv.kthvalue(max(1, int(target * allv.numel()))).values if target > 0 else -float("inf")
            alloc.update({g.name: float((g_scores[g.name] <= thr).double().mean()) for g in mine})
        return alloc
    scores = {n: unit_scores(m.weight.detach(), pattern) for n, m in linears.items()}
    allv = torch.cat([s.flatten() for s in scores.values()])
    thr = allv.kthvalue(max(1, int(sparsity * allv.numel()))).values
    return {n: float((s <= thr).float().mean()) for n, s in scores.items()}


# ------------------------------------------------------------------------------------ scopes
# (linears, prune config, attention heads, recipe, run or None) -> allocation
Scope = Callable[..., "dict[str, float] | None"]
SCOPES: dict[str, Scope] = {}


def scope(name: str) -> Callable[[Scope], Scope]:
    """Decorator registering an allocation under a ``prune.scope`` name."""
    def deco(fn: Scope) -> Scope:
        SCOPES[name] = fn
        return fn

    return deco


@scope("per-layer")
def _per_layer(linears, cfg: PruneConfig, heads, recipe, run=None):
    if cfg.kind_sparsity or cfg.layer_sparsity:
        return kind_allocation(linears, cfg.sparsity, cfg.kind_sparsity or {}, cfg.layer_sparsity or {})
    return None


@scope("global")
def _global(linears, cfg: PruneConfig, heads, recipe, run=None):
    return global_allocation(linears, cfg.sparsity, cfg.pattern, heads, cfg.head_sparsity)


@scope("hardware-aware")
def _hardware(linears, cfg: PruneConfig, heads, recipe, run=None):
    from .stages.quantize import resolve_weight_bits

    qcfg = recipe.stage("quantize")  # time the kernels the quantized model will run on
    bits = resolve_weight_bits(qcfg.weight_bits) if qcfg is not None else 8
    return hardware_allocation(linears, cfg.sparsity, cfg.target_speedup, bits)


@scope("search")
def _search(linears, cfg: PruneConfig, heads, recipe, run=None):
    from .search import run_search

    return run_search(linears, cfg, run, recipe)


def allocate(linears: dict, cfg: PruneConfig, heads: int | None, recipe, run=None) -> dict[str, float] | None:
    """Each Linear's (or structured group's) final sparsity under ``cfg.scope``; None: ``cfg.sparsity`` for all.
    ``run``: the compress run (:class:`edgekit.compress.training.Run`), for scopes that measure the model."""
    return SCOPES[cfg.scope](linears, cfg, heads, recipe, run)
