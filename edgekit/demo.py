"""``make demo``: the main job on the embedded default, end to end.

1. ``edgekit compress minilm-l6-bbc`` with the default recipe (4x1 pruning to 80% + distillation +
   int8; builds the fine-tuned model first if needed). An existing finished artifact is reused.
2. ``edgekit export minilm-l6-bbc`` (the dense fp32 original, for reference).
3. ``edgekit bench`` of the compressed model on native, OpenVINO int8, ONNX Runtime int8 and torch
   (fake-quant), with the fp32 original on the stock runtimes (``--baseline``), all interleaved in
   one run so every ratio comes from the same rounds.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .cli import main as cli_main


def _step(argv: list[str]) -> int:
    print(f"\n$ edgekit {' '.join(argv)}", flush=True)
    return cli_main(argv)


def run(out: Path, model: str, batches: str, seq: str, max_steps: int | None) -> int:
    out.mkdir(parents=True, exist_ok=True)
    comp, fp32 = out / "compressed", out / "fp32"
    if (comp / "report.json").is_file():
        print(f"reusing {comp} (delete it to compress again)")
    else:
        argv = ["compress", model, "-o", str(comp)] + (["--max-steps", str(max_steps)] if max_steps else [])
        if (comp.with_name(comp.name + ".ckpt") / "state.json").is_file():
            argv.append("--resume")  # an interrupted `make demo` continues where it stopped
        if code := _step(argv):
            return code
    if not (fp32 / "manifest.json").is_file() and (code := _step(["export", model, "-o", str(fp32), "--format", "onnx,openvino"])):
        return code
    _step(["info"])
    rep = json.loads((comp / "report.json").read_text())
    print(f"\ncompressed: {rep['task']} accuracy {rep['compressed'].get('accuracy', float('nan')):.4f} "
          f"(fp32 baseline {rep['baseline'].get('accuracy', float('nan')):.4f}), "
          f"4x1 sparsity {rep['sparsity']['total']:.3f}, {rep['precision']}")
    argv = ["bench", str(comp), "--runtime", "native,openvino,onnxruntime,torch", "--baseline", str(fp32),
            "--reference", "openvino", "--batch", batches, "--seq", seq, "--json", str(out / "bench.jsonl"),
            "--markdown", str(out / "bench.md"), "--plot", str(out / "bench.png")]
    if code := _step(argv):
        return code
    print(f"\nresults in {out}: report in compressed/report.md, bench.jsonl / .md / .png")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgekit.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default: out/demo)")
    p.add_argument("--model", default="minilm-l6-bbc")
    p.add_argument("--batch", default="1,8")
    p.add_argument("--seq", default="128")
    p.add_argument("--max-steps", type=int, default=None, help="cap training steps per stage (quicker, less accurate)")
    a = p.parse_args(argv)
    return run(a.out, a.model, a.batch, a.seq, a.max_steps)


if __name__ == "__main__":
    sys.exit(main())
