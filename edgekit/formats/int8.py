"""edgekit's int8 scheme, the reference the native engine, the torch fake-quant and the exports follow.

At the input of every encoder Linear: u8 per-tensor asymmetric,
    q_x = clamp(round_half_even(x / x_scale) + x_zp, 0, 255),  x_hat = (q_x - x_zp) * x_scale
Weights: s8 per output channel, symmetric with qmax = 2^(bits-1) - 1 (127 for 8-bit weights, 63 for 7-bit):
    w_scale[n] = max|W[n,:]| / qmax,  q_w = clamp(round(W / w_scale), -qmax, qmax).
7-bit weights (``weight_bits: 7``, ONNX Runtime calls the idea ``reduce_range``) keep every |q_w| <= 63, so
on AVX2 without VNNI ``vpmaddubsw``'s int16 pair sums (255 * 63 * 2 = 32130 <= 32767) cannot saturate.
y = x_hat @ (q_w * w_scale)^T + bias, i.e. exactly (sum_k (q_x - x_zp) q_w) * x_scale * w_scale + bias up
to fp32 summation order.
"""
from __future__ import annotations

import numpy as np

from edgekit.errors import ArtifactError

SCHEME = "edgekit-u8s8-v1"
WEIGHT_BITS = (7, 8)


def weight_qmax(bits: int) -> int:
    """Largest |q_w|: 127 for 8-bit weights, 63 for 7-bit ones."""
    if bits not in WEIGHT_BITS:
        raise ValueError(f"weight bits must be one of {', '.join(map(str, WEIGHT_BITS))}, got {bits!r}")
    return 2 ** (bits - 1) - 1


def weight_qparams(w, bits: int = 8):
    """(q_w int8 [N,K], w_scale fp32 [N]) of a torch weight with |q_w| <= :func:`weight_qmax` (bits); all-zero
    rows get scale 1 (their q_w is 0 anyway)."""
    import torch

    qmax = weight_qmax(bits)
    amax = w.detach().abs().amax(dim=1)
    scale = torch.where(amax > 0, amax / float(qmax), torch.ones_like(amax))
    q = torch.clamp(torch.round(w.detach() / scale[:, None]), -qmax, qmax).to(torch.int8)
    return q, scale.float()


def act_qparams(lo: float, hi: float) -> tuple[float, int]:
    """u8 asymmetric (scale, zero point) covering [lo, hi] (always including 0)."""
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / 255.0 if hi > lo else 1.0
    zp = int(np.clip(round(-lo / scale), 0, 255))
    return float(scale), zp


def state_weight_bits(state: dict, where: str = "torch/quant.json") -> int:
    """``weight_bits`` of a stored quant state (8 when absent: artifacts written before the field existed)."""
    bits = state.get("weight_bits", 8)
    if isinstance(bits, bool) or bits not in WEIGHT_BITS:
        raise ArtifactError(f"weight_bits {bits!r} in {where} is not supported; allowed: "
                            f"{', '.join(map(str, WEIGHT_BITS))}")
    return int(bits)
