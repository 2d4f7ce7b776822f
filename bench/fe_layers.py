#!/usr/bin/env python
"""Diagnostic (feature extraction, issue 4): where a compressed minilm-l6 loses its sentence embedding.

For a feature-extraction artifact DIR (its fp32 sparse weights in DIR/torch, without the int8 rounding, which
costs ~0.001 cosine on these models), against the unpruned teacher, on bbc-news text (first 128 tokens):

1. every hidden state (the embeddings' output, then each encoder layer): mean cosine per token, cosine of the
   mean-pooled states, and the relative error per token (|student - teacher| / |teacher|), test split;
2. the output embedding's cosine with one layer replaced by the teacher's own (dense) layer: how much of the
   loss each layer alone would give back, with the other layers as trained;
3. the embedding cosine on the train split next to the test split (a gap = too little data; no gap = the
   sparse network cannot follow the teacher even on the text it was trained on);
4. a ridge-regression linear map from the student's to the teacher's normalised embeddings, fitted on train:
   the test cosine a learned 384 x 384 output projection could at most add.

    python bench/fe_layers.py out/fe_emb4 --json out/fe_layers.jsonl

Never asserts; it prints a Markdown report (and JSON lines with --json).
"""
from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from edgekit.data import load_dataset, tokenize
from edgekit.models import mean_pool
from edgekit.zoo import resolve


def pooled_out(model, feeds) -> torch.Tensor:
    with torch.no_grad():
        return mean_pool(model(**feeds).last_hidden_state, feeds["attention_mask"])


def batched(model, feeds, batch: int = 64, hidden: bool = False):
    outs = []
    for i in range(0, len(feeds["input_ids"]), batch):
        part = {k: v[i : i + batch] for k, v in feeds.items()}
        with torch.no_grad():
            o = model(**part, output_hidden_states=hidden)
        outs.append(o.hidden_states if hidden else mean_pool(o.last_hidden_state, part["attention_mask"]))
    if hidden:
        return [torch.cat([h[L] for h in outs]) for L in range(len(outs[0]))]
    return torch.cat(outs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path, help="a feature-extraction artifact folder (edgekit compress minilm-l6 ...)")
    ap.add_argument("--teacher", default="minilm-l6")
    ap.add_argument("--texts", type=int, default=200, help="test texts for parts 1 and 2 (default 200)")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    from transformers import AutoModel

    folder = a.artifact / "torch"
    if not (folder / "config.json").is_file():
        ap.error(f"{a.artifact} has no torch/config.json: give a feature-extraction artifact folder")
    from transformers import AutoTokenizer

    student = AutoModel.from_pretrained(folder).eval()
    ref = resolve(a.teacher, "feature-extraction")
    teacher = AutoModel.from_pretrained(ref.path).eval()
    tok = AutoTokenizer.from_pretrained(ref.path)

    def feeds_of(texts):
        f = tokenize(tok, texts, max_length=a.max_length, pad_to_max=False)
        return {k: torch.from_numpy(np.asarray(v)) for k, v in f.items() if k in ("input_ids", "attention_mask")}

    rows = []
    test = feeds_of(load_dataset("bbc-news", "test").texts[: a.texts])
    mask = test["attention_mask"].bool()
    hs, ht = batched(student, test, hidden=True), batched(teacher, test, hidden=True)
    print(f"{a.artifact} vs {a.teacher}, {a.texts} test texts, first {a.max_length} tokens\n")
    print("| hidden state | token cosine | pooled cosine | relative error per token |\n|---|---:|---:|---:|")
    for L, (s, t) in enumerate(zip(hs, ht)):
        tc = F.cosine_similarity(s[mask], t[mask], dim=-1).mean().item()
        pc = F.cosine_similarity(mean_pool(s, test["attention_mask"]), mean_pool(t, test["attention_mask"])).mean().item()
        rel = ((s[mask] - t[mask]).norm(dim=-1) / t[mask].norm(dim=-1)).mean().item()
        name = "embeddings" if L == 0 else f"layer {L - 1}"
        print(f"| {name} | {tc:.4f} | {pc:.4f} | {rel:.3f} |")
        rows.append({"part": "hidden", "state": name, "token_cosine": tc, "pooled_cosine": pc, "relative_error": rel})

    pt = mean_pool(ht[-1], test["attention_mask"])
    base = F.cosine_similarity(mean_pool(hs[-1], test["attention_mask"]), pt).mean().item()
    print(f"\n| teacher's layer swapped in | output cosine (as trained: {base:.4f}) |\n|---|---:|")
    for L in range(len(student.encoder.layer)):
        s = copy.deepcopy(student)
        s.encoder.layer[L] = copy.deepcopy(teacher.encoder.layer[L])
        c = F.cosine_similarity(batched(s, test), pt).mean().item()
        print(f"| layer {L} | {c:.4f} |")
        rows.append({"part": "swap", "layer": L, "output_cosine": c, "as_trained": base})

    emb = {}
    for split in ("train", "test"):
        f = feeds_of(load_dataset("bbc-news", split).texts)
        emb[split] = (F.normalize(batched(student, f)).double().numpy(), F.normalize(batched(teacher, f)).double().numpy())
    cos = {k: float(np.mean(np.sum(s * t, axis=1))) for k, (s, t) in emb.items()}
    (s_tr, t_tr), (s_te, t_te) = emb["train"], emb["test"]
    x = np.hstack([s_tr, np.ones((len(s_tr), 1))])
    w = np.linalg.solve(x.T @ x + 0.1 * np.eye(x.shape[1]), x.T @ t_tr)  # ridge, lambda 0.1 (best of 1e-3..1 here)
    pred = np.hstack([s_te, np.ones((len(s_te), 1))]) @ w
    mapped = float(np.mean(np.sum(pred / np.linalg.norm(pred, axis=1, keepdims=True) * t_te, axis=1)))
    print(f"\nembedding cosine, whole splits: train {cos['train']:.4f}, test {cos['test']:.4f}; "
          f"test after a linear map fitted on train: {mapped:.4f}")
    rows.append({"part": "splits", "train_cosine": cos["train"], "test_cosine": cos["test"], "test_linear_map": mapped})
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        with open(a.json, "w") as fh:
            for r in rows:
                fh.write(json.dumps({"artifact": str(a.artifact), **r}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
