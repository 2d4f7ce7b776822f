#!/usr/bin/env python
"""Where the native engine's time goes, stage by stage, against the physical floor of each stage.

Runs a compressed artifact on the native engine with its built-in profiler (wall time per stage,
summed over layers) and sets each stage next to its floor on this CPU: the multiply-accumulates it
really has to do (dense-equivalent MACs x the layer's kept 4x1 blocks) divided by the int8 peak
measured in the same run (int8 GEMMs), or by a fraction of it for attention: on AVX-512 VNNI a quarter for
fp32 (one fp32 FMA instruction does 16 MACs where vpdpbusd does 64) and half for bf16 (vdpbf16ps: 32); on
AVX2 half for fp32 (an 8-lane FMA against vpmaddwd's 16 exact int8 MACs).
Element-wise stages (embeddings, add + LayerNorm, pooling) have no MAC floor; they are bound by memory
and shown as they are. Runs are timed on the shared interleaved timer of `edgekit.bench`; with
``--attention fp32,bf16`` both attention precisions are contenders, interleaved round by round, so their ratio
comes from one run. Stage times are averaged over every profiled run (after an unprofiled warm-up); the p50 is
of the timed runs. Writes JSON lines and a Markdown table. Never asserts.

    python bench/engine_breakdown.py out/bbc --batch 1 --seq 128 --threads 2 \\
        --attention fp32,bf16 --json out/breakdown.jsonl --md out/breakdown.md
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

LINEARS = ("q", "k", "v", "o", "ffn_in", "ffn_out")
STAGES = ("embeddings", "qkv", "attention", "o_proj", "add_ln", "ffn_in", "ffn_out", "pooling")


def stage_macs(cfg: dict, density: dict[str, float], batch: int, seq: int) -> dict[str, float]:
    """Multiply-accumulates per forward that each stage must do (sparse GEMMs: kept blocks only)."""
    h, inter, n_layers, heads = cfg["hidden"], cfg["intermediate"], cfg["layers"], cfg["heads"]
    cls = cfg.get("pooling") in ("cls", "cls-pooler")  # the engine's last layer then goes on with one row per sequence
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


class Profiled:
    """A native session as a contender of the shared timer, adding every run's stage times to ``profile``."""

    def __init__(self, session, profile: dict):
        self.session, self.profile, self.calls = session, profile, 0
        self.threads = session.threads

    def run(self, feeds):
        self.calls += 1
        return self.session.run(feeds, profile=self.profile)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("artifact", help="a compressed artifact folder with native/ (edgekit compress ... -o DIR)")
    p.add_argument("--batch", type=int, default=1, help="sequences per run (default 1)")
    p.add_argument("--seq", type=int, default=128, help="tokens per sequence (default 128)")
    p.add_argument("--threads", type=int, default=None, help="default: physical cores")
    p.add_argument("--attention", default="fp32", help="comma-separated attention precisions: fp32, bf16, int8 "
                                                         "(int8 Q K^T; its floor is taken as fp32's)")
    p.add_argument("--runs", type=int, default=200, help="timed runs per precision at least (spread over --rounds)")
    p.add_argument("--min-time", type=float, default=2.0, help="seconds timed per precision at least")
    p.add_argument("--rounds", type=int, default=10, help="interleaved rounds (more if a quota is short)")
    p.add_argument("--json", type=Path, help="write one JSON object per (precision, stage)")
    p.add_argument("--md", type=Path, help="write a Markdown table")
    a = p.parse_args(argv)

    from edgekit import kernels as K
    from edgekit.artifact import load_artifact
    from edgekit.bench import make_feeds, measure_point
    from edgekit.errors import EdgekitError, InputError
    from edgekit.formats.native import read_native
    from edgekit.info import cpu_info
    from edgekit.runtimes import default_threads, load, load_tokenizer

    try:
        art = load_artifact(a.artifact)
        if "native" not in art.manifest.formats:
            raise InputError(f"{a.artifact} has no native/ format; make one with edgekit compress")
        threads = a.threads or default_threads()
        cfg, tensors = read_native(art.path("native"))
        precisions = [x.strip() for x in a.attention.split(",") if x.strip()]
        sessions = {pr: load(art, "native", threads, pr) for pr in precisions}
        feeds = make_feeds(load_tokenizer(art), a.batch, a.seq)
    except EdgekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    density = block_density(tensors, cfg)
    K.set_num_threads(threads)
    isa = K.cpu_info()["isa"]
    peak = max(K.peak_macs(0.3) for _ in range(5)) or float("nan")  # best of 5 (noise only lowers it)
    loop = {"avx512_vnni": "vpdpbusd", "avx2": "vpmaddubsw+vpmaddwd+vpaddd"}.get(isa, "no")
    fp32_div = 4 if isa == "avx512_vnni" else 2
    macs = stage_macs(cfg, density, a.batch, a.seq)

    for s in sessions.values():  # warm-up outside the profile: first-call allocations stay out of it
        for _ in range(20):
            s.run(feeds)
    prof = {pr: dict.fromkeys(STAGES, 0.0) for pr in precisions}
    profiled = {pr: Profiled(s, prof[pr]) for pr, s in sessions.items()}
    res = measure_point(profiled, feeds, min_runs=a.runs, min_time_s=a.min_time, warmup_runs=5, warmup_s=0.0,
                        rounds=a.rounds)
    wall = {pr: res[pr]["times_ms"] for pr in precisions}

    rows = []
    for pr in precisions:
        p50 = float(np.median(wall[pr]))
        total_floor = 0.0
        for st in STAGES:
            n = profiled[pr].calls
            ms = prof[pr].get(st, 0.0) / n / 1e3
            rate = {"attention": peak / (2 if pr == "bf16" else fp32_div)}.get(st, peak) if macs[st] else None
            floor = macs[st] / rate * 1e3 if rate else None
            total_floor += floor or 0.0
            rows.append({"artifact": str(a.artifact), "attention": pr, "stage": st, "batch": a.batch, "seq": a.seq,
                         "threads": threads, "ms": ms, "share": None, "gmacs": macs[st] / 1e9,
                         "floor_ms": floor, "x_floor": ms / floor if floor else None,
                         "p50_ms": p50, "peak_gmacs": peak / 1e9, "runs": n, "timed_runs": len(wall[pr]),
                         "cpu": cpu_info()["model"]})
        staged = sum(r["ms"] for r in rows if r["attention"] == pr)
        for r in rows:
            if r["attention"] == pr:
                r["share"] = r["ms"] / staged if staged else None
                r["floor_total_ms"] = total_floor

    lines = [f"native engine, {Path(a.artifact).name}, batch {a.batch}, seq {a.seq}, {threads} threads, "
             f"{isa}, measured {loop} peak {peak / 1e9:.0f} G MAC/s, profiled runs "
             + ", ".join(f"{pr} {profiled[pr].calls}" for pr in precisions) + ", interleaved", ""]
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
