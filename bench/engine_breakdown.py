#!/usr/bin/env python
"""Where the native engine's time goes, stage by stage, against the physical floor of each stage.

Runs a compressed artifact on the native engine with its built-in profiler (wall time per stage,
summed over layers) and sets each stage next to its floor on this CPU: the multiply-accumulates it
really has to do (dense-equivalent MACs x the layer's kept 4x1 blocks) divided by the int8 peak
measured in the same run (int8 GEMMs), or by a fraction of it for attention: on AVX-512 VNNI a quarter for
fp32 (one fp32 FMA instruction does 16 MACs where vpdpbusd does 64) and half for bf16 (vdpbf16ps: 32); on
AVX2 half for fp32 (an 8-lane FMA against vpmaddwd's 16 exact int8 MACs).
Element-wise stages (embeddings, add + LayerNorm, pooling) have no MAC floor; they are bound by memory
and shown as they are. With ``--attention fp32,bf16`` both attention precisions are timed, interleaved
round by round, so their ratio comes from one run. Writes JSON lines and a Markdown table. Never asserts.

    python bench/engine_breakdown.py out/bbc --batch 1 --seq 128 --threads 2 \\
        --attention fp32,bf16 --json out/breakdown.jsonl --md out/breakdown.md
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

LINEARS = ("q", "k", "v", "o", "ffn_in", "ffn_out")
STAGES = ("embeddings", "qkv", "attention", "o_proj", "add_ln", "ffn_in", "ffn_out", "pooling")


def stage_macs(cfg: dict, density: dict[str, float], batch: int, seq: int) -> dict[str, float]:
    """Multiply-accumulates per forward that each stage must do (sparse GEMMs: kept blocks only)."""
    h, inter, n_layers, heads = cfg["hidden"], cfg["intermediate"], cfg["layers"], cfg["heads"]
    cls = cfg.get("pooling") == "cls-pooler"  # the engine's last layer then goes on with one row per sequence
    out = dict.fromkeys(STAGES, 0.0)
    for i in range(n_layers):
        d = lambda name: density.get(f"layers.{i}.{name}", 1.0)  # noqa: E731
        t = batch * seq
        tq = batch if cls and i == n_layers - 1 else t  # rows after attention
        out["qkv"] += t * h * h * (d("q") + d("k") + d("v"))
        out["o_proj"] += tq * h * h * d("o")
        out["ffn_in"] += tq * h * inter * d("ffn_in")
        out["ffn_out"] += tq * inter * h * d("ffn_out")
        out["attention"] += heads * 2 * tq * seq * (h // heads)  # QK^T and PV for the queries kept
    return out


def block_density(tensors: dict, cfg: dict) -> dict[str, float]:
    """Fraction of 4x1 blocks with a non-zero weight, per native Linear (dense layers: 1)."""
    out = {}
    for name, w in tensors.items():
        parts = name.split(".")
        if len(parts) != 4 or parts[0] != "layers" or parts[2] not in LINEARS or parts[3] != "weight":
            continue
        w = np.asarray(w)
        n, k = w.shape
        blocks = np.pad(w != 0, ((0, (-n) % 4), (0, 0))).reshape(-1, 4, k).any(1)
        out[name[: -len(".weight")]] = float(blocks.mean())
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifact", help="a compressed artifact folder with native/ (edgekit compress ... -o DIR)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--threads", type=int, default=None, help="default: physical cores")
    p.add_argument("--attention", default="fp32", help="comma-separated attention precisions: fp32, bf16, int8 "
                                                         "(int8 Q K^T; its floor is taken as fp32's)")
    p.add_argument("--runs", type=int, default=200, help="profiled runs per precision (spread over --rounds)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--json", type=Path, help="write one JSON object per (precision, stage)")
    p.add_argument("--md", type=Path, help="write a Markdown table")
    a = p.parse_args(argv)

    from edgekit import kernels as K
    from edgekit.artifact import load_artifact
    from edgekit.bench import make_feeds
    from edgekit.formats.native import read_native
    from edgekit.info import cpu_info
    from edgekit.runtimes import default_threads, load, load_tokenizer

    art = load_artifact(a.artifact)
    if "native" not in art.manifest.formats:
        print(f"error: {a.artifact} has no native/ format; make one with edgekit compress", file=sys.stderr)
        return 2
    threads = a.threads or default_threads()
    cfg, tensors = read_native(art.path("native"))
    density = block_density(tensors, cfg)
    precisions = [x.strip() for x in a.attention.split(",") if x.strip()]
    sessions = {pr: load(art, "native", threads, pr) for pr in precisions}
    feeds = make_feeds(load_tokenizer(art), a.batch, a.seq)
    K.set_num_threads(threads)
    isa = K.cpu_info()["isa"]
    peak = max(K.peak_macs(0.3) for _ in range(5)) or float("nan")  # best of 5 (noise only lowers it)
    loop = {"avx512_vnni": "vpdpbusd", "avx2": "vpmaddubsw+vpmaddwd+vpaddd"}.get(isa, "no")
    fp32_div = 4 if isa == "avx512_vnni" else 2
    macs = stage_macs(cfg, density, a.batch, a.seq)

    for s in sessions.values():  # warm-up
        for _ in range(20):
            s.run(feeds)
    prof = {pr: dict.fromkeys(STAGES, 0.0) for pr in precisions}
    wall = {pr: [] for pr in precisions}
    per_round = max(1, a.runs // a.rounds)
    for _ in range(a.rounds):  # interleaved: every precision sees the same machine state
        for pr, s in sessions.items():
            for _ in range(per_round):
                t = time.perf_counter()
                s.run(feeds, profile=prof[pr])
                wall[pr].append((time.perf_counter() - t) * 1e3)
    n = per_round * a.rounds

    rows = []
    for pr in precisions:
        p50 = float(np.median(wall[pr]))
        total_floor = 0.0
        for st in STAGES:
            ms = prof[pr].get(st, 0.0) / n / 1e3
            rate = {"attention": peak / (2 if pr == "bf16" else fp32_div)}.get(st, peak) if macs[st] else None
            floor = macs[st] / rate * 1e3 if rate else None
            total_floor += floor or 0.0
            rows.append({"artifact": str(a.artifact), "attention": pr, "stage": st, "batch": a.batch, "seq": a.seq,
                         "threads": threads, "ms": ms, "share": None, "gmacs": macs[st] / 1e9,
                         "floor_ms": floor, "x_floor": ms / floor if floor else None,
                         "p50_ms": p50, "peak_gmacs": peak / 1e9, "runs": n, "cpu": cpu_info()["model"]})
        staged = sum(r["ms"] for r in rows if r["attention"] == pr)
        for r in rows:
            if r["attention"] == pr:
                r["share"] = r["ms"] / staged if staged else None
                r["floor_total_ms"] = total_floor

    lines = [f"native engine, {Path(a.artifact).name}, batch {a.batch}, seq {a.seq}, {threads} threads, "
             f"{isa}, measured {loop} peak {peak / 1e9:.0f} G MAC/s, {n} profiled runs per precision, interleaved", ""]
    for pr in precisions:
        mine = [r for r in rows if r["attention"] == pr]
        lines += [f"attention {pr}: p50 {mine[0]['p50_ms']:.3f} ms (unprofiled stages and call overhead included); "
                  f"floor {mine[0]['floor_total_ms']:.3f} ms", "",
                  "| stage | ms | share | G MAC | floor ms | x floor |", "|---|---|---|---|---|---|"]
        for r in mine:
            fl = f"{r['floor_ms']:.3f}" if r["floor_ms"] else "-"
            xf = f"{r['x_floor']:.1f}" if r["x_floor"] else "-"
            lines.append(f"| {r['stage']} | {r['ms']:.3f} | {100 * r['share']:.0f}% | {r['gmacs']:.3f} | {fl} | {xf} |")
        lines.append("")
    text = "\n".join(lines)
    print(text)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if a.md:
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
