#!/usr/bin/env python
"""Native engine vs torch fake-quant of one artifact on the whole bbc-news test split: how many predictions
agree and the cosine of the logits. Never asserts.

    python bench/native_parity.py out/bbc
"""
from __future__ import annotations

import sys

import numpy as np


def main(argv=None) -> int:
    from edgekit.artifact import load_artifact
    from edgekit.data import load_dataset
    from edgekit.evaluate import run_batched
    from edgekit.runtimes import load, load_tokenizer

    art = load_artifact((argv or sys.argv[1:])[0])
    tok = load_tokenizer(art)
    test = load_dataset("bbc-news", "test")
    native = load(art, "native", threads=2)
    a = run_batched(native, tok, list(test.texts), progress=False)
    b = run_batched(load(art, "torch", threads=2), tok, list(test.texts), progress=False)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    y = np.asarray(test.labels)
    print(f"kernels {native.kernels}; same prediction {(a.argmax(1) == b.argmax(1)).sum()}/{len(y)}; logits cosine "
          f"mean {cos.mean():.5f} min {cos.min():.4f}; accuracy native {(a.argmax(1) == y).mean():.4f} "
          f"torch {(b.argmax(1) == y).mean():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
