"""PNG plots for people (matplotlib, no display needed)."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence


def plot_latency(rows: Sequence[dict], path) -> Path:
    """Grouped bars: p50 latency per runtime for each (batch, seq) point, with p90 as error bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    points = list(dict.fromkeys((r["batch"], r["seq"]) for r in rows))
    names = list(dict.fromkeys(r["runtime"] for r in rows))
    width = 0.8 / max(len(names), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(points) * max(len(names), 1) / 2), 4))
    for i, name in enumerate(names):
        p50 = [next((r["latency_ms"]["p50"] for r in rows if r["runtime"] == name and (r["batch"], r["seq"]) == p),
                    np.nan) for p in points]
        p90 = [next((r["latency_ms"]["p90"] for r in rows if r["runtime"] == name and (r["batch"], r["seq"]) == p),
                    np.nan) for p in points]
        prec = next(r["precision"] for r in rows if r["runtime"] == name)
        x = np.arange(len(points)) + i * width
        ax.bar(x, p50, width, label=f"{name} ({prec})",
               yerr=[np.zeros(len(p50)), np.asarray(p90) - np.asarray(p50)], capsize=3)
    ax.set_xticks(np.arange(len(points)) + width * (len(names) - 1) / 2)
    ax.set_xticklabels([f"batch {b}\nseq {s}" for b, s in points])
    ax.set_ylabel("latency ms (bar p50, whisker p90)")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter

    fmt = FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(fmt)
    ax.yaxis.set_minor_formatter(fmt)
    threads = rows[0]["threads"] if rows else "?"
    ax.set_title(f"{rows[0]['model'] if rows else ''}: latency per runtime, {threads} threads")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
