"""``make demo``: the main job on the embedded default model, end to end.

Exports ``minilm-l6`` and benchmarks it on torch, ONNX Runtime and OpenVINO (interleaved, one
process), printing the table. Run ``python -m edgekit.demo --help`` for options.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .cli import main as cli_main


def run(out: Path, model: str, runtimes: str, batches: str, seq: str) -> int:
    out.mkdir(parents=True, exist_ok=True)
    art = out / "artifact"
    steps = [
        ["export", model, "-o", str(art), "--format", "onnx,openvino"],
        ["info"],
        ["bench", str(art), "--runtime", runtimes, "--batch", batches, "--seq", seq,
         "--json", str(out / "bench.jsonl"), "--markdown", str(out / "bench.md"), "--plot", str(out / "bench.png")],
    ]
    for argv in steps:
        print(f"\n$ edgekit {' '.join(argv)}", flush=True)
        code = cli_main(argv)
        if code:
            return code
    print(f"\nresults: {out}/bench.jsonl, bench.md, bench.png")
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgekit.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("out/demo"), help="output folder (default: out/demo)")
    p.add_argument("--model", default="minilm-l6", help="model to export and benchmark (default: minilm-l6)")
    p.add_argument("--runtime", default="torch,onnxruntime,openvino")
    p.add_argument("--batch", default="1,8")
    p.add_argument("--seq", default="128")
    a = p.parse_args(argv)
    return run(a.out, a.model, a.runtime, a.batch, a.seq)


if __name__ == "__main__":
    sys.exit(main())
