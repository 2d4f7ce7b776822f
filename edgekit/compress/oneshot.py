"""One-shot, activation-aware pruning with a least-squares refit of the kept weights.

Layer by layer through the encoder (so that each layer sees the inputs the already-pruned layers below it
produce), for each group of Linears that share an input (q/k/v, o, ffn_in, ffn_out):

1. run the calibration text through the student up to that input and accumulate H = sum over real tokens
   of x x^T (the input's second moment);
2. score each unit by its weights scaled by the input's RMS, |W_ij| * sqrt(H_jj) (the criterion of Wanda,
   Sun et al. 2023, "A Simple and Effective Pruning Approach for Large Language Models"), summed over the
   unit for block patterns, and keep the top (1 - sparsity);
3. refit the kept weights of every output row to reproduce the unpruned row's outputs on that input in the
   least-squares sense: W_S = W H[:, S] (H[S, S] + damp I)^-1 (SparseGPT, Frantar & Alistarh 2023, does
   the same reconstruction with a sequential OBS update; the per-row solve is exact for a fixed mask).

The result is a much better starting point for distillation than magnitude pruning at the same sparsity
(see ``bench/fe_recovery.py --init``).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from edgekit.arch import Encoder

from .prune import mask_for

GROUPS = (("q", "k", "v"), ("o",), ("ffn_in",), ("ffn_out",))


class _Stop(Exception):
    pass


def _input_moment(model: nn.Module, lin: nn.Linear, batches) -> torch.Tensor:
    """H = sum of x x^T over the real tokens of every batch, x = the input of ``lin`` (fp64)."""
    k = lin.weight.shape[1]
    H = torch.zeros(k, k, dtype=torch.float64)
    cur: dict[str, torch.Tensor] = {}

    def hook(_m, inp):
        x = inp[0].detach()
        x = x[cur["mask"].bool()] if x.dim() == 3 else x
        H.add_((x.T.double() @ x.double()))
        raise _Stop  # nothing after this input is needed

    h = lin.register_forward_pre_hook(hook)
    try:
        with torch.no_grad():
            for ids, mask in batches:
                cur["mask"] = mask
                try:
                    model(ids, mask)
                except _Stop:
                    pass
    finally:
        h.remove()
    return H


def refit(weight: torch.Tensor, keep: torch.Tensor, H: torch.Tensor, damp: float = 0.01) -> torch.Tensor:
    """Least-squares refit of each row's kept weights (``keep`` {0,1}, ``weight``'s shape) to the unpruned
    row's outputs on inputs with second moment ``H``. Rows sharing one kept set are solved together."""
    W = weight.double()
    Hd = H + damp * H.diagonal().mean() * torch.eye(H.shape[0], dtype=H.dtype)
    out = torch.zeros_like(W)
    HW = H @ W.T  # [k, n]: right-hand sides H[S, :] W^T are rows of this
    groups: dict[bytes, list[int]] = {}
    for r in range(W.shape[0]):
        groups.setdefault(keep[r].bool().numpy().tobytes(), []).append(r)
    for rows in groups.values():
        S = keep[rows[0]].bool()
        if not S.any():
            continue
        sol = torch.linalg.solve(Hd[S][:, S], HW[S][:, rows])  # [|S|, len(rows)]
        out[torch.tensor(rows)[:, None], S.nonzero().flatten()[None, :]] = sol.T
    return out.to(weight.dtype)


