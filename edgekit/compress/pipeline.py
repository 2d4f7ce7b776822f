"""``compress()``: run a recipe on a trained model and write an artifact with report.json.

One training loop serves every stage: prune (gradual, cubic) under distillation, then fixed-mask
fine-tuning, then int8 (calibrate, QAT under the same losses). Stages are looked up in a registry
(config type -> handler). Checkpoints (safetensors + JSON, never pickles) go to ``OUT.ckpt/`` every
``checkpoint_every`` steps; ``resume=True`` continues from the last one. Ctrl-C leaves the checkpoint
and no artifact (the artifact is written to a temporary folder and renamed only at the end).
"""
from __future__ import annotations

import copy
import json
import math
import shutil
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from edgekit.data import calibration_texts, load_dataset, tokenize, tokenize_windows
from edgekit.errors import InputError
from edgekit.status import say

from . import distributed as D
from . import quantize as Q
from .config import DistillConfig, PruneConfig, QuantizeConfig, Recipe, load_recipe, resolve_weight_bits
from .distill import Distiller, freeze_embeddings
from .finetune import seed_everything
from .prune import LINEAR_NAMES, STRUCTURED, Pruner, cubic_sparsity, encoder_linears, total_sparsity


# --------------------------------------------------------------------------------------------- state
def replace_tokens(ids: torch.Tensor, text: torch.Tensor, pool: torch.Tensor, fraction: float,
                   gen: torch.Generator) -> torch.Tensor:
    """A copy of ``ids`` with each text token (``text`` True) replaced, with probability ``fraction``, by a token
    drawn uniformly from ``pool`` (the training text's tokens, so by their frequency). Padding and special tokens
    stay. Draws from ``gen`` only, so a run stays seeded and resumable."""
    pick = (torch.rand(ids.shape, generator=gen) < fraction) & text
    out = ids.clone()
    out[pick] = pool[torch.randint(len(pool), (int(pick.sum()),), generator=gen)]
    return out


