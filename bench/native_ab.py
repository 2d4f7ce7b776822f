#!/usr/bin/env python
"""A/B of compressed artifacts (and attention precisions) on the native engine, interleaved in one process.

Every (artifact, precision) pair is one contender of the shared harness `edgekit.bench.bench`: the same real
bbc-news test articles at each batch x seq point, fixed threads, warm-up, then the contenders in turn every
round; the ratio column is the median of the per-round speedups over the first contender, with its
inter-quartile range. Use it to compare variants of one model on the native engine (8- vs 7-bit weights, 4x1 vs
4x4 masks, two builds' artifacts, fp32 vs int8 attention); `edgekit bench` compares one model across runtimes.
Writes JSON Lines (the `edgekit bench` schema; `runtime` holds the contender's label, `artifact` its folder) and
a Markdown table. Never asserts.

    python bench/native_ab.py out/bbc out/bbc44 --batch 1,8 --seq 128 --json out/ab.jsonl --md out/ab.md
    python bench/native_ab.py out/bbc --precision fp32,int8 --batch 1,8
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def labels(artifacts: list[str], precisions: list[str | None]) -> list[tuple[str, str, str | None]]:
    """(label, artifact, precision) per contender; labels are the folder names, made unique, plus the precision."""
    names = [Path(p).name or p for p in artifacts]
    if len(set(names)) < len(names):
        names = list(artifacts)
    out = []
    for name, path in zip(names, artifacts):
        for pr in precisions:
            out.append((name if pr is None else f"{name} {pr}", path, pr))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifacts", nargs="+", help="compressed artifact folders (with native/)")
    ap.add_argument("--precision", default=None,
                    help="comma-separated native attention precisions: fp32, bf16, int8 (default: the runtime's)")
    ap.add_argument("--batch", default="1,8", help="comma-separated batch sizes (default 1,8)")
    ap.add_argument("--seq", default="128", help="comma-separated sequence lengths (default 128)")
    ap.add_argument("--threads", type=int, default=None, help="threads (default: physical cores)")
    ap.add_argument("--min-time", type=float, default=2.0, help="seconds timed per contender per point")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds per point (default ~10)")
    ap.add_argument("--json", type=Path, help="write one JSON object per line per contender and point")
    ap.add_argument("--md", type=Path, help="write a Markdown table")
    a = ap.parse_args(argv)
    try:
        batches, seqs = _ints(a.batch), _ints(a.seq)
    except ValueError:
        ap.error("--batch and --seq take comma-separated integers")
    precisions = [p.strip() for p in a.precision.split(",") if p.strip()] if a.precision else [None]

    from edgekit import bench as B
    from edgekit.errors import EdgekitError
    from edgekit.runtimes import default_threads, load, load_tokenizer

    threads = a.threads or default_threads()
    contenders = labels(a.artifacts, precisions)
    try:
        sessions = {label: load(path, "native", threads, pr) for label, path, pr in contenders}
        rows = B.bench(sessions, load_tokenizer(a.artifacts[0]), batches=batches, seqs=seqs, threads=threads,
                       min_time_s=a.min_time, rounds=a.rounds, model_name="native A/B", progress=sys.stderr.isatty())
    except EdgekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    where = {label: path for label, path, _ in contenders}
    for r in rows:
        r["artifact"] = str(where[r["runtime"]])
    print(B.format_table(rows))
    if a.json:
        B.write_jsonl(rows, a.json)
    if a.md:
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(B.markdown_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
