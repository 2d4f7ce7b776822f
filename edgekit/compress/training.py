"""How the student trains: one loop for every stage, checkpoints, and data parallelism under ``torchrun``.

:class:`Run` holds what the stage handlers share (teacher, student, tokenised training windows, the
distillation objective, masks and fake-quant modules) and trains the student with :meth:`Run.train`.
Checkpoints (safetensors + JSON, never pickles) go to ``OUT.ckpt/`` every ``checkpoint_every`` steps and after
each stage; ``resume=True`` continues from the last one.

Data-parallel training (DistributedDataParallel, gloo on CPU):

``torchrun --nproc_per_node N -m edgekit compress ...`` starts N copies of the same command; each sees
``WORLD_SIZE=N`` and its ``RANK``. :func:`setup` joins them into one gloo process group, and the
training loop (``Run.train``) then runs the student's loss through :func:`wrap` (DDP), which averages
the gradients over the ranks during backward. Without torchrun (``WORLD_SIZE`` unset or 1) every
helper here is a no-op and nothing in the pipeline changes.

The rules that make N processes compute the single-process update for the same recipe:

- ``recipe.batch`` is the GLOBAL batch. Every rank draws the same global batch from the same seeded
  generator and keeps its own contiguous shard (:func:`shard`), so the batch must divide by N.
- DDP averages the shard gradients. For per-example means (logits KL, cross-entropy, embedding
  cosine) the mean of N equal-sized shard means is the global mean. The token means (hidden-state
  MSE, attention relations) divide by the number of real tokens, which differs between shards, so
  each rank passes ``tokens = global real tokens / N`` as their denominator (``Distiller.loss``):
  the average over ranks is then exactly the global-batch token mean.
- Everything derived from synced weights or gradients (magnitude or movement masks, clipping, AdamW)
  is then identical on every rank; :func:`check_identical` verifies it instead of trusting it.
  Decisions that are not derived from them (activation qparams, hardware-aware allocations that
  come from timings) are taken from rank 0 (:func:`broadcast`).
- Only rank 0 evaluates, writes checkpoints, the artifact and the report; the others return None.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from edgekit.data import tokenize_windows, training_rows
from edgekit.errors import InputError

from .distill import Distiller

#: the label of a distillation passage (no true label: cross-entropy's default ``ignore_index`` skips it)
UNLABELLED = -100

# Rank 0 evaluates and exports while the others wait in a collective; give it room before gloo's
# timeout turns a long export into a failure (a crashed rank is torn down by torchrun anyway).
TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class Dist:
    """This process's place in the group; ``Dist()`` is the single-process case."""

    rank: int = 0
    world: int = 1
    owned: bool = False  # this module created the group, so it destroys it

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_world() -> int:
    """WORLD_SIZE as torchrun set it (1 when not launched by torchrun)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        raise InputError(f"WORLD_SIZE must be an integer, got {os.environ['WORLD_SIZE']!r}") from None


def current() -> Dist:
    """The group already joined (by :func:`setup` or by the caller), else the single-process Dist."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size())
    return Dist()


def setup() -> Dist:
    """Join the torchrun group (gloo) when ``WORLD_SIZE > 1``; otherwise a no-op.

    >>> d = setup()            # under torchrun --nproc_per_node 2: Dist(rank=0|1, world=2, owned=True)
    >>> close(d)
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return current()
    if launched_world() <= 1:
        return Dist()
    if not (dist.is_available() and dist.is_gloo_available()):
        raise InputError("WORLD_SIZE > 1 but this torch build has no gloo backend for data-parallel training")
    dist.init_process_group("gloo", timeout=TIMEOUT)
    return Dist(dist.get_rank(), dist.get_world_size(), owned=True)


def close(d: Dist) -> None:
    """Destroy the group if :func:`setup` created it."""
    import torch.distributed as dist

    if d.owned and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.active:
        import torch.distributed as dist

        dist.barrier()


def check_batch(batch: int, d: Dist) -> None:
    if d.active and batch % d.world:
        raise InputError(f"recipe batch {batch} is the global batch and must divide by the number of processes "
                         f"({d.world}); use a batch that is a multiple of {d.world} or another --nproc_per_node")


def shard(global_batch: tuple[torch.Tensor, ...], d: Dist) -> tuple[torch.Tensor, ...]:
    """This rank's contiguous slice of every tensor of the global batch (dim 0)."""
    if not d.active:
        return global_batch
    n = global_batch[0].shape[0] // d.world
    return tuple(None if t is None else t[d.rank * n : (d.rank + 1) * n] for t in global_batch)


