#!/usr/bin/env python
"""The seed paper's model shape on edgekit: a DistilBERT-base classifier, 80% 4x1 + int8, native vs OpenVINO int8.

Builds a seeded random-weight DistilBERT-base sequence classifier (hidden 768, 6 layers, 12 heads, FFN 3072;
minilm-l6's BERT tokenizer, vocabulary 30522 as DistilBERT-base's; 5 classes for bbc-news), compresses it
without training (`oneshot-ptq`: one-shot 4x1 pruning to 80% with least-squares refit, calibrated int8), then
runs edgekit's interleaved benchmark on the artifact: native, OpenVINO and ONNX Runtime, ratios against
OpenVINO, batch 1, seq 128, 2 threads (the issue's measurement). Random weights: the speed of the shape, not of
a trained model (the kernels skip the same pruned blocks either way). Writes the benchmark's JSON Lines and a
Markdown table; never asserts. Run it on a quiet machine: the ratios are only as good as the host's quiet.

    python bench/distilbert_base.py --out out/distilbert-base                       # build, compress, bench
    python bench/distilbert_base.py --out out/distilbert-base --min-time 0.2 --rounds 2   # a quick smoke run

Files under --out: ``model/`` (the random Hugging Face folder), ``artifact/`` (the compressed artifact),
``bench.jsonl`` and ``bench.md``. Existing model and artifact folders are reused (``--rebuild`` starts over).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

#: DistilBERT-base (distilbert-base-uncased's config) with a 5-class head
SHAPE = dict(dim=768, n_layers=6, n_heads=12, hidden_dim=3072, max_position_embeddings=512, activation="gelu")


def build_model(dest: Path, seed: int) -> Path:
    """A random DistilBERT-base classifier with minilm-l6's tokenizer, saved as a Hugging Face folder."""
    import torch
    from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

    from edgekit.artifact import staging_dir
    from edgekit.zoo import _minilm_path

    torch.manual_seed(seed)
    tok = AutoTokenizer.from_pretrained(_minilm_path())
    cfg = DistilBertConfig(vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id, num_labels=5, **SHAPE)
    model = DistilBertForSequenceClassification(cfg).eval()
    with staging_dir(dest) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("out/distilbert-base"), help="working folder")
    ap.add_argument("--seed", type=int, default=0, help="weights and compression seed")
    ap.add_argument("--recipe", default="oneshot-ptq", help="compression recipe (default: oneshot-ptq, no training)")
    ap.add_argument("--runtimes", default="native,openvino,onnxruntime")
    ap.add_argument("--reference", default="openvino")
    ap.add_argument("--batch", default="1")
    ap.add_argument("--seq", default="128")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--min-time", type=float, default=None, help="seconds timed per point (edgekit bench's default)")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved rounds per point (edgekit bench's default)")
    ap.add_argument("--rebuild", action="store_true", help="build and compress again even if the folders exist")
    a = ap.parse_args(argv)

    from edgekit.cli import main as edgekit_main

    model_dir, art_dir = a.out / "model", a.out / "artifact"
    if a.rebuild:
        for d in (model_dir, art_dir):
            shutil.rmtree(d, ignore_errors=True)
    if not (model_dir / "config.json").is_file():
        print(f"building a random DistilBERT-base classifier in {model_dir}", file=sys.stderr)
        build_model(model_dir, a.seed)
    if not (art_dir / "manifest.json").is_file():
        print(f"compressing it with recipe {a.recipe} into {art_dir}", file=sys.stderr)
        rc = edgekit_main(["compress", str(model_dir), "-o", str(art_dir), "--recipe", a.recipe, "--seed", str(a.seed),
                           "--overwrite"])
        if rc:
            return rc
    args = ["bench", str(art_dir), "-r", a.runtimes, "--reference", a.reference, "-b", a.batch, "-s", a.seq,
            "-t", str(a.threads), "--json", str(a.out / "bench.jsonl"), "--markdown", str(a.out / "bench.md")]
    if a.min_time is not None:
        args += ["--min-time", str(a.min_time)]
    if a.rounds is not None:
        args += ["--rounds", str(a.rounds)]
    return edgekit_main(args)


if __name__ == "__main__":
    sys.exit(main())
