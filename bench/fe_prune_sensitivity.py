#!/usr/bin/env python
"""Diagnostic (feature extraction, issue 4): mean embedding cosine of minilm-l6 to itself after one-shot 4x1
magnitude pruning (no training) of all encoder Linears or of one group, on 96 bbc-news test articles.
Shows how sensitive a general-purpose embedder is to each part. Never asserts.

    python bench/fe_prune_sensitivity.py
"""
import copy, numpy as np, torch
from edgekit.zoo import load_torch, resolve
from edgekit.data import load_dataset, tokenize
from edgekit.arch import encoder_linears
from edgekit.compress.prune import mask_for
torch.set_num_threads(2)
teacher, tok = load_torch(resolve("minilm-l6")); teacher.eval()
texts = load_dataset("bbc-news", "test").texts[:96]
f = tokenize(tok, texts, max_length=128)
ids, mask = torch.from_numpy(f["input_ids"]), torch.from_numpy(f["attention_mask"])
with torch.inference_mode(): t = teacher(ids, mask).numpy()
def cos(m):
    with torch.inference_mode(): s = m(ids, mask).numpy()
    return float(np.mean((s*t).sum(1)/np.linalg.norm(s,axis=1)/np.linalg.norm(t,axis=1)))
groups = {"all": None, "ffn": ("ffn_in","ffn_out"), "attn qkvo": ("q","k","v","o"), "qk only": ("q","k"), "v,o": ("v","o")}
for sp in (0.5, 0.8):
    for g, keep in groups.items():
        m = copy.deepcopy(teacher)
        with torch.no_grad():
            for n, lin in encoder_linears(m).items():
                if keep is None or n.split(".")[-1] in keep:
                    lin.weight.mul_(mask_for(lin.weight.detach(), sp, "4x1"))
        print(f"sparsity {sp} on {g:10s}: cosine {cos(m):.3f}", flush=True)
