"""Data-parallel training under ``torchrun`` (DistributedDataParallel, gloo on CPU).

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
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
from torch import nn

from edgekit.errors import InputError

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
    return tuple(t[d.rank * n : (d.rank + 1) * n] for t in global_batch)


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

    def forward(self, ids, mask, labels, tokens):
        return self.distiller.loss(ids, mask, labels, tokens=tokens)


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
