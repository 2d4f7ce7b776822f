#!/usr/bin/env python
"""Latency on a busy machine: runtimes side by side while another process keeps one core busy.

Devices run other work beside the model. This script alternates quiet and busy phases on the same sessions:
in a busy phase an unrelated process spins on one core (a plain Python busy loop, started before and stopped
after the phase); each phase is a short interleaved `edgekit.bench` run of every contender. Alternating the
phases keeps slow drifts of the host out of the quiet/busy comparison. It reports, per runtime:

- p50 latency quiet and busy (medians over the phases), and busy / quiet per cycle (median, IQR);
- under load, the per-round speedup of each runtime over the reference (median, IQR over all busy rounds).

Writes JSON Lines (one object per runtime, with every phase's rows) and a Markdown table. Never asserts.

    python bench/busy_machine.py ART --runtime native,openvino --reference openvino --batch 1 --seq 128 \\
        --cycles 4 --json out/busy.jsonl --md out/busy.md
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

_SPIN = "import time\nt = time.monotonic()\nwhile True:\n    pass\n"


def _iqr(values: list[float]) -> list[float]:
    return [float(np.percentile(values, 25)), float(np.percentile(values, 75))]


class BusyCore:
    """A child process spinning on one core for the duration of a `with` block."""

    def __enter__(self):
        self.proc = subprocess.Popen([sys.executable, "-c", _SPIN])
        time.sleep(0.5)  # let the scheduler place it before timing starts
        return self

    def __exit__(self, *exc):
        self.proc.kill()
        self.proc.wait()


def summarise(phases: list[tuple[str, list[dict]]], reference: str) -> list[dict]:
    """One summary per runtime from the (phase, bench rows) list, quiet and busy alternating."""
    names = [r["runtime"] for r in phases[0][1]]
    out = []
    for n in names:
        quiet = [r for ph, rows in phases if ph == "quiet" for r in rows if r["runtime"] == n]
        busy = [r for ph, rows in phases if ph == "busy" for r in rows if r["runtime"] == n]
        slow = [b["latency_ms"]["p50"] / q["latency_ms"]["p50"] for q, b in zip(quiet, busy)]
        busy_ratios = [x for r in busy for x in r["ratio_vs"]["rounds"]]
        quiet_ratios = [x for r in quiet for x in r["ratio_vs"]["rounds"]]
        out.append({
            "runtime": n, "precision": busy[0]["precision"], "batch": busy[0]["batch"], "seq": busy[0]["seq"],
            "threads": busy[0]["threads"], "cpu": busy[0]["cpu"], "cycles": len(busy),
            "quiet_p50_ms": float(np.median([r["latency_ms"]["p50"] for r in quiet])),
            "busy_p50_ms": float(np.median([r["latency_ms"]["p50"] for r in busy])),
            "busy_over_quiet": {"median": float(np.median(slow)), "iqr": _iqr(slow), "cycles": slow},
            "ratio_vs_busy": {"reference": reference, "median": float(np.median(busy_ratios)),
                              "iqr": _iqr(busy_ratios), "rounds": len(busy_ratios)},
            "ratio_vs_quiet": {"reference": reference, "median": float(np.median(quiet_ratios)),
                               "iqr": _iqr(quiet_ratios), "rounds": len(quiet_ratios)},
            "phases": {"quiet": quiet, "busy": busy},
        })
    return out


def markdown(summary: list[dict], host: str) -> str:
    ref = summary[0]["ratio_vs_busy"]["reference"]
    lines = [f"Host: {host}; batch {summary[0]['batch']}, seq {summary[0]['seq']}, {summary[0]['threads']} threads, "
             f"{summary[0]['cycles']} quiet/busy cycles (busy: one core running an unrelated busy loop).", "",
             f"| runtime | p50 quiet ms | p50 busy ms | busy / quiet (IQR) | vs {ref} quiet | vs {ref} busy (IQR) |",
             "|---|---|---|---|---|---|"]
    for s in summary:
        bq, rb = s["busy_over_quiet"], s["ratio_vs_busy"]
        lines.append(f"| {s['runtime']} {s['precision']} | {s['quiet_p50_ms']:.2f} | {s['busy_p50_ms']:.2f} | "
                     f"{bq['median']:.2f}x ({bq['iqr'][0]:.2f}-{bq['iqr'][1]:.2f}) | "
                     f"{s['ratio_vs_quiet']['median']:.2f}x | "
                     f"{rb['median']:.2f}x ({rb['iqr'][0]:.2f}-{rb['iqr'][1]:.2f}) |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", help="compressed artifact folder")
    ap.add_argument("--runtime", default="native,openvino", help="comma-separated runtimes (default native,openvino)")
    ap.add_argument("--reference", default="openvino", help="runtime the ratios are taken against")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None, help="threads (default: physical cores)")
    ap.add_argument("--cycles", type=int, default=4, help="quiet/busy cycles (default 4)")
    ap.add_argument("--rounds", type=int, default=4, help="interleaved rounds per phase (default 4)")
    ap.add_argument("--min-time", type=float, default=1.0, help="seconds timed per contender per phase")
    ap.add_argument("--json", type=Path, help="write one JSON object per line per runtime")
    ap.add_argument("--md", type=Path, help="write a Markdown table")
    a = ap.parse_args(argv)

    from edgekit import bench as B
    from edgekit.errors import EdgekitError
    from edgekit.info import cpu_info
    from edgekit.runtimes import default_threads, load, load_tokenizer

    threads = a.threads or default_threads()
    names = [n.strip() for n in a.runtime.split(",") if n.strip()]
    try:
        sessions = {n: load(a.artifact, n, threads) for n in names}
        tok = load_tokenizer(a.artifact)
        phases: list[tuple[str, list[dict]]] = []
        for cycle in range(a.cycles):
            for phase in ("quiet", "busy"):
                print(f"cycle {cycle + 1}/{a.cycles}: {phase}", file=sys.stderr)
                run = lambda: B.bench(sessions, tok, batches=[a.batch], seqs=[a.seq], threads=threads,  # noqa: E731
                                      min_time_s=a.min_time, rounds=a.rounds, reference=a.reference,
                                      model_name=Path(a.artifact).name, progress=False)
                if phase == "busy":
                    with BusyCore():
                        phases.append((phase, run()))
                else:
                    phases.append((phase, run()))
    except EdgekitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    summary = summarise(phases, a.reference)
    cpu = cpu_info()
    isa = [k for k, v in cpu.get("isa", {}).items() if v]
    host = f"{cpu.get('model')} (family {cpu.get('family')} model {cpu.get('model_number')}; {', '.join(isa)})"
    table = markdown(summary, host)
    print(table)
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        with a.json.open("w") as f:
            for s in summary:
                f.write(json.dumps({**s, "artifact": str(a.artifact)}) + "\n")
    if a.md:
        a.md.parent.mkdir(parents=True, exist_ok=True)
        a.md.write_text(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
