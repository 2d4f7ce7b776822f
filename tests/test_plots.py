"""Plots and tables that do not mislead: bars from zero on linear axes, ratios that say which way,
notes that never print the inverse of the table's ratio, an explained empty latency-constrained throughput,
p99 only from enough runs. Synthetic rows, so every number is known."""
from __future__ import annotations

import re

import pytest

from edgekit import bench as B
from edgekit.plots import (compression_figure, kernels_figure, latency_figure, plot_compression, plot_kernels,
                           plot_latency)

PNG = b"\x89PNG\r\n\x1a\n"


def _row(runtime, batch, p50, ratio, runs=50, lct=None, seq=128, ref="torch"):
    lat = {"p50": p50, "p90": p50 * 1.1, "p99": p50 * 1.3, "mean": p50 * 1.02, "min": p50 * 0.9}
    return {"model": "m", "runtime": runtime, "precision": "int8", "batch": batch, "seq": seq, "threads": 2,
            "latency_ms": lat, "throughput_per_s": batch * 1e3 / p50, "cpu": {"model": "cpu", "cores": 2, "isa": {}},
            "ratio_vs": {"reference": ref, "median": ratio, "rounds": [ratio * 0.95, ratio, ratio * 1.05]},
            "speedup_vs": {}, "runs": runs, "rounds": 3, "budget_ms": 10.0, "runtime_version": "1",
            "lct_per_s": lct, "lct_batch": batch if lct else None}


@pytest.fixture()
def rows():
    # the example: 214 ms against 187 ms, plus one runtime slower than the reference
    return [_row("torch", 1, 214.0, 1.0), _row("onnxruntime", 1, 187.0, 1.144), _row("openvino", 1, 250.0, 0.856),
            _row("torch", 8, 900.0, 1.0), _row("onnxruntime", 8, 700.0, 1.29), _row("openvino", 8, 5.0, 180.0,
                                                                                     lct=1600.0)]


# ----------------------------------------------------------------------------------------- tables
def test_ratio_column_says_which_way(rows):
    head = B.format_table(rows).splitlines()[1]
    assert "x faster than torch [IQR]" in head and "x vs" not in head


def test_notes_never_print_the_inverse_of_a_table_ratio(rows):
    text = B.format_table(rows)
    table, notes = text.split("\n\n", 1)
    in_table = set(re.findall(r"\d+\.\d+", table))
    for number in re.findall(r"(\d+\.\d+)x", notes):
        assert number in in_table, number  # every ratio in the notes is one of the table's
    assert "1.17x" not in notes and "0.87" not in text  # 1/0.856 and 1/1.144: the inverses
    assert "fastest first" in notes and "openvino 180.00x, onnxruntime 1.29x, torch 1x" in notes
    assert "below 1 = slower than torch" in notes


def test_lct_column_shows_a_value_or_why_not(rows):
    text = B.format_table(rows)
    assert "lct items/s (p90 <= 10 ms)" in text.splitlines()[1]
    lines = {tuple(line.split()[:3]): line for line in text.splitlines()[3:9]}
    assert lines["openvino", "int8", "8"].endswith("1600.0 (batch 8)")
    assert lines["torch", "int8", "1"].endswith("none (p90 > 10 ms)")
    assert "none = no batch size met the budget" in text and "batch sizes measured (1, 8)" in text


def test_p99_only_from_enough_runs_and_says_how_many(rows):
    text = B.format_table(rows)
    assert "p99 is shown only from 100 timed runs per point ('-' otherwise; this run had 50" in text
    torch_line = next(line for line in text.splitlines() if line.startswith("torch"))
    cells = torch_line.split()
    assert cells[4] == "50" and cells[7] == "-"  # runs, then p50 p90 p99
    many = [dict(r, runs=200) for r in rows]
    text = B.format_table(many)
    assert "p99 is shown only" not in text
    assert next(line for line in text.splitlines() if line.startswith("torch")).split()[7] == f"{214 * 1.3:.2f}"
    few = [dict(r, runs=5) for r in rows]
    assert "p90 is shown only from 10 timed runs" in B.format_table(few)


def test_tiny_ratios_keep_their_digits(rows):
    rows[2]["ratio_vs"].update(median=0.00284, rounds=[0.00284] * 3)
    text = B.format_table(rows)
    assert "0.0028 [0.0028-0.0028]" in text and not re.search(r"\s0\.00 \[", text)


def test_markdown_has_the_same_columns_and_notes(rows):
    md = B.markdown_table(rows)
    assert "| x faster than torch [IQR] |" in md and "- p99 is shown only from 100" in md


