"""Pruning masks for encoder Linear weights.

Patterns: ``4x1`` (4 consecutive output channels x 1 input channel: the layout edgekit's sparse kernels
pack), ``4x4`` (4 outputs x 4 consecutive, aligned inputs: four 4x1 blocks kept or pruned together, so it packs
and runs as 4x1 everywhere; a candidate for kernels that skip the 4x1 step's byte interleave, measured for its
accuracy cost first), ``unstructured`` and ``2:4`` (2 kept of every 4 consecutive inputs). Criteria: ``magnitude``
(block L2 norm) and ``movement`` (-w * dL/dw accumulated over steps, Sanh et al. 2020). Sparsity
follows a cubic schedule (Zhu & Gupta 2017) from 0 to the target over ``ramp * steps``; the masks are
then fixed for the rest of the stage.

Structured patterns prune units that span several Linears of one layer (:func:`structured_groups`):
``head`` (that head's rows of q, k, v and their biases, and its columns of the attention output) and
``neuron`` (one row of ffn_in and its bias entry, and the matching column of ffn_out). A unit's
magnitude score is the L2 norm over all its weights, its movement score their summed movement. A pruned
head's V is exactly 0 and its o columns too, so it adds nothing to the attention output; a pruned
neuron's pre-activation is exactly 0 and GELU(0) = 0. Every layer keeps at least one unit of each kind,
and neuron counts are pruned in multiples of 4 so that the native writer can gather them into whole empty
4x1 blocks (:func:`edgekit.formats.native.write_native`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .stages.prune import STRUCTURED


def cubic_sparsity(step: int, total: int, final: float) -> float:
    """s(t) = final * (1 - (1 - t/T)^3), reaching ``final`` at ``total``."""
    if step >= total:
        return final
    return final * (1.0 - (1.0 - step / total) ** 3)


def unit_scores(score: torch.Tensor, pattern: str, criterion: str = "magnitude") -> torch.Tensor:
    """Scores of the units a pattern keeps or prunes whole: 4x1 -> [ceil(N/4), K], 4x4 -> [ceil(N/4),
    ceil(K/4)] (magnitude: L2 over the block; movement: sum over the block); otherwise one unit per weight."""
    if pattern in ("4x1", "4x4"):
        n, k = score.shape
        s = torch.nn.functional.pad(score, (0, 0, 0, (-n) % 4)).reshape(-1, 4, k)
        s = s.pow(2).sum(1) if criterion == "magnitude" else s.sum(1)
        if pattern == "4x4":
            s = torch.nn.functional.pad(s, (0, (-k) % 4)).reshape(s.shape[0], -1, 4).sum(2)
        return s.sqrt() if criterion == "magnitude" else s
    return score.abs() if criterion == "magnitude" else score


def expand(keep: torch.Tensor, shape, pattern: str) -> torch.Tensor:
    if pattern == "4x1":
        return keep.repeat_interleave(4, dim=0)[: shape[0]]
    if pattern == "4x4":
        return keep.repeat_interleave(4, dim=0)[: shape[0]].repeat_interleave(4, dim=1)[:, : shape[1]]
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


# ------------------------------------------------------------------------------------ structured units
@dataclass(frozen=True)
class Group:
    """The units of one kind in one layer: ``members`` are (linear name, axis) with axis 0 = the unit
    owns ``size`` consecutive output rows (and their bias entries), axis 1 = ``size`` input columns."""

    name: str  # layers.{i}.heads | layers.{i}.neurons
    kind: str  # head | neuron
    units: int
    size: int
    members: tuple[tuple[str, int], ...]


def structured_groups(linears: dict[str, nn.Linear], pattern: str, heads: int | None) -> list[Group]:
    """The head and/or neuron groups of every layer that has the Linears they need."""
    layers = sorted({int(n.split(".")[1]) for n in linears})
    out = []
    for i in layers:
        p = f"layers.{i}."
        if pattern in ("head", "head+neuron") and all(p + x in linears for x in ("q", "k", "v", "o")):
            if not heads:
                raise ValueError("head pruning needs the number of attention heads")
            hidden = linears[p + "q"].weight.shape[0]
            if hidden % heads:
                raise ValueError(f"{p}q has {hidden} rows, not a multiple of {heads} heads")
            out.append(Group(p + "heads", "head", heads, hidden // heads,
                             ((p + "q", 0), (p + "k", 0), (p + "v", 0), (p + "o", 1))))
        if pattern in ("neuron", "head+neuron") and all(p + x in linears for x in ("ffn_in", "ffn_out")):
            out.append(Group(p + "neurons", "neuron", linears[p + "ffn_in"].weight.shape[0], 1,
                             ((p + "ffn_in", 0), (p + "ffn_out", 1))))
    return out


def group_scores(group: Group, scores: dict[str, torch.Tensor], criterion: str = "magnitude") -> torch.Tensor:
    """[units] scores: L2 norm of the unit's entries of ``scores`` (magnitude) or their sum (movement)."""
    total = torch.zeros(group.units, dtype=torch.float64)
    for name, axis in group.members:
        s = scores[name].detach().double()
        s = s if axis == 0 else s.t()  # rows = the unit axis
        s = s.reshape(group.units, -1)
        total += s.pow(2).sum(1) if criterion == "magnitude" else s.sum(1)
    return total.sqrt() if criterion == "magnitude" else total