class Run:
    """Everything the stage handlers share."""

    def __init__(self, recipe: Recipe, teacher, student, tok, task: str, data: str, max_steps: int | None,
                 ckpt: Path, progress: bool):
        self.dist = D.current()  # rank and world size under torchrun; Dist() alone
        D.check_batch(recipe.batch, self.dist)
        self.recipe, self.teacher, self.student, self.tok, self.task = recipe, teacher, student, tok, task
        self.data, self.max_steps, self.ckpt, self.progress = data, max_steps, ckpt, progress
        train = load_dataset(data, "train")
        feeds, source = tokenize_windows(tok, train.texts, recipe.max_length, recipe.train_windows)
        self.ids, self.mask = torch.from_numpy(feeds["input_ids"]), torch.from_numpy(feeds["attention_mask"])
        self.labels = torch.tensor(train.labels)[torch.from_numpy(source)]  # a window keeps its article's label
        # text tokens (not padding, not [CLS] / [SEP] / other specials): what augment_tokens replaces and draws from
        self.text = self.pool = None
        if recipe.augment_tokens > 0:
            self.text = (self.mask > 0) & ~torch.isin(self.ids, torch.tensor(sorted(set(tok.all_special_ids))))
            self.pool = self.ids[self.text]
        self.gen = torch.Generator().manual_seed(recipe.seed)
        self.order: list[int] = []
        self.global_step = 0
        self.pruner: Pruner | None = None
        self.fq: dict[str, Q.FakeQuantLinear] = {}
        self.weight_bits: int | None = None  # resolved by the quantize stage
        self.stage_reports: list[dict] = []
        self.resume_state: dict | None = None
        dcfg = recipe.stage("distill") or DistillConfig(logits_weight=0, hidden_weight=0, relation_weight=0,
                                                         label_weight=1.0)
        self.distiller = Distiller(teacher, student, dcfg, task)
        if dcfg.freeze_embeddings:
            freeze_embeddings(student)
        if self.dist.active:
            # dropout: each shard draws its own masks, as the rows of one batch do in a single process
            torch.manual_seed(recipe.seed + self.dist.rank)

    def batch(self):
        """The next GLOBAL batch (the same on every rank; ``train`` shards it under torchrun)."""
        if len(self.order) < self.recipe.batch:
            self.order += torch.randperm(len(self.labels), generator=self.gen).tolist()
        idx = torch.tensor(self.order[: self.recipe.batch])
        del self.order[: self.recipe.batch]
        ids = self.ids[idx]
        if self.pool is not None:
            ids = replace_tokens(ids, self.text[idx], self.pool, self.recipe.augment_tokens, self.gen)
        return ids, self.mask[idx], self.labels[idx]

    def steps(self, n: int) -> int:
        return n if self.max_steps is None else min(n, self.max_steps)

    def train(self, steps: int, lr: float, desc: str, on_step: Callable[[int], None] | None = None,
              start: int = 0) -> None:
        """``steps`` optimiser steps on the distillation loss. Under torchrun each rank computes the loss
        of its shard of the global batch through DDP, which averages the gradients during backward
        (``edgekit.compress.distributed`` says why that equals the single-process update)."""
        from tqdm.auto import tqdm

        params = [p for p in self.student.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.05, 1 - s / max(steps, 1)))
        self.student.train()
        ddp = self._data_parallel() if self.dist.active else None
        checked = dict(self.pruner.masks) if self.pruner else {}
        with tqdm(total=steps, initial=start, desc=desc, disable=not self.progress, unit="step") as bar:
            for step in range(start, steps):
                if on_step:
                    on_step(step)
                    checked = self._check_masks(checked)
                ids, mask, labels = self.batch()
                self.distiller.step = self.global_step
                if ddp is None:
                    loss, parts = self.distiller.loss(ids, mask, labels)
                else:
                    tokens = float(mask.sum()) / self.dist.world
                    loss, parts = ddp(*D.shard((ids, mask, labels), self.dist), tokens)
                loss.backward()
                if self.pruner:
                    self.pruner.accumulate()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                if self.pruner:
                    self.pruner.apply()
                self.global_step += 1
                bar.set_postfix(loss=f"{loss.item():.4f}")
                bar.update()
                if (step + 1) % self.recipe.checkpoint_every == 0 and step + 1 < steps:
                    self.save_checkpoint(desc, step + 1)
        if ddp is not None:
            D.check_identical(self._synced_state(), f"student after {desc}", self.dist)
        self.student.eval()

    # ---- data parallel (torchrun): rank 0 decides what is not derived from the synced weights
    def _data_parallel(self):
        if self.fq:  # every rank calibrated on the same texts; adopt rank 0's so they cannot drift
            qp = D.broadcast({n: (m.x_scale, m.x_zp) for n, m in self.fq.items()}, self.dist)
            for n, (s, z) in qp.items():
                self.fq[n].set_qparams(s, z)
        if self.pruner:  # hardware-aware allocations come from per-rank timings
            self.pruner.allocation = D.broadcast(self.pruner.allocation, self.dist)
        return D.wrap(self.distiller, self.dist)

    def _check_masks(self, checked: dict) -> dict:
        """Verify masks that changed since ``checked`` are identical on every rank."""
        if not (self.dist.active and self.pruner):
            return checked
        if any(m is not checked.get(n) for n, m in self.pruner.masks.items()):
            D.check_identical(self.pruner.masks, "pruning masks", self.dist)
            checked = dict(self.pruner.masks)
        return checked

    def _synced_state(self) -> dict:
        state = {f"weight.{k}": v for k, v in self.student.state_dict().items()}
        state.update({f"mask.{n}": m for n, m in (self.pruner.masks if self.pruner else {}).items()})
        state.update({f"qparams.{n}": (m.x_scale, m.x_zp) for n, m in self.fq.items()})
        return state

    # ---- checkpoints: safetensors for tensors, JSON for the rest
    def save_checkpoint(self, stage: str, step: int) -> None:
        from safetensors.torch import save_file

        if not self.dist.is_main:  # every rank holds the same state; one writes it
            return
        tmp = self.ckpt.with_name(self.ckpt.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        state = {k: v.detach().clone().contiguous() for k, v in self.student.state_dict().items()}
        if self.pruner:
            state.update({f"__mask__.{n}": m.contiguous() for n, m in self.pruner.masks.items()})
        save_file(state, str(tmp / "student.safetensors"))
        (tmp / "state.json").write_text(json.dumps({
            "stage": stage, "step": step, "global_step": self.global_step, "order": self.order,
            "gen": self.gen.get_state().tolist(), "stage_reports": self.stage_reports,
            "qparams": {n: [m.x_scale, m.x_zp] for n, m in self.fq.items()}, "weight_bits": self.weight_bits}))
        shutil.rmtree(self.ckpt, ignore_errors=True)
        tmp.rename(self.ckpt)

    def load_checkpoint(self) -> dict | None:
        from safetensors.torch import load_file

        if not (self.ckpt / "state.json").is_file():
            return None
        st = json.loads((self.ckpt / "state.json").read_text())
        tensors = load_file(str(self.ckpt / "student.safetensors"))
        masks = {k[len("__mask__."):]: v for k, v in tensors.items() if k.startswith("__mask__.")}
        self.student.load_state_dict({k: v for k, v in tensors.items() if not k.startswith("__mask__.")}, strict=False)
        self.order, self.global_step, self.stage_reports = st["order"], st["global_step"], st["stage_reports"]
        self.gen.set_state(torch.tensor(st["gen"], dtype=torch.uint8))
        st["masks"] = masks
        return st


# --------------------------------------------------------------------------------------------- evaluation
@torch.inference_mode()
def _outputs(wrapper, tok, texts, max_length: int, batch: int = 32) -> np.ndarray:
    wrapper.eval()
    outs = []
    for i in range(0, len(texts), batch):
        f = tokenize(tok, texts[i : i + batch], max_length=max_length, pad_to_max=False)
        outs.append(wrapper(torch.from_numpy(f["input_ids"]), torch.from_numpy(f["attention_mask"])).float().numpy())
    return np.concatenate(outs)


def evaluate_model(wrapper, teacher_out: np.ndarray | None, tok, task: str, data: str, max_length: int,
                   probe: bool = False) -> dict:
    """Test accuracy (classifier) or cosine to teacher (+ linear probe when ``probe``)."""
    from edgekit.evaluate import linear_probe, mean_cosine

    if not D.current().is_main:  # under torchrun only rank 0 evaluates
        return {}, None
    test = load_dataset(data, "test")
    out = _outputs(wrapper, tok, test.texts, max_length)
    res: dict = {}
    if task == "text-classification":
        res["accuracy"] = float((out.argmax(1) == np.asarray(test.labels)).mean())
        if teacher_out is not None:
            res["agreement_with_teacher"] = float((out.argmax(1) == teacher_out.argmax(1)).mean())
    else:
        if teacher_out is not None:
            res["embedding_cosine"] = mean_cosine(out, teacher_out)
        if probe:
            tr, va = load_dataset(data, "train"), load_dataset(data, "validation")
            acc, _ = linear_probe(_outputs(wrapper, tok, tr.texts, max_length), np.asarray(tr.labels),
                                  _outputs(wrapper, tok, va.texts, max_length), np.asarray(va.labels),
                                  out, np.asarray(test.labels))
            res["accuracy"] = acc
    return res, out


# --------------------------------------------------------------------------------------------- stages
def run_prune(run: Run, cfg: PruneConfig) -> dict:
    from .distill import _bert

    linears = encoder_linears(run.student)
    heads = _bert(run.student).config.num_attention_heads
    allocation = None
    try:
        if cfg.scope == "hardware-aware":
            from .hardware import allocate

            qcfg = run.recipe.stage("quantize")  # time the kernels the quantized model will run on
            bits = resolve_weight_bits(qcfg.weight_bits) if qcfg is not None else 8
            allocation = allocate(linears, cfg.sparsity, cfg.target_speedup, bits)
        elif cfg.scope == "global":
            allocation = _global_allocation(linears, cfg.sparsity, cfg.pattern, heads, cfg.head_sparsity)
        elif cfg.kind_sparsity or cfg.layer_sparsity:
            allocation = _kind_allocation(linears, cfg.sparsity, cfg.kind_sparsity or {}, cfg.layer_sparsity or {})
        run.pruner = Pruner(linears, cfg.pattern, cfg.criterion, allocation, heads, cfg.head_sparsity)
    except ValueError as exc:
        raise InputError(f"prune.pattern {cfg.pattern!r} does not fit this model: {exc}") from None
    total = run.steps(cfg.steps)
    ramp = max(1, int(cfg.ramp * total))
    start = 0
    oneshot = {}
    if run.resume_state and run.resume_state["stage"] == "prune":
        start = run.resume_state["step"]
        run.pruner.masks = run.resume_state["masks"] or run.pruner.masks
    elif cfg.oneshot:
        oneshot = _oneshot(run, cfg, linears, allocation)

    def on_step(step: int) -> None:
        if step % cfg.update_every == 0 or step == ramp:
            run.pruner.update(cubic_sparsity(min(step, ramp), ramp, 1.0), cfg.sparsity)

    # one-shot masks are final already: fixed-mask distillation throughout
    run.train(total, cfg.lr, "prune", None if cfg.oneshot else on_step, start)
    if cfg.oneshot:
        run.pruner.apply()
    else:
        run.pruner.update(1.0, cfg.sparsity)
    sp = run.pruner.sparsity()
    out = {"sparsity": total_sparsity(linears), "layers": sp, "steps": total, **oneshot}
    if cfg.pattern in STRUCTURED:  # {"heads": {"kept": [per layer], "of": n}, "neurons": ...}
        out["kept"] = run.pruner.kept()
    return out


def _oneshot(run: Run, cfg: PruneConfig, linears, allocation) -> dict:
    """Prune to the final masks before training (edgekit.compress.oneshot) and hand them to the pruner."""
    from tqdm.auto import tqdm

    from .oneshot import GROUPS, oneshot_prune

    n = min(cfg.oneshot_samples, len(run.ids))
    batches = [(run.ids[i:i + 16], run.mask[i:i + 16]) for i in range(0, n, 16)]  # the first n training texts
    t0 = time.perf_counter()
    layers = {name.split(".")[1] for name in linears}
    with tqdm(total=len(GROUPS) * len(layers), desc="one-shot prune", disable=not run.progress, unit="group") as bar:
        masks = oneshot_prune(run.student, linears, allocation or cfg.sparsity, cfg.pattern, batches,
                              progress=lambda _msg: bar.update(1))
    run.pruner.masks.update(masks)
    run.pruner.apply()
    out = {"samples": n, "seconds": round(time.perf_counter() - t0, 1), "sparsity": total_sparsity(linears)}
    if cfg.layerwise_steps:
        out["layerwise"] = _layerwise(run, cfg, linears, masks)
        run.pruner.apply()
    return {"oneshot": out}


def _layerwise(run: Run, cfg: PruneConfig, linears, masks) -> dict:
    """Layer-wise reconstruction (edgekit.compress.oneshot.reconstruct_layers) on the teacher's hidden states
    of ``layerwise_samples`` training texts; student layer i learns teacher layer layer_map[i]'s output."""
    from tqdm.auto import tqdm

    from .distill import _bert
    from .oneshot import reconstruct_layers

    t0 = time.perf_counter()
    steps = run.steps(cfg.layerwise_steps)
    n = min(cfg.layerwise_samples, len(run.ids))
    pick = torch.randperm(len(run.ids), generator=torch.Generator().manual_seed(run.recipe.seed))[:n]
    ids, mask = run.ids[pick], run.mask[pick]
    s_bert, t_bert = _bert(run.student), _bert(run.teacher)
    was_training = run.student.training
    run.student.eval()
    with torch.inference_mode():
        hid = [torch.cat(h) for h in zip(*[
            t_bert(input_ids=ids[i:i + 64], attention_mask=mask[i:i + 64], output_hidden_states=True).hidden_states
            for i in range(0, n, 64)])]
        student_in = torch.cat([s_bert.embeddings(input_ids=ids[i:i + 64]) for i in range(0, n, 64)])
    run.student.train(was_training)
    targets = [hid[j + 1].clone() for j in run.distiller.layer_map]  # inference tensors -> ordinary ones
    del hid
    layers = list(s_bert.encoder.layer)
    wmasks = [{linears[k]: masks[k] for k in masks if k.startswith(f"layers.{i}.")} for i in range(len(layers))]
    with tqdm(total=len(layers), desc="layer-wise reconstruction", disable=not run.progress, unit="layer") as bar:
        losses = reconstruct_layers(layers, student_in.clone(), targets, mask, wmasks, steps,
                                    lr=cfg.layerwise_lr, batch=run.recipe.batch, seed=run.recipe.seed,
                                    progress=lambda _msg: bar.update(1))
    return {"samples": n, "steps": steps, "final_loss": [round(x, 4) for x in losses],
            "seconds": round(time.perf_counter() - t0, 1)}


def _kind_allocation(linears, sparsity: float, kinds: dict[str, float],
                     layers: dict[int, float] | None = None) -> dict[str, float]:
    """Per-layer sparsities with the Linears of the encoder layers in ``layers`` and then the kinds in ``kinds``
    fixed (a layer's value wins over its kinds'), the others sharing one value chosen so that the zeros over all
    encoder Linears come to ``sparsity``."""
    layers = layers or {}
    size = {n: m.weight.numel() for n, m in linears.items()}
    kind = {n: n.rsplit(".", 1)[1] for n in linears}
    index = {n: int(n.split(".")[1]) for n in linears}  # names are layers.<i>.<kind>
    depth = max(index.values()) + 1
    if any(i >= depth for i in layers):
        raise InputError(f"prune.layer_sparsity names layer(s) {sorted(i for i in layers if i >= depth)}; "
                         f"this model's encoder layers are 0..{depth - 1}")
    fixed_of = {n: layers[index[n]] if index[n] in layers else kinds.get(kind[n]) for n in linears}
    free = sum(size[n] for n in linears if fixed_of[n] is None)
    what = " and ".join(f"prune.{k} {v}" for k, v in (("layer_sparsity", layers), ("kind_sparsity", kinds)) if v)
    if not free:
        raise InputError(f"{what} fix every encoder Linear; leave some free to take the rest of sparsity {sparsity}")
    fixed = sum(fixed_of[n] * size[n] for n in linears if fixed_of[n] is not None)
    rest = (sparsity * sum(size.values()) - fixed) / free
    if not 0.0 <= rest < 1.0:
        raise InputError(f"{what} leave {rest:.3f} for the other Linears to reach sparsity {sparsity}; it must be "
                         f"in [0, 1): lower or raise the listed values")
    return {n: rest if fixed_of[n] is None else fixed_of[n] for n in linears}


def _global_allocation(linears, sparsity: float, pattern: str, heads: int | None = None,
                       head_sparsity: float | None = None) -> dict[str, float]:
    """One magnitude threshold across all layers (per-block scores for 4x1; per head / neuron for the
    structured patterns, one threshold per kind), turned into per-layer (per-group) sparsities."""
    from .prune import group_scores, structured_groups, unit_scores

    if pattern in STRUCTURED:
        groups = structured_groups(linears, pattern, heads)
        weights = {n: m.weight.detach() for n, m in linears.items()}
        g_scores = {g.name: group_scores(g, weights) for g in groups}
        alloc = {}
        for kind in ("head", "neuron"):
            mine = [g for g in groups if g.kind == kind]
            if not mine:
                continue
            target = head_sparsity if kind == "head" and head_sparsity is not None else sparsity
            allv = torch.cat([g_scores[g.name] for g in mine])
            thr = allv.kthvalue(max(1, int(target * allv.numel()))).values if target > 0 else -float("inf")
            alloc.update({g.name: float((g_scores[g.name] <= thr).double().mean()) for g in mine})
        return alloc
    scores = {n: unit_scores(m.weight.detach(), pattern) for n, m in linears.items()}
    allv = torch.cat([s.flatten() for s in scores.values()])
    thr = allv.kthvalue(max(1, int(sparsity * allv.numel()))).values
    return {n: float((s <= thr).float().mean()) for n, s in scores.items()}


def run_quantize(run: Run, cfg: QuantizeConfig) -> dict:
    linears = encoder_linears(run.student)
    missing = [n for n in cfg.fp32_layers if n not in linears]
    if missing:
        raise InputError(f"quantize.fp32_layers: {', '.join(missing)} not in this model (layers 0.."
                         f"{max(int(n.split('.')[1]) for n in linears)})")
    resumed = run.resume_state and run.resume_state["stage"] == "qat"
    # "auto" depends on the CPU: a resumed run keeps the bits it trained with, and under torchrun rank 0 decides
    bits = (run.resume_state.get("weight_bits") if resumed else None) or resolve_weight_bits(cfg.weight_bits)
    run.weight_bits = bits = D.broadcast(bits, run.dist) if run.dist.active else bits
    run.fq = Q.insert_fake_quant(run.student, skip=tuple(cfg.fp32_layers), weight_bits=bits)
    out = {"calibration": cfg.calibration, "samples": cfg.calibration_samples, "weight_bits": bits}
    if resumed:
        saved = run.resume_state["qparams"]
        chosen = [n for n in run.fq if n not in saved]  # by the sensitivity pass before the stop
        _keep_fp32(run, chosen)
        if cfg.accuracy_budget is not None:  # its measurements are not in the checkpoint
            out["sensitivity"] = {"keep_fp32": chosen, "resumed": True}
        for n, (s, z) in saved.items():
            run.fq[n].set_qparams(s, z)
            run.fq[n].mode = "quant"
    else:
        texts = calibration_texts(cfg.calibration_samples, run.data, run.recipe.seed)
        with torch.inference_mode():
            _outputs(run.student, run.tok, texts, run.recipe.max_length, batch=16)
        Q.finish_calibration(run.fq, cfg.calibration, cfg.percentile)
        if cfg.accuracy_budget is not None:
            out["sensitivity"] = _sensitivity(run, cfg)
            _keep_fp32(run, out["sensitivity"]["keep_fp32"])
    out["fp32_layers"] = sorted(n for n in linears if n not in run.fq)
    steps = run.steps(cfg.qat_steps)
    if steps > 0:
        out["ptq"] = evaluate_model(run.student, run.teacher_out, run.tok, run.task, run.data, run.recipe.max_length)[0]
        start = run.resume_state["step"] if resumed else 0
        run.train(steps, cfg.lr, "qat", None, start)
    out["qat_steps"] = steps
    return out


def _sensitivity(run: Run, cfg: QuantizeConfig) -> dict:
    """The sensitivity pass (edgekit.compress.sensitivity) on rank 0; every rank adopts its choice."""
    from . import sensitivity as S

    dist = getattr(run, "dist", None)
    rec = None
    if dist is None or dist.is_main:
        probe = S.ValidationProbe(run.student, run.teacher, run.tok, run.task, run.data, run.recipe.max_length,
                                  cfg.sensitivity_samples)
        rec = S.sensitivity_pass(run.fq, probe, cfg.accuracy_budget)
    if dist is not None and dist.active:
        from . import distributed as D

        rec = D.broadcast(rec, dist)
    return rec


def _keep_fp32(run: Run, names) -> None:
    Q.remove_fake_quant(run.student, only=set(names))
    for n in names:
        del run.fq[n]


def run_distill(run: Run, cfg: DistillConfig) -> dict:
    d = run.distiller
    return {"losses": {k: v for k, v in cfg.model_dump().items() if k.endswith("weight")},
            "relation_teacher_layer": d.t_rel, "student_layers": cfg.student_layers, "layer_map": d.layer_map}


STAGE_HANDLERS: dict[type, Callable[[Run, object], dict]] = {
    PruneConfig: run_prune,
    QuantizeConfig: run_quantize,
    DistillConfig: run_distill,
}


# --------------------------------------------------------------------------------------------- driver
def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def compress(model, out_dir, recipe=None, data: str = "bbc-news", max_steps: int | None = None, seed: int = 0,
             resume: bool = False, print_recipe: bool = False, progress: bool = True) -> dict | None:
    """Compress MODEL (zoo name or HF folder) with a recipe; write an artifact to ``out_dir``.

    Under ``torchrun --nproc_per_node N`` (WORLD_SIZE > 1) the ranks join a gloo group and train
    data-parallel on shards of the recipe's global batch (``edgekit.compress.distributed``). Rank 0
    evaluates and writes checkpoints, the artifact and the report, and returns the report; the other
    ranks return None once rank 0 has finished. The group is destroyed before returning.

    >>> report = compress("minilm-l6-bbc", "out/bbc")                          # doctest: +SKIP
    >>> report["compressed"]["accuracy"], report["sparsity"]["total"]          # doctest: +SKIP
    """
    group = D.setup() if not print_recipe else D.Dist()
    try:
        report = _compress(model, out_dir, recipe, data, max_steps, seed, resume, print_recipe,
                           progress and group.is_main)
        D.barrier(group)  # the others return once the artifact is complete
        return report
    finally:
        D.close(group)


def _compress(model, out_dir, recipe, data: str, max_steps: int | None, seed: int, resume: bool,
              print_recipe: bool, progress: bool) -> dict | None:
    """The whole job on this process; under torchrun ranks other than 0 stop after training (None)."""
    import yaml

    from edgekit.export import export_artifact
    from edgekit.zoo import load_torch, resolve

    rec = load_recipe(recipe)
    if seed:
        rec = rec.model_copy(update={"seed": seed})
    if print_recipe:
        print(yaml.safe_dump(rec.to_dict(), sort_keys=False).rstrip())
        qcfg = rec.stage("quantize")
        if qcfg is not None and qcfg.weight_bits == "auto":
            print(f"# quantize.weight_bits auto resolves to {resolve_weight_bits('auto')} on this CPU")
        return {}
    if out_dir is None:
        raise InputError("compress needs an output folder")
    ref = resolve(model)
    if ref.kind != "hf":
        raise InputError(f"{model} is an artifact; compress takes a zoo name or a Hugging Face model folder")
    out = Path(out_dir).absolute()
    ckpt = out.with_name(out.name + ".ckpt")
    if not resume:
        shutil.rmtree(ckpt, ignore_errors=True)
    t0 = time.time()
    seed_everything(rec.seed)
    say(f"loading {ref.name} and tokenizing the {data} training texts", progress)  # issue 28: no silent start
    teacher, tok = load_torch(ref)
    teacher.eval()
    student = _make_student(teacher, rec)
    run = Run(rec, teacher, student, tok, ref.task, data, max_steps, ckpt, progress)
    if resume:
        run.resume_state = run.load_checkpoint()
        if run.resume_state is None:
            raise InputError(f"--resume: no checkpoint in {ckpt}")
    probe = ref.task == "feature-extraction"
    say(f"scoring the original model on the {data} test split" + (" (and its linear probe)" if probe else "")
        + "; training starts after that", progress)  # issue 28: the longest wait before the first bar
    baseline, run.teacher_out = evaluate_model(teacher, None, tok, ref.task, data, rec.max_length, probe=probe)
    done = {r["stage"] for r in run.stage_reports}
    for cfg in rec.stages:
        if cfg.type in done:
            continue
        if run.resume_state and cfg.type == "quantize" and run.resume_state["stage"] == "prune":
            run.resume_state = None
        st = time.time()
        info = STAGE_HANDLERS[type(cfg)](run, cfg)
        if cfg.type != "distill":
            info.update(evaluate_model(student, run.teacher_out, tok, ref.task, data, rec.max_length)[0])
        info.update(stage=cfg.type, seconds=round(time.time() - st, 1))
        run.stage_reports.append(info)
        run.resume_state = None
        run.save_checkpoint(cfg.type + "-done", 0)
    if run.dist.active:  # final masks (set after the last training step) and qparams must agree too
        D.check_identical(run._synced_state(), "final student", run.dist)
    if not run.dist.is_main:
        return None
    final, _ = evaluate_model(student, run.teacher_out, tok, ref.task, data, rec.max_length, probe=probe)
    qstate = Q.quant_state(run.fq) if run.fq else None
    Q.remove_fake_quant(student)
    linears = encoder_linears(student)
    sparsity = {"total": total_sparsity(linears), "pattern": rec.stage("prune").pattern if rec.stage("prune") else None,
                "layers": {n: float((m.weight == 0).float().mean()) for n, m in linears.items()}}
    labels = None
    if ref.task == "text-classification":
        id2label = student.model.config.id2label
        labels = [id2label[i] for i in sorted(id2label)]
    report = {
        "task": ref.task, "data": data, "recipe": rec.name, "model": ref.name,
        "baseline": baseline, "compressed": final, "sparsity": sparsity,
        "precision": "int8" if qstate else "fp32", "weight_bits": qstate["weight_bits"] if qstate else None,
        "stages": run.stage_reports, "max_steps": max_steps,
    }
    dcfg = rec.stage("distill")
    report["student_layers"] = dcfg.student_layers if dcfg and dcfg.student_layers else None
    hf_names = {v: k for k, v in LINEAR_NAMES.items()}
    # the recipe's fp32_layers plus those the sensitivity pass kept: every Linear without qparams
    fp32_hf = [_hf_name(student, n, hf_names) for n in linears if qstate and n not in qstate["layers"]]
    cal = tokenize(tok, calibration_texts(64, data, rec.seed), max_length=rec.max_length) if qstate else None

    def extra(tmp: Path) -> dict[str, str]:
        from .native_format import write_native

        if qstate:
            (tmp / "torch" / "quant.json").write_text(json.dumps(qstate, indent=2))
        write_native(student, ref.task, qstate, tmp / "native", labels)
        return {"native": "native"}

    # ONNX Runtime gets the activation qparams QAT trained with (its own static calibration of the
    # FFN-output input cost 1.6 points on minilm-l6-bbc).
    act = {_hf_name(student, n, hf_names): (v["x_scale"], v["x_zp"]) for n, v in qstate["layers"].items()} if qstate else None
    art = export_artifact(student, tok, out, task=ref.task, model_name=f"{ref.name}+{rec.name}",
                          formats=("onnx", "openvino"), labels=labels, int8_calibration=cal, fp32_layers=fp32_hf,
                          act_qparams=act,
                          recipe=rec.to_dict(), extra_files=extra, progress=progress)
    report["runtimes"] = _runtime_scores(art, ref.task, data, run.teacher_out, tok)
    report["size_mb"] = {fmt: round(_size_mb(art.root / p if (art.root / p).is_dir() else (art.root / p).parent), 2)
                         for fmt, p in art.manifest.formats.items()}
    report["seconds"] = round(time.time() - t0, 1)
    _write_reports(art.root, report)
    shutil.rmtree(ckpt, ignore_errors=True)
    return report


def _make_student(teacher, rec: Recipe):
    """The teacher deep-copied; with ``distill.student_layers`` only those encoder layers are kept."""
    from .distill import drop_layers, num_layers

    student = copy.deepcopy(teacher)
    dcfg = rec.stage("distill")
    keep = dcfg.student_layers if dcfg else None
    if keep:
        n = num_layers(teacher)
        if keep[-1] >= n:
            raise InputError(f"distill.student_layers: {[i for i in keep if i >= n]} out of range; the teacher has "
                             f"{n} layers (allowed 0..{n - 1})")
        drop_layers(student, keep)
    return student


def _hf_name(student, native: str, hf_names: dict[str, str]) -> str:
    _, i, lin = native.split(".")
    prefix = next(n for n, _ in student.named_modules() if n.endswith("encoder.layer"))
    return f"{prefix}.{i}.{hf_names[lin]}"


def _runtime_scores(art, task: str, data: str, teacher_out, tok) -> dict:
    """Accuracy (or cosine to the teacher) of the exported model on each stock runtime and torch."""
    from edgekit.evaluate import mean_cosine, run_batched
    from edgekit.runtimes import load

    test = load_dataset(data, "test")
    scores = {}
    for rt in ("torch", "onnxruntime", "openvino"):
        s = load(art, rt)
        out = run_batched(s, tok, list(test.texts), progress=False)
        if task == "text-classification":
            scores[rt] = {"accuracy": float((out.argmax(1) == np.asarray(test.labels)).mean()), "precision": s.precision}
        else:
            scores[rt] = {"embedding_cosine": mean_cosine(out, teacher_out), "precision": s.precision}
    return scores


def _write_reports(root: Path, report: dict) -> None:
    """Add report.json/report.md/report.png to a finished artifact and re-hash its manifest (atomic replace)."""
    from edgekit.artifact import finalize_manifest, load_artifact
    from edgekit.plots import plot_compression

    (root / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (root / "report.md").write_text(report_markdown(report))
    plot_compression(report, root / "report.png")
    art = load_artifact(root, verify=False)
    finalize_manifest(root, art.manifest)


def report_markdown(r: dict) -> str:
    metric = "accuracy" if r["task"] == "text-classification" else "linear-probe accuracy"
    lines = [f"# edgekit compress report: {r['model']} ({r['recipe']})", "",
             f"task {r['task']}, data {r['data']} (test split), precision {r['precision']}"
             + (f" ({r['weight_bits']}-bit weights)" if r.get("weight_bits") else "") + f", {r['seconds']} s",
             "", "| stage | " + metric + " | embedding cosine | sparsity | seconds |",
             "|---|---|---|---|---|",
             f"| baseline (fp32) | {r['baseline'].get('accuracy', float('nan')):.4f} | 1 | 0 | |"]
    def num(x) -> str:  # 4 decimals; "-" where a stage has no such figure (e.g. no probe between stages)
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.4f}"

    for s in r["stages"]:
        if s["stage"] == "distill":
            continue
        lines.append(f"| {s['stage']} | {num(s.get('accuracy'))} | {num(s.get('embedding_cosine'))} | "
                     f"{s.get('sparsity', r['sparsity']['total']):.3f} | {s['seconds']} |")
    c = r["compressed"]
    lines.append(f"| **compressed** | **{num(c.get('accuracy'))}** | {num(c.get('embedding_cosine'))} | "
                 f"{r['sparsity']['total']:.3f} | |")
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
