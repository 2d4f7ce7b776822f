"""PNG plots for people (matplotlib Agg backend, no display needed).

>>> plot_latency(rows, "out/bench.png")        # doctest: +SKIP
PosixPath('out/bench.png')
"""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence


def plot_latency(rows: Sequence[dict], path) -> Path:
    """Draw :func:`latency_figure` to a PNG; returns its path."""
    return _save(_pyplot(), latency_figure(rows), path, dpi=120)


def latency_figure(rows: Sequence[dict]):
    """p50 latency per runtime as bars from zero on a linear axis, one panel per (batch, seq) point (each
    with its own scale, so batch 1 is not flattened by batch 32), p90 as whiskers. Each bar is labelled with
    its p50 and how many times faster than the reference runtime it is (``ratio_vs``: the median of
    per-round ratios, the number to quote on a noisy machine). Returns the matplotlib figure.
    """
    plt = _pyplot()
    import numpy as np

    if not rows:
        raise ValueError("no benchmark rows to plot")
    points = list(dict.fromkeys((r["batch"], r["seq"]) for r in rows))
    names = list(dict.fromkeys(r["runtime"] for r in rows))
    by = {(r["runtime"], r["batch"], r["seq"]): r for r in rows}
    colors = {n: f"C{i % 10}" for i, n in enumerate(names)}
    ref = (rows[0].get("ratio_vs") or {}).get("reference")
    ncols = min(len(points), 3)
    nrows = -(-len(points) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(max(4.2, 0.95 * len(names) + 1.2) * ncols, 3.9 * nrows + 0.9),
                             squeeze=False)
    for ax, (b, s) in zip(axes.flat, points):
        got = [(n, by.get((n, b, s))) for n in names]
        got = [(n, r) for n, r in got if r]
        x = np.arange(len(got))
        p50 = np.array([r["latency_ms"]["p50"] for _, r in got])
        p90 = np.array([r["latency_ms"]["p90"] for _, r in got])
        ax.bar(x, p50, 0.7, color=[colors[n] for n, _ in got], yerr=[np.zeros_like(p50), np.maximum(p90 - p50, 0)],
               capsize=3, error_kw={"elinewidth": 0.9})
        top = float(max(p90.max(), p50.max()))
        for xi, (n, r), y in zip(x, got, p90):
            rv = r.get("ratio_vs") or {}
            ratio = "reference" if n == rv.get("reference") else (
                f"{_x(rv['median'])}x " + ("faster" if rv["median"] >= 1 else "(slower)") if rv else "")
            ax.text(xi, max(y, r["latency_ms"]["p50"]) + 0.02 * top, f"{r['latency_ms']['p50']:.3g} ms\n{ratio}",
                    ha="center", va="bottom", fontsize=7)
        ax.set_ylim(0, top * 1.25)
        ax.set_xticks(x, [f"{n}\n{r['precision']}" for n, r in got], fontsize=7, rotation=20)
        runs = sorted({r.get("runs") or 0 for _, r in got})
        runs_text = f"{runs[0]} timed runs each" if len(runs) == 1 else f"{runs[0]}-{runs[-1]} timed runs"
        ax.set_title(f"batch {b}, seq {s} ({runs_text})", fontsize=9)
        ax.set_ylabel("latency ms (linear, from 0)")
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(points):]:
        ax.set_visible(False)
    cpu = (rows[0].get("cpu") or {}).get("model", "")
    title = f"{rows[0]['model'] or 'model'}: latency, {rows[0]['threads']} threads, {cpu}\nbar = p50, whisker = p90"
    if ref:
        title += f"; labels: p50 and times faster than {ref} (median of per-round ratios, > 1 = faster)"
    fig.suptitle(title, fontsize=9)
    return fig


def plot_kernels(rows: Sequence[dict], path, title: str = "edgekit int8 GEMM") -> Path:
    """Draw :func:`kernels_figure` to a PNG; returns its path."""
    return _save(_pyplot(), kernels_figure(rows, title), path, dpi=120, tight=False)


