"""Pruning masks for encoder Linear weights.

Patterns: ``4x1`` (4 consecutive output channels x 1 input channel: the layout edgekit's sparse kernels
pack), ``unstructured`` and ``2:4`` (2 kept of every 4 consecutive inputs). Criteria: ``magnitude``
(block L2 norm) and ``movement`` (-w * dL/dw accumulated over steps, Sanh et al. 2020). Sparsity
follows a cubic schedule (Zhu & Gupta 2017) from 0 to the target over ``ramp * steps``; the masks are
then fixed for the rest of the stage.
"""
from __future__ import annotations

import torch
from torch import nn

# HF BERT module suffix -> native name (edgekit.compress.native_format)
LINEAR_NAMES = {
    "attention.self.query": "q", "attention.self.key": "k", "attention.self.value": "v",
    "attention.output.dense": "o", "intermediate.dense": "ffn_in", "output.dense": "ffn_out",
}


def encoder_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """{native name 'layers.{i}.{q|k|v|o|ffn_in|ffn_out}': module} for every encoder Linear."""
    out = {}
    for name, mod in model.named_modules():
        if not isinstance(mod, nn.Linear) or ".layer." not in name:
            continue
        head, _, tail = name.partition(".layer.")
        idx, _, suffix = tail.partition(".")
        if suffix in LINEAR_NAMES and "encoder" in head + ".":
            out[f"layers.{int(idx)}.{LINEAR_NAMES[suffix]}"] = mod
    return out


def cubic_sparsity(step: int, total: int, final: float) -> float:
    """s(t) = final * (1 - (1 - t/T)^3), reaching ``final`` at ``total``."""
    if step >= total:
        return final
    return final * (1.0 - (1.0 - step / total) ** 3)


def unit_scores(score: torch.Tensor, pattern: str, criterion: str = "magnitude") -> torch.Tensor:
    """Scores of the units a pattern keeps or prunes whole: 4x1 -> [ceil(N/4), K] (magnitude: L2 over
    the block; movement: sum over the block); otherwise one unit per weight."""
    if pattern == "4x1":
        n, k = score.shape
        s = torch.nn.functional.pad(score, (0, 0, 0, (-n) % 4)).reshape(-1, 4, k)
        return s.pow(2).sum(1).sqrt() if criterion == "magnitude" else s.sum(1)
    return score.abs() if criterion == "magnitude" else score


def expand(keep: torch.Tensor, shape, pattern: str) -> torch.Tensor:
    if pattern == "4x1":
        return keep.repeat_interleave(4, dim=0)[: shape[0]]
    return keep


def mask_for(score: torch.Tensor, sparsity: float, pattern: str, criterion: str = "magnitude",
             current: torch.Tensor | None = None) -> torch.Tensor:
    """A {0,1} mask of ``score``'s shape keeping the highest-scoring units at ``sparsity``; units
    already pruned in ``current`` stay pruned."""
    if pattern == "2:4":
        n, k = score.shape
        s = torch.nn.functional.pad(score.abs(), (0, (-k) % 4)).reshape(n, -1, 4)
        top = s.topk(2, dim=-1).indices
        return torch.zeros_like(s).scatter_(-1, top, 1.0).reshape(n, -1)[:, :k]
    units = unit_scores(score, pattern, criterion).clone()
    if current is not None:
        alive = unit_scores(current, pattern, "magnitude") > 0
        units[~alive] = -float("inf")
    n_prune = int(round(sparsity * units.numel()))
    keep = torch.ones_like(units)
    if n_prune > 0:
        keep.view(-1)[units.flatten().argsort()[:n_prune]] = 0.0
    return expand(keep, score.shape, pattern)


class Pruner:
    """Holds masks for a set of Linears and applies them after every optimiser step."""

    def __init__(self, linears: dict[str, nn.Linear], pattern: str, criterion: str = "magnitude",
                 allocation: dict[str, float] | None = None):
        self.linears, self.pattern, self.criterion = linears, pattern, criterion
        self.allocation = allocation  # per-layer final sparsity (hardware-aware), else uniform
        self.masks = {n: torch.ones_like(m.weight) for n, m in linears.items()}
        self.movement = {n: torch.zeros_like(m.weight) for n, m in linears.items()} if criterion == "movement" else None

    def accumulate(self) -> None:
        """Movement scores: after backward, add -w * grad (weights moving toward zero score low)."""
        if self.movement is None:
            return
        for n, m in self.linears.items():
            if m.weight.grad is not None:
                self.movement[n] -= (m.weight.detach() * m.weight.grad.detach())

    @torch.no_grad()
    def update(self, fraction: float, final: float) -> None:
        """Recompute masks at ``fraction`` (0..1) of each layer's final sparsity (pruned stay pruned).
        2:4 has no gradual form: it is applied once, at fraction 1."""
        if self.pattern == "2:4" and fraction < 1.0:
            return
        for n, m in self.linears.items():
            target = (self.allocation or {}).get(n, final) * fraction
            score = self.movement[n] if self.movement is not None else m.weight.detach()
            self.masks[n] = mask_for(score, target, self.pattern, self.criterion, current=self.masks[n])
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for n, m in self.linears.items():
            m.weight.mul_(self.masks[n])

    def sparsity(self) -> dict[str, float]:
        return {n: float((m.weight == 0).float().mean()) for n, m in self.linears.items()}


def total_sparsity(linears: dict[str, nn.Linear]) -> float:
    zeros = sum(int((m.weight == 0).sum()) for m in linears.values())
    return zeros / sum(m.weight.numel() for m in linears.values())


def is_4x1(w: torch.Tensor) -> bool:
    """Every 4x1 block is all-zero or all-kept (the last partial block counts its rows only)."""
    n, k = w.shape
    nz = torch.nn.functional.pad((w != 0).float(), (0, 0, 0, (-n) % 4)).reshape(-1, 4, k)
    rows = torch.ones(((n + 3) // 4) * 4)
    rows[n:] = 0
    full = rows.reshape(-1, 4).sum(1, keepdim=True)
    cnt = nz.sum(1)
    return bool(((cnt == 0) | (cnt == full)).all())
