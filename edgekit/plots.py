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
    plt = _pyplot()
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
    return _save(plt, fig, path, dpi=120)


def plot_compression(report: dict, path) -> Path:
    """The compression report at a glance: left, the final sparsity of every encoder Linear (layers x kinds,
    each cell labelled); right, the stage metric (accuracy, or embedding cosine to the teacher) from the
    baseline through the stages to the compressed model, with each exported runtime's score. Returns the PNG path.
    """
    plt = _pyplot()
    import numpy as np

    layers = report["sparsity"]["layers"]  # {"layers.<i>.<kind>": fraction of zero weights}
    if not layers:
        raise ValueError("the report has no per-layer sparsity to plot")
    depth = 1 + max(int(n.split(".")[1]) for n in layers)
    kinds = list(dict.fromkeys(n.rsplit(".", 1)[1] for n in layers))
    grid = np.full((depth, len(kinds)), np.nan)
    for n, v in layers.items():
        grid[int(n.split(".")[1]), kinds.index(n.rsplit(".", 1)[1])] = v
    cls = report["task"] == "text-classification"
    key, label = ("accuracy", "test accuracy") if cls else ("embedding_cosine", "embedding cosine to the teacher")
    names, values = ["baseline"], [report["baseline"].get(key, 1.0 if not cls else float("nan"))]
    for s in report["stages"]:
        if s["stage"] != "distill" and s.get(key) is not None:
            names.append(s["stage"])
            values.append(s[key])
    names.append("compressed")
    values.append(report["compressed"].get(key, float("nan")))

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 0.45 * depth + 3.2), gridspec_kw={"width_ratios": [1.1, 1]})
    im = ax0.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        if np.isfinite(v):
            ax0.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=8,
                     color="black" if v > 0.6 else "white")
    ax0.set_xticks(range(len(kinds)), kinds)
    ax0.set_yticks(range(depth), [f"layer {i}" for i in range(depth)])
    pattern = report["sparsity"].get("pattern") or "none"
    ax0.set_title(f"sparsity % per encoder Linear ({pattern}; total {100 * report['sparsity']['total']:.1f}%)",
                  fontsize=9)
    fig.colorbar(im, ax=ax0, fraction=0.046, pad=0.04)
    x = np.arange(len(names))
    ax1.plot(x, values, "o-", color="tab:blue", label="torch (fake-quant in the quantize stage)")
    for xi, v in zip(x, values):
        if np.isfinite(v):
            ax1.annotate(f"{v:.4f}", (xi, v), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    for k, (rt, v) in enumerate((report.get("runtimes") or {}).items()):
        if rt != "torch" and v.get(key) is not None:
            ax1.plot([x[-1] + 0.12 * (k + 1)], [v[key]], "s", label=f"{rt} ({v['precision']})")
    ax1.set_xticks(x, names)
    ax1.set_ylabel(label)
    title = f"{report['model']} ({report['recipe']}): {label} per stage"
    probe = (report["baseline"].get("accuracy"), report["compressed"].get("accuracy"))
    if not cls and None not in probe:
        title += f"\nlinear probe on the embeddings: {probe[0]:.4f} -> {probe[1]:.4f}"
    ax1.set_title(title, fontsize=9)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7, loc="lower left")
    return _save(plt, fig, path, dpi=110)


def _pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path, dpi: int) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
