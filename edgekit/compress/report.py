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
        for kind, v in s.get("kept", {}).items():
            lines += ["", f"{kind.capitalize()} kept per layer (of {v['of']}): {v['kept']}"]
        sens = s.get("sensitivity")
        if sens and sens.get("resumed"):
            lines += ["", f"Sensitivity pass (before a resume): kept fp32: {', '.join(sens['keep_fp32']) or 'none'}"]
        elif sens:
            lines += ["", f"Sensitivity pass ({sens['metric']}, {sens['samples']} validation examples, budget "
                          f"{sens['budget']} points): fp32 {sens['fp32']:.2f}, all int8 {sens['int8']:.2f}, final "
                          f"{sens['final']:.2f}; kept fp32: {', '.join(sens['keep_fp32']) or 'none'}"]
    lines += ["", "Exported model per runtime:", ""]
    for rt, v in r.get("runtimes", {}).items():
        lines.append(f"- {rt} ({v['precision']}): " + ", ".join(f"{k} {x:.4f}" for k, x in v.items() if k != "precision"))
    lines += ["", "Size on disk (MB): " + ", ".join(f"{k} {v}" for k, v in r.get("size_mb", {}).items()), "",
              "![sparsity per encoder Linear and the metric per stage](report.png)", ""]
    return "\n".join(lines) + "\n"