def broadcast(obj, d: Dist):
    """Rank 0's ``obj`` on every rank (any picklable value)."""
    if not d.active:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def fingerprint(named: dict) -> str:
    """sha256 over names and exact bytes (tensors) or reprs (anything else), in name order."""
    h = hashlib.sha256()
    for k in sorted(named):
        h.update(str(k).encode())
        v = named[k]
        if isinstance(v, torch.Tensor):
            t = v.detach().cpu().contiguous()
            h.update(str((t.dtype, tuple(t.shape))).encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
        else:
            h.update(repr(v).encode())
    return h.hexdigest()


def check_identical(named: dict, what: str, d: Dist) -> None:
    """Raise if ``named`` (tensors or plain values) is not bit-identical on every rank."""
    if not d.active:
        return
    import torch.distributed as dist

    digests: list[str | None] = [None] * d.world
    dist.all_gather_object(digests, fingerprint(named))
    if len(set(digests)) > 1:
        differ = [r for r, x in enumerate(digests) if x != digests[0]]
        raise RuntimeError(f"{what} differ between rank 0 and rank(s) {differ}: data-parallel training lost sync")


class _StudentLoss(nn.Module):
    """The distillation loss as one module whose only submodule is the student.

    ``forward_all`` calls the Hugging Face model inside the task wrapper directly (with hooks), so a
    DDP wrapper around the student itself would never see a forward. Wrapping this module instead
    puts the whole student forward inside ``DDP.forward``; the teacher is a plain attribute of the
    Distiller, not a submodule, so DDP neither broadcasts nor syncs it."""

    def __init__(self, distiller):
        super().__init__()
        self.student = distiller.student
        self.distiller = distiller

    def forward(self, ids, mask, labels, tokens, types=None):
        return self.distiller.loss(ids, mask, labels, tokens=tokens, types=types)


def wrap(distiller, d: Dist) -> nn.Module:
    """A DDP module computing ``(loss, parts)`` of the distiller for this rank's shard.

    Built once per training stage: DDP registers its gradient hooks on the parameters it sees at
    construction (QAT swaps Linears for FakeQuantLinears, keeping the same weights) and broadcasts
    rank 0's parameters and buffers, so every rank starts the stage from the same student.
    ``static_graph``: the same parameters take part in every step of a stage, but not all of them (a
    feature-extraction student's pooler is in no loss); DDP learns which from the first step instead
    of searching the autograd graph every step. The buffers (position ids) never change, so they are
    not re-broadcast before every forward."""
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(_StudentLoss(distiller), static_graph=True, forward_sync_buffers=False)


# --------------------------------------------------------------------------------------------- training
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
    """Everything the stage handlers share. ``objective``: the distillation losses every training stage
    minimises (:func:`edgekit.compress.stages.distill.objective`)."""

    def __init__(self, recipe, objective, teacher, student, tok, task: str, data: str, max_steps: int | None,
                 ckpt: Path, progress: bool, extra: list[str] | None = None, extra_use: str = "add",
                 extra_calibration: bool = False):
        self.dist = current()  # rank and world size under torchrun; Dist() alone
        check_batch(recipe.batch, self.dist)
        self.recipe, self.teacher, self.student, self.tok, self.task = recipe, teacher, student, tok, task
        self.data, self.max_steps, self.ckpt, self.progress = data, max_steps, ckpt, progress
        self.extra = list(extra or [])  # unlabelled distillation passages (edgekit.compress.extra_text)
        self.extra_calibration = extra_calibration and bool(self.extra)
        parts = []  # (feeds, labels) blocks
        if not (self.extra and extra_use == "replace"):
            # single texts (a window keeps its text's label), pairs (with segment ids) or words with per-token tags
            parts.append(training_rows(tok, data, task, recipe.max_length, recipe.train_windows))
        if self.extra:  # after the training split's rows: one-shot pruning calibrates on the first rows
            feeds, source = tokenize_windows(tok, self.extra, recipe.max_length, recipe.train_windows)
            shape = (len(source),) if task != "token-classification" else feeds["input_ids"].shape
            parts.append((feeds, np.full(shape, UNLABELLED, dtype=np.int64)))  # the teacher's outputs only
        width = max(f["input_ids"].shape[1] for f, _ in parts)
        pad = tok.pad_token_id or 0

        def cat(key, value=0):
            return torch.cat([torch.nn.functional.pad(torch.from_numpy(np.asarray(f[key]) if key in f else
                                                                       np.zeros_like(f["input_ids"])),
                                                      (0, width - f["input_ids"].shape[1]), value=value)
                              for f, _ in parts])

        self.ids, self.mask = cat("input_ids", pad), cat("attention_mask")
        self.types = cat("token_type_ids") if any("token_type_ids" in f for f, _ in parts) else None
        labels = [np.asarray(lab) for _, lab in parts]
        if task == "token-classification":
            labels = [np.pad(lab, ((0, 0), (0, width - lab.shape[1])), constant_values=UNLABELLED) for lab in labels]
        self.labels = torch.from_numpy(np.concatenate(labels).astype(np.int64))
        self.labelled_rows = 0 if self.extra and extra_use == "replace" else len(labels[0])  # the split's rows
        # text tokens (not padding, not [CLS] / [SEP] / other specials): what augment_tokens replaces and draws from
        self.text = self.pool = None
        if recipe.augment_tokens > 0:
            self.text = (self.mask > 0) & ~torch.isin(self.ids, torch.tensor(sorted(set(tok.all_special_ids))))
            self.pool = self.ids[self.text]
        self.gen = torch.Generator().manual_seed(recipe.seed)
        self.order: list[int] = []
        self.global_step = 0
        self.pruner = None  # edgekit.compress.prune.Pruner, set by the prune stage
        self.allocation_record: dict | None = None  # what the search scope measured and chose (report.json)
        self.fq: dict = {}  # name -> FakeQuantLinear, set by the quantize stage
        self.weight_bits: int | None = None  # resolved by the quantize stage
        self.stage_reports: list[dict] = []
        self.resume_state: dict | None = None
        self.teacher_out = None  # the teacher's test outputs: the reference of every score (rank 0 only)
        self.distiller = Distiller(teacher, student, objective, task)
        if self.dist.active:
            # dropout: each shard draws its own masks, as the rows of one batch do in a single process
            torch.manual_seed(recipe.seed + self.dist.rank)

    def calibration_feeds(self, n: int) -> dict:
        """``n`` int8 calibration rows as the task feeds them (:func:`edgekit.data.calibration_feeds`: single
        texts, pairs, pre-split words); single-text tasks take half of them from the distillation passages when
        the recipe's ``distill_data.calibration`` says so."""
        from edgekit.data import calibration_feeds, tokenize

        if self.extra_calibration and self.types is None and self.task != "token-classification":
            return tokenize(self.tok, self.calibration_texts(n), self.recipe.max_length)
        return calibration_feeds(self.tok, n, self.data, self.recipe.seed, self.recipe.max_length, self.task)

    def calibration_texts(self, n: int) -> list[str]:
        """``n`` texts for int8 calibration: a seeded draw from the training split, half of them replaced by
        distillation passages when the recipe's ``distill_data.calibration`` says so."""
        from edgekit.data import calibration_texts

        from .extra_text import calibration_mix

        train = calibration_texts(n, self.data, self.recipe.seed)
        return calibration_mix(train, self.extra if self.extra_calibration else None, n, self.recipe.seed)

    def resumed(self, desc: str) -> dict | None:
        """The checkpoint state when the run resumes inside training ``desc`` (``prune``, ``qat``), else None."""
        st = self.resume_state
        return st if st and st["stage"] == desc else None

    def batch(self):
        """The next GLOBAL batch (the same on every rank; ``train`` shards it under torchrun)."""
        if len(self.order) < self.recipe.batch:
            self.order += torch.randperm(len(self.labels), generator=self.gen).tolist()
        idx = torch.tensor(self.order[: self.recipe.batch])
        del self.order[: self.recipe.batch]
        ids = self.ids[idx]
        if self.pool is not None:
            ids = replace_tokens(ids, self.text[idx], self.pool, self.recipe.augment_tokens, self.gen)
        return ids, self.mask[idx], self.labels[idx], None if self.types is None else self.types[idx]

    def steps(self, n: int) -> int:
        return n if self.max_steps is None else min(n, self.max_steps)

    def train(self, steps: int, lr: float, desc: str, on_step: Callable[[int], None] | None = None,
              start: int = 0, warmup: int = 0) -> None:
        """``steps`` optimiser steps on the distillation loss: the learning rate rises linearly over ``warmup``
        steps, then decays linearly to 5% of ``lr``. Under torchrun each rank computes the loss of its shard of
        the global batch through DDP, which averages the gradients during backward (the module doc says why that
        equals the single-process update)."""
        from tqdm.auto import tqdm

        params = [p for p in self.student.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        # a resumed run continues the schedule where it stopped
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: lr_factor(start + s, steps, warmup))
        self.student.train()
        ddp = self._data_parallel() if self.dist.active else None
        checked = dict(self.pruner.masks) if self.pruner else {}
        with tqdm(total=steps, initial=start, desc=desc, disable=not self.progress, unit="step") as bar:
            for step in range(start, steps):
                if on_step:
                    on_step(step)
                    checked = self._check_masks(checked)
                ids, mask, labels, types = self.batch()
                self.distiller.step = self.global_step
                if ddp is None:
                    loss, parts = self.distiller.loss(ids, mask, labels, types=types)
                else:
                    tokens = float(mask.sum()) / self.dist.world
                    s_ids, s_mask, s_labels, s_types = shard((ids, mask, labels, types), self.dist)
                    loss, parts = ddp(s_ids, s_mask, s_labels, tokens, s_types)
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
            check_identical(self.synced_state(), f"student after {desc}", self.dist)
        self.student.eval()

    # ---- data parallel (torchrun): rank 0 decides what is not derived from the synced weights
    def _data_parallel(self):
        if self.fq:  # every rank calibrated on the same texts; adopt rank 0's so they cannot drift
            qp = broadcast({n: (m.x_scale, m.x_zp) for n, m in self.fq.items()}, self.dist)
            for n, (s, z) in qp.items():
                self.fq[n].set_qparams(s, z)
        if self.pruner:  # hardware-aware allocations come from per-rank timings
            self.pruner.allocation = broadcast(self.pruner.allocation, self.dist)
        return wrap(self.distiller, self.dist)

    def _check_masks(self, checked: dict) -> dict:
        """Verify masks that changed since ``checked`` are identical on every rank."""
        if not (self.dist.active and self.pruner):
            return checked
        if any(m is not checked.get(n) for n, m in self.pruner.masks.items()):
            check_identical(self.pruner.masks, "pruning masks", self.dist)
            checked = dict(self.pruner.masks)
        return checked

    def synced_state(self) -> dict:
        """What must be bit-identical on every rank: weights, masks and activation qparams."""
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
        state = {k: v.detach().clone().contiguous() for k, v in plain_state_dict(self.student).items()}
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
        """The saved state (stage, step, order, qparams, masks) after loading the saved weights into the
        student, which must still be plain (no fake-quant modules yet): the stages restore what they add
        (:func:`edgekit.compress.pipeline.restore_finished_stages` for the ones already done)."""
        from safetensors.torch import load_file

        if not (self.ckpt / "state.json").is_file():
            return None
        st = json.loads((self.ckpt / "state.json").read_text())
        tensors = load_file(str(self.ckpt / "student.safetensors"))
        masks = {k[len("__mask__."):]: v for k, v in tensors.items() if k.startswith("__mask__.")}
        weights = {k: v for k, v in tensors.items() if not k.startswith("__mask__.")}
        try:  # strict: a key that does not match would leave that weight as the teacher's, silently
            self.student.load_state_dict(weights)
        except RuntimeError as exc:
            raise InputError(f"--resume: the checkpoint in {self.ckpt} does not fit this model and recipe "
                             f"({str(exc).splitlines()[0]}); rerun with --overwrite to start over") from None
        self.order, self.global_step, self.stage_reports = st["order"], st["global_step"], st["stage_reports"]
        self.gen.set_state(torch.tensor(st["gen"], dtype=torch.uint8))
        st["masks"] = masks
        return st


def lr_factor(step: int, steps: int, warmup: int = 0) -> float:
    """The learning-rate multiplier at ``step``: linear warm-up over ``warmup`` steps, then a linear decay to 5%.

    >>> [round(lr_factor(s, 10, 2), 3) for s in (0, 1, 2, 6, 10)]
    [0.5, 1.0, 1.0, 0.5, 0.05]
    """
    if step < warmup:
        return (step + 1) / warmup
    return max(0.05, 1 - (step - warmup) / max(steps - warmup, 1))


def plain_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """``model.state_dict()`` with the keys it has without fake-quant wrappers (``....query.linear.weight`` is
    saved as ``....query.weight``), so a checkpoint loads into the plain student a resumed run starts from."""
    from edgekit.formats.fake_quant import FakeQuantLinear

    wrapped = [name + "." for name, m in model.named_modules() if isinstance(m, FakeQuantLinear)]
    out = {}
    for key, value in model.state_dict().items():
        prefix = next((w for w in wrapped if key.startswith(w + "linear.")), None)
        out[prefix + key[len(prefix) + len("linear."):] if prefix else key] = value
    return out
