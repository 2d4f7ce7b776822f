#!/usr/bin/env python
"""Native engine vs torch fake-quant of one artifact on the whole bbc-news test split: how many predictions
agree (classifiers) and the cosine of the outputs (logits or embeddings). Never asserts.

    python bench/native_parity.py out/bbc
    python bench/native_parity.py out/bbc --precision int8   # int8 Q K^T in attention
"""
from __future__ import annotations

import argparse

import numpy as np


def main(argv=None) -> int:
    from edgekit.artifact import load_artifact
    from edgekit.data import load_dataset
    from edgekit.evaluate import run_batched
    from edgekit.runtimes import load, load_tokenizer

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("artifact")
    ap.add_argument("--precision", default=None, help="the native runtime's precision hint: fp32, bf16 or int8 "
                                                      "(attention); default: the runtime's default")
    a_ = ap.parse_args(argv)
    art = load_artifact(a_.artifact)
    tok = load_tokenizer(art)
    test = load_dataset("bbc-news", "test")
    native = load(art, "native", threads=2, precision=a_.precision)
    a = run_batched(native, tok, list(test.texts), progress=False)
    b = run_batched(load(art, "torch", threads=2), tok, list(test.texts), progress=False)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    y = np.asarray(test.labels)
    line = f"{native.precision}, kernels {native.kernels}: output cosine mean {cos.mean():.5f} min {cos.min():.4f}"
    if art.task == "text-classification":
        line += (f"; same prediction {(a.argmax(1) == b.argmax(1)).sum()}/{len(y)}; accuracy native "
                 f"{(a.argmax(1) == y).mean():.4f} torch {(b.argmax(1) == y).mean():.4f}")
    print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
