"""PNG plots for people (matplotlib Agg backend, no display needed).

>>> plot_latency(rows, "out/bench.png")        # doctest: +SKIP
PosixPath('out/bench.png')
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def plot_latency(rows: Sequence[dict], path) -> Path:
    """Grouped bars of p50 latency per runtime for each (batch, seq) point, p90 as whiskers, log y.

    Each bar is labelled with the median per-round speedup over the reference runtime (from
    ``ratio_vs``), the number to quote on a noisy machine. Returns the PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.ticker import FuncFormatter

    if not rows:
        raise ValueError("no benchmark rows to plot")
    points = list(dict.fromkeys((r["batch"], r["seq"]) for r in rows))
    names = list(dict.fromkeys(r["runtime"] for r in rows))
    by = {(r["runtime"], r["batch"], r["seq"]): r for r in rows}
    width = 0.8 / len(names)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.9 * len(points) * len(names) + 2), 4.2))
    for i, name in enumerate(names):
        got = [by.get((name, b, s)) for b, s in points]
        p50 = np.array([r["latency_ms"]["p50"] if r else np.nan for r in got])
        p90 = np.array([r["latency_ms"]["p90"] if r else np.nan for r in got])
        prec = next(r["precision"] for r in rows if r["runtime"] == name)
        x = np.arange(len(points)) + i * width
        ax.bar(x, p50, width, label=f"{name} ({prec})", yerr=[np.zeros_like(p50), p90 - p50], capsize=3)
        for xi, r, y in zip(x, got, p90):
            rv = (r or {}).get("ratio_vs")
            if rv and r["runtime"] != rv["reference"] and np.isfinite(y):
                ax.annotate(f"{rv['median']:.2f}x", (xi, y), textcoords="offset points", xytext=(0, 3),
                            ha="center", fontsize=7)
    ax.set_xticks(np.arange(len(points)) + width * (len(names) - 1) / 2)
    ax.set_xticklabels([f"batch {b}\nseq {s}" for b, s in points])
    ax.set_ylabel("latency ms (bar p50, whisker p90)")
    ax.set_yscale("log")
    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(fmt)
    ref = (rows[0].get("ratio_vs") or {}).get("reference")
    cpu = (rows[0].get("cpu") or {}).get("model", "")
    title = f"{rows[0]['model'] or 'model'}: latency, {rows[0]['threads']} threads, {cpu}"
    if ref:
        title += f"\nlabels: speedup vs {ref} (median of interleaved rounds)"
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3, which="both")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