def kernels_figure(rows: Sequence[dict], title: str = "edgekit int8 GEMM"):
    """Kernel benchmark rows (``bench/kernels.py``): speedup over ONNX Runtime and OpenVINO against 4x1 block
    sparsity, one panel per contender x layout, linear axis from 0 with the "same speed" line drawn and
    labelled; one colour per shape, solid for 8-bit and dashed for 7-bit weights. Returns the matplotlib figure."""
    plt = _pyplot()

    if not rows:
        raise ValueError("no kernel rows to plot")
    layouts = list(dict.fromkeys(r.get("layout", "plain") for r in rows))
    contenders = [(k, lab) for k, lab in (("speedup_vs_onnxruntime", "ONNX Runtime int8"),
                                          ("speedup_vs_openvino", "OpenVINO int8"))
                  if any(r.get(k) is not None for r in rows)]
    if not contenders:
        raise ValueError("the kernel rows hold no speedups over ONNX Runtime or OpenVINO")
    shapes = list(dict.fromkeys((r["M"], r["K"], r["N"]) for r in rows))
    bits = sorted({r.get("weight_bits", 8) for r in rows}, reverse=True)
    # measured sparsities as evenly spaced categories: a line from 0 to 0.8 would suggest values in between
    levels = sorted({r["sparsity"] for r in rows})
    pos = {v: i for i, v in enumerate(levels)}
    fig, axes = plt.subplots(len(contenders), len(layouts), figsize=(4.6 * len(layouts), 3.4 * len(contenders) + 1.0),
                             squeeze=False, sharex=True)
    handles = {}
    for (key, lab), row_axes in zip(contenders, axes):
        for layout, ax in zip(layouts, row_axes):
            top = 1.0
            for si, shape in enumerate(shapes):
                for bw in bits:
                    pts = sorted((r for r in rows if (r["M"], r["K"], r["N"]) == shape and r.get("weight_bits", 8) == bw
                                  and r.get("layout", "plain") == layout and r.get(key) is not None),
                                 key=lambda r: r["sparsity"])
                    if not pts:
                        continue
                    ys = [p[key] for p in pts]
                    top = max(top, *ys)
                    (h,) = ax.plot([pos[p["sparsity"]] for p in pts], ys, marker="o" if bw == 8 else "^",
                                   color=f"C{si % 10}", linestyle="-" if bw == 8 else "--", ms=4)
                    handles[f"M{shape[0]} K{shape[1]} N{shape[2]}, s{bw} weights"] = h
            ax.axhline(1.0, color="grey", lw=0.9)
            ax.text(0.0, 1.0, " same speed", va="bottom", ha="left", fontsize=7, color="grey",
                    transform=ax.get_yaxis_transform())
            ax.set_ylim(0, top * 1.12)
            ax.set_title(f"vs {lab}, {layout} layout", fontsize=9)
            ax.set_ylabel("x faster (their time / ours)", fontsize=8)
            ax.grid(alpha=0.3)
    for ax in axes[-1]:
        ax.set_xticks(range(len(levels)), [f"{v:g}" + (" (dense)" if v == 0 else "") for v in levels])
        ax.set_xlabel("4x1 block sparsity of our weights (the measured levels)")
    fig.legend(list(handles.values()), list(handles), loc="lower center", ncol=min(len(handles), 4), fontsize=7,
               frameon=False, handlelength=3.5)
    fig.suptitle(f"{title}\nlinear axes from 0; above the grey line edgekit is faster", fontsize=9)
    fig.tight_layout(rect=(0, 0.04 + 0.02 * (len(handles) // 4), 1, 1))
    return fig


def _x(v: float) -> str:
    """A ratio: 2 decimals from 1 up, 2 significant digits below (0.0028, not 0.00)."""
    return f"{v:.2f}" if v >= 1 else f"{v:.2g}"


def plot_compression(report: dict, path) -> Path:
    """Draw :func:`compression_figure` to a PNG (the artifact's report.png); returns its path."""
    return _save(_pyplot(), compression_figure(report), path, dpi=110)


def compression_figure(report: dict):
    """The compression report at a glance: left, the final sparsity of every encoder Linear (layers x kinds,
    each cell labelled); right, the stage metric (accuracy, or embedding cosine to the teacher) from the
    baseline through the stages to the compressed model, with each exported runtime's score and each stage's
    change from the baseline in points; that axis spans at least 5 points, so a small drop looks small. Returns
    the matplotlib figure.
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

    search = next((st["search"] for st in report["stages"] if st.get("search")), None)
    if search:
        fig, (ax0, ax1, ax2) = plt.subplots(1, 3, figsize=(16, 0.45 * depth + 3.4),
                                            gridspec_kw={"width_ratios": [1.1, 1, 1]})
        pareto_axes(ax2, search)
    else:
        fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(11, 0.45 * depth + 3.2), gridspec_kw={"width_ratios": [1.1, 1]})
    im = ax0.imshow(100 * grid, vmin=0, vmax=100, cmap="viridis", aspect="auto")
    for (i, j), v in np.ndenumerate(grid):
        if np.isfinite(v):
            ax0.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=8,
                     color="black" if v > 0.6 else "white")
    ax0.set_xticks(range(len(kinds)), kinds)
    ax0.set_yticks(range(depth), [f"layer {i}" for i in range(depth)])
    pattern = report["sparsity"].get("pattern") or "none"
    ax0.set_title(f"sparsity % per encoder Linear ({pattern}; total {100 * report['sparsity']['total']:.1f}%)",
                  fontsize=9)
    fig.colorbar(im, ax=ax0, fraction=0.046, pad=0.04, label="% of weights that are zero")
    x = np.arange(len(names))
    base = values[0]
    ax1.plot(x, values, "o-", color="tab:blue", label="torch (fake-quant in the quantize stage)")
    for xi, v in zip(x, values):
        if np.isfinite(v):
            delta = f"\n{100 * (v - base):+.2f} pt" if xi and np.isfinite(base) else ""
            ax1.annotate(f"{v:.4f}{delta}", (xi, v), textcoords="offset points", xytext=(0, 6), ha="center",
                         fontsize=8)
    shown = [v for v in values if np.isfinite(v)]
    for k, (rt, v) in enumerate((report.get("runtimes") or {}).items()):
        if rt != "torch" and v.get(key) is not None:
            ax1.plot([x[-1] + 0.12 * (k + 1)], [v[key]], "s", label=f"{rt} ({v['precision']}): {v[key]:.4f}")
            shown.append(v[key])
    if shown:  # at least 5 points of axis: a zoomed axis makes a 0.2-point dip look like a collapse
        lo, hi = min(shown), max(shown)
        span = max(hi - lo, 0.05)
        mid = (hi + lo) / 2
        ax1.set_ylim(mid - 0.5 * span - 0.15 * span, mid + 0.5 * span + 0.25 * span)  # room for the labels
    ax1.set_xticks(x, names)
    ax1.set_xlim(-0.5, x[-1] + 0.5)  # room for the first and last labels and the runtime markers
    ax1.set_ylabel(label + " (axis not from 0)")
    title = f"{report['model']} ({report['recipe']}): {label} per stage"
    probe = (report["baseline"].get("accuracy"), report["compressed"].get("accuracy"))
    if not cls and None not in probe:
        title += f"\nlinear probe on the embeddings: {probe[0]:.4f} -> {probe[1]:.4f}"
    ax1.set_title("\n".join(textwrap.wrap(title.split("\n")[0], 70) + title.split("\n")[1:]), fontsize=9)
    ax1.grid(alpha=0.3)
    ax1.legend(fontsize=7, loc="best")
    return fig


def pareto_axes(ax, search: dict) -> None:
    """The prune search (``prune.scope: search``) on one axis: sampled trials, the Pareto front, the latency
    target and the chosen point; x = predicted latency of the encoder Linears as a fraction of dense int8 (linear,
    from 0), y = the summed sensitivity (quality cost, lower is better)."""
    import numpy as np

    pts = np.array(search.get("points") or [[np.nan, np.nan]], dtype=float)
    front = np.array(search["front"], dtype=float)
    ax.scatter(pts[:, 0], pts[:, 1], s=6, color="0.75", label=f"trials ({search['trials']}, a sample)")
    ax.plot(front[:, 0], front[:, 1], "o-", ms=3, color="tab:blue", label=f"Pareto front ({len(front)} points)")
    ax.axvline(search["target"], color="tab:red", ls="--", lw=0.9, label=f"latency target {search['target']:.2f}")
    c = search["chosen"]
    ax.plot([c["latency"]], [c["cost"]], "*", ms=14, color="tab:red",
            label=f"chosen: {c['latency']:.3f} of dense" + ("" if search.get("met", True) else " (target not met)"))
    ax.set_xlim(0, max(1.0, float(np.nanmax(pts[:, 0])) if np.isfinite(pts).any() else 1.0) * 1.02)
    ax.set_xlabel("predicted Linear latency / dense int8 (measured kernels)")
    ax.set_ylabel("quality cost (sum of per-Linear divergence)")
    ax.set_title("sparsity search (NSGA-II): lower left is better", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")


def _pyplot():
    """matplotlib.pyplot on the Agg backend (files only, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path, dpi: int, tight: bool = True) -> Path:
    if tight:
        fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path
