#!/usr/bin/env python
"""Diagnostic (feature extraction, issue 4): how far fixed-mask distillation recovers minilm-l6's sentence
embedding after one-shot 80% 4x1 magnitude pruning of every encoder Linear, for a few training variants.
Prints the mean embedding cosine to the unpruned model on the validation split every ``--eval-every`` steps
and writes one JSON line per evaluation. Never asserts; it is for choosing the feature-extraction recipe.

    python bench/fe_recovery.py --steps 300 --lr 1e-4 --loss embedding --json out/fe_rec.jsonl
    python bench/fe_recovery.py --steps 300 --lr 3e-4 --loss tokens --windows all --no-dropout

Losses: ``embedding`` = 1 - cos(pooled student, pooled teacher) (what the default recipe uses);
``tokens`` = that plus 1 - cos per token of the last hidden state plus MSE of every layer's hidden states
divided by the teacher's variance of that layer (so outlier dimensions do not dominate).
``--windows all`` trains on every 128-token window of each training article instead of its first one.
"""
from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch
import torch.nn.functional as F

from edgekit.arch import encoder, encoder_linears
from edgekit.compress.prune import mask_for
from edgekit.data import load_dataset, tokenize
from edgekit.models import mean_pool
from edgekit.zoo import load_torch, resolve