# ----------------------------------------------------------------------------------------- bench plot
def test_bench_bars_start_at_zero_on_a_linear_axis(rows, tmp_path):
    fig = latency_figure(rows)
    axes = [ax for ax in fig.axes if ax.get_visible()]
    assert len(axes) == 2  # one panel per (batch, seq), each with its own scale
    for ax in axes:
        assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
        assert "linear, from 0" in ax.get_ylabel()
        for bar in ax.patches:
            assert bar.get_y() == 0
    # 214 vs 187 ms: bar heights in proportion to the numbers (not 5x apart as on the old log axis)
    heights = [b.get_height() for b in axes[0].patches]
    assert heights[0] / heights[1] == pytest.approx(214 / 187)
    labels = [t.get_text() for t in axes[0].texts]
    assert "187 ms\n1.14x faster" in labels and "214 ms\nreference" in labels and "250 ms\n0.86x (slower)" in labels
    assert "times faster than torch" in fig._suptitle.get_text()
    assert plot_latency(rows, tmp_path / "b.png").read_bytes()[:8] == PNG


# ----------------------------------------------------------------------------------------- kernel plot
def _kernel_rows():
    out = []
    for (m, k, n) in ((128, 384, 1536), (128, 1536, 384)):
        for bits in (8, 7):
            for layout in ("plain", "engine"):
                for sp in (0.0, 0.8, 0.9):
                    out.append({"M": m, "K": k, "N": n, "weight_bits": bits, "layout": layout, "sparsity": sp,
                                "speedup_vs_onnxruntime": 0.5 + sp, "speedup_vs_openvino": 3 + 10 * sp})
    return out


def test_kernel_plot_is_readable_and_from_zero(tmp_path):
    fig = kernels_figure(_kernel_rows(), "t")
    axes = fig.axes
    assert len(axes) == 4  # (ONNX Runtime, OpenVINO) x (plain, engine)
    for ax in axes:
        assert ax.get_yscale() == "linear" and ax.get_ylim()[0] == 0
        assert any(line.get_ydata()[0] == 1.0 for line in ax.lines)  # the "same speed" line
        styles = [(line.get_color(), line.get_linestyle()) for line in ax.lines if len(line.get_xdata()) == 3]
        assert len(styles) == 4 and len(set(styles)) == 4  # every series tellable apart
    for ax in axes[2:]:  # the bottom row carries the shared x axis
        assert [t.get_text() for t in ax.get_xticklabels()] == ["0 (dense)", "0.8", "0.9"]
    assert plot_kernels(_kernel_rows(), tmp_path / "k.png").read_bytes()[:8] == PNG


# ----------------------------------------------------------------------------------------- report.png
def _report(base=0.9624, prune=0.9554, final=0.9577):
    layers = {f"layers.{i}.{k}": 0.8 for i in range(2) for k in ("q", "k", "v", "o", "ffn_in", "ffn_out")}
    return {"task": "text-classification", "model": "m", "recipe": "r", "baseline": {"accuracy": base},
            "compressed": {"accuracy": final}, "sparsity": {"total": 0.8, "pattern": "4x1", "layers": layers},
            "stages": [{"stage": "distill"}, {"stage": "prune", "accuracy": prune},
                       {"stage": "quantize", "accuracy": final}],
            "runtimes": {"onnxruntime": {"accuracy": final, "precision": "int8"}}}


def test_report_png_keeps_small_drops_small(tmp_path):
    fig = compression_figure(_report())
    heat, bar, metric = fig.axes[0], fig.axes[2], fig.axes[1]
    lo, hi = metric.get_ylim()
    assert hi - lo >= 0.05  # half a point is 1/10 of the axis, not all of it
    assert "axis not from 0" in metric.get_ylabel()
    texts = [t.get_text() for t in metric.texts]
    assert "0.9577\n-0.47 pt" in texts and "0.9624" in texts
    assert bar.get_ylabel() == "% of weights that are zero" and bar.get_ylim() == (0.0, 100.0)
    assert heat.texts[0].get_text() == "80"
    assert plot_compression(_report(), tmp_path / "r.png").read_bytes()[:8] == PNG


def test_report_png_draws_the_search_front_and_the_chosen_point(tmp_path):
    report = _report()
    front = [[0.2, 3.0], [0.3, 1.5], [0.6, 0.4]]
    report["stages"][1]["search"] = {"trials": 50, "target": 0.33, "met": True, "front": front,
                                     "points": front + [[0.5, 2.0], [0.9, 1.0]],
                                     "chosen": {"latency": 0.3, "cost": 1.5, "trial": 7}}
    fig = compression_figure(report)
    pareto = next(ax for ax in fig.axes if ax.get_title().startswith("sparsity search"))
    lines = {line.get_label(): line for line in pareto.lines}
    front_line = next(v for k, v in lines.items() if k.startswith("Pareto front"))
    assert list(front_line.get_xdata()) == [0.2, 0.3, 0.6]
    star = next(v for k, v in lines.items() if k.startswith("chosen"))
    assert (star.get_xdata()[0], star.get_ydata()[0]) == (0.3, 1.5)
    assert pareto.get_xlim()[0] == 0  # latency from 0, linear
    assert any(k.startswith("latency target 0.33") for k in lines)
    assert plot_compression(report, tmp_path / "s.png").read_bytes()[:8] == PNG
