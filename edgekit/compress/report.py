"""The compress report: ``report.json`` (CONTRACT fields), ``report.md`` for people and ``report.png``, added to
the finished artifact, whose manifest is then re-hashed."""
from __future__ import annotations

import json
import math
from pathlib import Path


def size_mb(path: Path) -> float:
    """Megabytes of the files under ``path``."""
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def format_sizes(art) -> dict[str, float]:
    """{format: MB on disk} of each format folder of an artifact."""
    root = art.root
    return {fmt: round(size_mb(root / p if (root / p).is_dir() else (root / p).parent), 2)
            for fmt, p in art.manifest.formats.items()}


def write_reports(root: Path, report: dict):
    """Add report.json/report.md/report.png to a finished artifact and re-hash its manifest (atomic replace).
    Returns the artifact as it now is."""
    from edgekit.artifact import finalize_manifest, load_artifact
    from edgekit.plots import plot_compression

    (root / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (root / "report.md").write_text(report_markdown(report))
    plot_compression(report, root / "report.png")
    art = load_artifact(root, verify=False)
    finalize_manifest(root, art.manifest)
    return load_artifact(root, verify=False)


def read_report(art) -> dict:
    """The report.json of a compressed artifact."""
    return json.loads((Path(art.root) / "report.json").read_text())


def report_markdown(r: dict) -> str:
    metric = {"text-classification": "accuracy", "token-classification": "token accuracy"}.get(
        r["task"], "linear-probe accuracy")
    lines = [f"# edgekit compress report: {r['model']} ({r['recipe']})", "",
             f"task {r['task']}, data {r['data']} (test split), precision {r['precision']}"
             + (f" ({r['weight_bits']}-bit weights)" if r.get("weight_bits") else "") + f", {r['seconds']} s",
             "", "| stage | " + metric + " | embedding cosine | sparsity | seconds |",
             "|---|---|---|---|---|",
             f"| baseline (fp32) | {r['baseline'].get('accuracy', float('nan')):.4f} | 1 | 0 | |"]

    def num(x) -> str:  # 4 decimals; "-" where a stage has no such figure (e.g. no probe between stages)
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"

    for s in r["stages"]:
        if not {"accuracy", "embedding_cosine"} & s.keys():  # a stage that changes no weight (distill) is not scored
            continue
        lines.append(f"| {s['stage']} | {num(s.get('accuracy'))} | {num(s.get('embedding_cosine'))} | "
                     f"{s.get('sparsity', r['sparsity']['total']):.3f} | {s['seconds']} |")
    c = r["compressed"]
    lines.append(f"| **compressed** | **{num(c.get('accuracy'))}** | {num(c.get('embedding_cosine'))} | "
                 f"{r['sparsity']['total']:.3f} | |")
    if "entity_f1" in c:
        lines += ["", f"Entity-level F1 (seqeval): baseline {num(r['baseline'].get('entity_f1'))}, "
                      f"compressed {num(c['entity_f1'])}."]
    if r.get("student_layers"):
        lines += ["", f"Layer dropping: the student keeps teacher layers {r['student_layers']}."]
    for s in r["stages"]:
        found = s.get("search")
        if found:
            lines += ["", f"Sparsity search (NSGA-II, {found['trials']} trials, grid {found['grid']}): predicted "
                          f"encoder-Linear latency {found['chosen']['latency']:.3f} of dense int8 "
                          f"({found['predicted_us']:.0f} of {found['dense_us']:.0f} us at 128 tokens, kernels timed "
                          f"on this CPU), target {found['target']:.3f}"
                          + ("" if found["met"] else " (not reachable: the fastest allocation is used)")
                          + f"; {len(found['front'])} allocations on the Pareto front (report.png)."]
        for kind, v in s.get("kept", {}).items():
            lines += ["", f"{kind.capitalize()} kept per layer (of {v['of']}): {v['kept']}"]
        sens = s.get("sensitivity")
        if sens and sens.get("resumed"):
            lines += ["", f"Sensitivity pass (before a resume): kept fp32: {', '.join(sens['keep_fp32']) or 'none'}"]
        elif sens:
            lines += ["", f"Sensitivity pass ({sens['metric']}, {sens['samples']} validation examples, budget "
                          f"{sens['budget']} points): fp32 {sens['fp32']:.2f}, all int8 {sens['int8']:.2f}, final "
                          f"{sens['final']:.2f}; kept fp32: {', '.join(sens['keep_fp32']) or 'none'}"]
    lines += quality_lines(r)
    lines += ["", "Exported model per runtime:", ""]
    for rt, v in r.get("runtimes", {}).items():
        lines.append(f"- {rt} ({v['precision']}): " + ", ".join(f"{k} {x:.4f}" for k, x in v.items() if k != "precision"))
    lines += ["", "Size on disk (MB): " + ", ".join(f"{k} {v}" for k, v in r.get("size_mb", {}).items()), "",
              "![sparsity per encoder Linear and the metric per stage](report.png)", ""]
    return "\n".join(lines) + "\n"


def quality_lines(r: dict) -> list[str]:
    """Feature extraction: what a user of the embeddings feels, on the test split, per model and runtime: the
    cosine to the teacher, the top-10 neighbour overlap with the teacher's neighbours among the test texts, the
    linear probe and its drop from the teacher's. Nothing for classifiers."""
    if r["task"] != "feature-extraction" or "embedding_cosine" not in r["compressed"]:
        return []
    teacher = r["baseline"].get("accuracy")
    rows = [("compressed (torch, before export)", r["compressed"])]
    rows += [(f"{rt} ({v['precision']})", v) for rt, v in r.get("runtimes", {}).items()]

    def cell(v: dict, key: str, scale: float = 1.0) -> str:
        return "-" if v.get(key) is None else f"{scale * v[key]:.4f}" if scale == 1 else f"{scale * v[key]:+.2f}"

    lines = ["", f"Embedding quality on the {r['data']} test split (teacher's linear probe "
                 f"{'-' if teacher is None else f'{teacher:.4f}'}):", "",
             "| model | cosine to teacher | top-10 neighbour overlap | linear probe | probe drop (points) |",
             "|---|---|---|---|---|"]
    for name, v in rows:
        lines.append(f"| {name} | {cell(v, 'embedding_cosine')} | {cell(v, 'neighbour_overlap_at_10')} | "
                     f"{cell(v, 'accuracy')} | {cell(v, 'linear_probe_drop', 100.0)} |")
    return lines