def windows(tok, texts, max_length: int, every: bool):
    if not every:
        f = tokenize(tok, texts, max_length=max_length)
        return torch.from_numpy(f["input_ids"]), torch.from_numpy(f["attention_mask"])
    f = tok(list(texts), max_length=max_length, truncation=True, padding="max_length", stride=16,
            return_overflowing_tokens=True, return_tensors="np")
    keep = f["attention_mask"].sum(1) >= 32  # drop short tails
    return torch.from_numpy(f["input_ids"][keep]), torch.from_numpy(f["attention_mask"][keep])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--sparsity", type=float, default=0.8)
    ap.add_argument("--loss", choices=("embedding", "tokens"), default="embedding")
    ap.add_argument("--windows", choices=("first", "all"), default="first")
    ap.add_argument("--no-dropout", action="store_true")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init", choices=("magnitude", "wanda", "wanda-ls"), default="magnitude",
                    help="one-shot pruning: weight magnitude, |W| x input RMS, or that + least-squares refit "
                         "(edgekit.compress.oneshot), on 128 training windows")
    ap.add_argument("--layerwise", type=int, default=0, metavar="STEPS",
                    help="after the one-shot init, train each encoder layer alone for STEPS steps to reproduce the "
                         "teacher's output of that layer (edgekit.compress.oneshot.reconstruct_layers)")
    ap.add_argument("--layerwise-lr", type=float, default=1e-3)
    ap.add_argument("--layerwise-windows", type=int, default=1024,
                    help="training windows whose teacher hidden states are held in memory for --layerwise")
    ap.add_argument("--json", default=None)
    a = ap.parse_args()
    torch.manual_seed(0)
    torch.set_num_threads(a.threads)
    teacher, tok = load_torch(resolve("minilm-l6"))
    teacher.eval()
    student = copy.deepcopy(teacher)
    lins = encoder_linears(student)
    ids, mask = windows(tok, load_dataset("bbc-news", "train").texts, 128, a.windows == "all")
    t_init = time.perf_counter()
    if a.init == "magnitude":
        masks = {}
        with torch.no_grad():
            for n, lin in lins.items():
                masks[n] = mask_for(lin.weight.detach(), a.sparsity, "4x1")
                lin.weight.mul_(masks[n])
    else:
        from edgekit.compress.oneshot import oneshot_prune

        f = tokenize(tok, load_dataset("bbc-news", "train").texts[:128], max_length=128)
        cal = [(torch.from_numpy(f["input_ids"][i:i + 16]), torch.from_numpy(f["attention_mask"][i:i + 16]))
               for i in range(0, 128, 16)]
        masks = oneshot_prune(student, lins, a.sparsity, "4x1", cal, refit_weights=a.init == "wanda-ls")
    if a.layerwise:
        from edgekit.compress.oneshot import reconstruct_layers

        pick = torch.randperm(len(ids), generator=torch.Generator().manual_seed(1))[: a.layerwise_windows]
        with torch.inference_mode():
            th = [torch.cat(x) for x in zip(*[
                teacher.encoder(input_ids=ids[pick[i:i + 64]], attention_mask=mask[pick[i:i + 64]],
                                output_hidden_states=True).hidden_states for i in range(0, len(pick), 64)])]
        th = [x.clone() for x in th]  # inference tensors -> ordinary ones
        layers = list(student.encoder.encoder.layer)
        wmasks = [{lins[n]: masks[n] for n in lins if n.startswith(f"layers.{i}.")} for i in range(len(layers))]
        reconstruct_layers(encoder(student), th[0], th[1:], mask[pick], wmasks, a.layerwise, lr=a.layerwise_lr,
                           batch=a.batch, progress=lambda s: print(s, flush=True))
        del th
    t_init = time.perf_counter() - t_init
    hf_s, hf_t = student.encoder, teacher.encoder
    if a.no_dropout:
        for m in student.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
    val = load_dataset("bbc-news", "validation").texts
    fv = tokenize(tok, val, max_length=128)
    vids, vmask = torch.from_numpy(fv["input_ids"]), torch.from_numpy(fv["attention_mask"])
    with torch.inference_mode():
        t_val = torch.cat([teacher(vids[i:i + 64], vmask[i:i + 64]) for i in range(0, len(vids), 64)])
        # per-layer teacher variance over real tokens, for the normalised hidden loss
        h = hf_t(input_ids=ids[:64], attention_mask=mask[:64], output_hidden_states=True).hidden_states
        m64 = mask[:64].bool()
        t_var = [float(x[m64].var()) for x in h]

    def evaluate(step: int, loss: float, t0: float) -> None:
        student.eval()
        with torch.inference_mode():
            s = torch.cat([student(vids[i:i + 64], vmask[i:i + 64]) for i in range(0, len(vids), 64)])
        cos = float(F.cosine_similarity(s, t_val, dim=-1).mean())
        student.train()
        row = {"step": step, "val_cosine": round(cos, 4), "train_loss": round(loss, 4), "lr": a.lr,
               "loss": a.loss, "windows": a.windows, "dropout": not a.no_dropout, "train_examples": len(ids),
               "sparsity": a.sparsity, "init": a.init, "layerwise": a.layerwise,
               "init_seconds": round(t_init, 1), "seconds": round(time.perf_counter() - t0, 1)}
        print(json.dumps(row), flush=True)
        if a.json:
            with open(a.json, "a") as fh:
                fh.write(json.dumps(row) + "\n")

    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.05, 1 - s / max(a.steps, 1)))
    gen = torch.Generator().manual_seed(0)
    order: list[int] = []
    t0 = time.perf_counter()
    student.train()
    evaluate(0, float("nan"), t0)
    run_loss = 0.0
    for step in range(1, a.steps + 1):
        if len(order) < a.batch:
            order += torch.randperm(len(ids), generator=gen).tolist()
        idx = torch.tensor(order[: a.batch])
        del order[: a.batch]
        bi, bm = ids[idx], mask[idx]
        with torch.no_grad():
            th = hf_t(input_ids=bi, attention_mask=bm, output_hidden_states=True).hidden_states
        sh = hf_s(input_ids=bi, attention_mask=bm, output_hidden_states=True).hidden_states
        loss = 1 - F.cosine_similarity(mean_pool(sh[-1], bm), mean_pool(th[-1], bm), dim=-1).mean()
        if a.loss == "tokens":
            real = bm.bool()
            loss = loss + (1 - F.cosine_similarity(sh[-1][real], th[-1][real], dim=-1)).mean()
            loss = loss + sum(((s_[real] - t_[real]) ** 2).mean() / v for s_, t_, v in zip(sh, th, t_var)) / len(sh)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for n, lin in lins.items():
                lin.weight.mul_(masks[n])
        run_loss = 0.9 * run_loss + 0.1 * loss.item() if step > 1 else loss.item()
        if step % a.eval_every == 0 or step == a.steps:
            evaluate(step, run_loss, t0)


if __name__ == "__main__":
    main()