def oneshot_prune(model: nn.Module, linears: dict[str, nn.Linear], sparsity: float | dict[str, float],
                  pattern: str, batches, refit_weights: bool = True, damp: float = 0.01,
                  progress: Callable[[str], None] | None = None) -> dict[str, torch.Tensor]:
    """Prune ``linears`` (native names -> modules of ``model``) in place; return their {0,1} masks.
    ``batches``: a list of (input_ids, attention_mask) of calibration text; ``model(ids, mask)`` runs it."""
    masks: dict[str, torch.Tensor] = {}
    layers = sorted({int(n.split(".")[1]) for n in linears})
    was_training = model.training
    model.eval()
    try:
        for i in layers:
            for group in GROUPS:
                names = [f"layers.{i}.{g}" for g in group if f"layers.{i}.{g}" in linears]
                if not names:
                    continue
                H = _input_moment(model, linears[names[0]], batches)
                rms = H.diagonal().clamp_min(0).sqrt().float()
                for n in names:
                    lin = linears[n]
                    sp = sparsity[n] if isinstance(sparsity, dict) else sparsity
                    w = lin.weight.detach()
                    m = mask_for(w.abs() * rms[None, :], sp, pattern)
                    with torch.no_grad():
                        lin.weight.copy_(refit(w, m, H, damp) if refit_weights else w * m)
                    masks[n] = m
                if progress:
                    progress(f"layer {i} {'/'.join(group)}")
    finally:
        model.train(was_training)
    return masks


def reconstruct_layers(enc: Encoder, student_in: torch.Tensor, teacher_out: list[torch.Tensor],
                       mask: torch.Tensor, weight_masks: list[dict[nn.Linear, torch.Tensor]], steps: int,
                       lr: float = 1e-3, batch: int = 16, seed: int = 0,
                       progress: Callable[[str], None] | None = None) -> list[float]:
    """Layer-wise reconstruction after one-shot pruning: train each pruned encoder layer of ``enc`` (the student's
    :func:`edgekit.arch.encoder`) in turn (weights, biases, LayerNorms; pruned weights stay zero) to reproduce the
    teacher's output of that layer from the input the already-reconstructed student layers below give it.

    ``student_in`` [N, S, H]: the student's embedding output for N windows; ``teacher_out[l]`` [N, S, H]:
    the teacher's hidden state after layer l; ``mask`` [N, S]: real tokens. The loss is the mean squared
    error over real tokens divided by the teacher's variance of that layer. A step costs one layer's forward
    and backward on ``batch`` windows (no teacher forward: its outputs are given), so each layer gets many
    more steps than end-to-end distillation could give the whole model in the same time. Returns each
    layer's final loss (the mean over its last 10% of steps)."""
    layers = [layer.block for layer in enc.layers]
    gen = torch.Generator().manual_seed(seed)
    h = student_in
    finals: list[float] = []
    real = mask.bool()
    for li, layer in enumerate(layers):
        target = teacher_out[li]
        var = float(target[real].var())
        was_training = layer.training
        layer.eval()  # no dropout: the targets are deterministic
        params = [p for p in layer.parameters() if p.requires_grad]
        opt = torch.optim.Adam(params, lr=lr)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / max(steps, 1))
        tail: list[float] = []
        order: list[int] = []
        for step in range(steps):
            if len(order) < batch:
                order += torch.randperm(len(h), generator=gen).tolist()
            idx = torch.tensor(order[:batch])
            del order[:batch]
            m = real[idx]
            out = enc.run_layer(layer, h[idx], mask[idx])
            loss = ((out[m] - target[idx][m]) ** 2).mean() / var
            loss.backward()
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
            with torch.no_grad():
                for lin, wm in weight_masks[li].items():
                    lin.weight.mul_(wm)
            if step >= steps - max(1, steps // 10):
                tail.append(loss.item())
        layer.train(was_training)
        finals.append(sum(tail) / max(len(tail), 1))
        with torch.no_grad():  # this layer's outputs are the next layer's inputs
            layer.eval()
            h = torch.cat([enc.run_layer(layer, h[i:i + 64], mask[i:i + 64])
                           for i in range(0, len(h), 64)])
            layer.train(was_training)
        if progress:
            progress(f"layer {li}: loss {finals[-1]:.4f}")
    return finals


__all__ = ["GROUPS", "oneshot_prune", "reconstruct_layers", "refit"]