def group_keep(group: Group, masks: dict[str, torch.Tensor]) -> torch.Tensor:
    """[units] bool: units not pruned in ``masks`` (a unit is pruned when its rows of the first member are 0)."""
    name, axis = group.members[0]
    m = masks[name] if axis == 0 else masks[name].t()
    return m.reshape(group.units, -1).amax(1) > 0


def group_masks(group: Group, keep: torch.Tensor, shapes: dict[str, torch.Size]) -> dict[str, torch.Tensor]:
    """Weight masks of every member for a [units] keep vector."""
    vec = keep.float().repeat_interleave(group.size)
    out = {}
    for name, axis in group.members:
        n, k = shapes[name]
        out[name] = vec[:, None].expand(n, k).clone() if axis == 0 else vec[None, :].expand(n, k).clone()
    return out


def units_to_prune(units: int, target: float, kind: str) -> int:
    """How many units reach ``target``; at least one stays, neurons go in multiples of 4."""
    n = int(round(target * units))
    if kind == "neuron" and units >= 8:
        n = 4 * int(round(n / 4))
        return min(n, 4 * ((units - 1) // 4))
    return min(n, units - 1)


class Pruner:
    """Holds masks for a set of Linears and applies them after every optimiser step.

    For structured patterns ``heads`` is the model's attention head count, ``head_sparsity`` the final
    fraction of heads (pattern head+neuron; default the ``final`` given to :meth:`update`), and
    ``allocation`` is keyed by group name (``layers.{i}.heads`` / ``layers.{i}.neurons``)."""

    def __init__(self, linears: dict[str, nn.Linear], pattern: str, criterion: str = "magnitude",
                 allocation: dict[str, float] | None = None, heads: int | None = None,
                 head_sparsity: float | None = None):
        self.linears, self.pattern, self.criterion = linears, pattern, criterion
        self.allocation = allocation  # per-layer final sparsity (hardware-aware), else uniform
        self.head_sparsity = head_sparsity
        self.groups = structured_groups(linears, pattern, heads) if pattern in STRUCTURED else []
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
        if self.groups:
            self._update_groups(fraction, final)
            return
        for n, m in self.linears.items():
            target = (self.allocation or {}).get(n, final) * fraction
            score = self.movement[n] if self.movement is not None else m.weight.detach()
            self.masks[n] = mask_for(score, target, self.pattern, self.criterion, current=self.masks[n])
        self.apply()

    def _update_groups(self, fraction: float, final: float) -> None:
        shapes = {n: m.weight.shape for n, m in self.linears.items()}
        for g in self.groups:
            goal = self.head_sparsity if g.kind == "head" and self.head_sparsity is not None else final
            target = (self.allocation or {}).get(g.name, goal) * fraction
            src = self.movement if self.movement is not None else {n: m.weight for n, m in self.linears.items()}
            scores = group_scores(g, src, self.criterion)
            alive = group_keep(g, self.masks)
            scores[~alive] = -float("inf")  # pruned stay pruned
            keep = torch.ones(g.units, dtype=torch.bool)
            n_prune = max(units_to_prune(g.units, target, g.kind), int((~alive).sum()))
            keep[scores.argsort()[:n_prune]] = False
            self.masks.update(group_masks(g, keep, shapes))
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for n, m in self.linears.items():
            m.weight.mul_(self.masks[n])
        for g in self.groups:  # a pruned unit's output rows lose their bias too (exact zeros, GELU(0) = 0)
            for name, axis in g.members:
                bias = self.linears[name].bias
                if axis == 0 and bias is not None:
                    bias.mul_(self.masks[name].amax(1))

    def sparsity(self) -> dict[str, float]:
        return {n: float((m.weight == 0).float().mean()) for n, m in self.linears.items()}

    def kept(self) -> dict[str, dict]:
        """Units kept per layer for structured patterns: {"heads": {"kept": [per layer], "of": n}, ...}."""
        out: dict[str, dict] = {}
        for g in self.groups:
            d = out.setdefault(g.kind + "s", {"kept": [], "of": g.units})
            d["kept"].append(int(group_keep(g, self.masks).sum()))
        return out


def total_sparsity(linears: dict[str, nn.Linear]) -> float:
    zeros = sum(int((m.weight == 0).sum()) for m in linears.values())
    return zeros / sum(m.weight.numel() for m in linears.values())
