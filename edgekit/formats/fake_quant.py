"""The int8 scheme of :mod:`edgekit.formats.int8` simulated in torch: ``FakeQuantLinear`` around each encoder
Linear. Gradients pass straight through the rounding (STE), so the same modules serve calibration, QAT and
the torch runtime's int8 reference (rebuilt from ``torch/quant.json`` by :func:`attach_fake_quant`).
"""
from __future__ import annotations

import torch
from torch import nn

from edgekit.arch import encoder_linears
from edgekit.errors import ArtifactError

from .int8 import SCHEME, act_qparams, state_weight_bits, weight_qmax


def _ste(x: torch.Tensor, xq: torch.Tensor) -> torch.Tensor:
    return x + (xq - x).detach()


class FakeQuantLinear(nn.Module):
    """Wraps an nn.Linear: observes its input range (calibration) or fake-quantises input and weight
    (``weight_bits``: 8 or 7, see :func:`edgekit.formats.int8.weight_qparams`)."""

    def __init__(self, linear: nn.Linear, name: str, weight_bits: int = 8):
        super().__init__()
        weight_qmax(weight_bits)  # validates
        self.linear, self.name, self.weight_bits = linear, name, int(weight_bits)
        self.mode = "observe"  # observe | quant | off
        self.samples: list[torch.Tensor] = []
        self.lo, self.hi = float("inf"), -float("inf")
        self.x_scale, self.x_zp = 1.0, 0

    @property
    def weight(self):
        return self.linear.weight

    def set_qparams(self, x_scale: float, x_zp: int) -> None:
        self.x_scale, self.x_zp = float(x_scale), int(x_zp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "observe":
            d = x.detach()
            self.lo, self.hi = min(self.lo, float(d.min())), max(self.hi, float(d.max()))
            flat = d.flatten()
            self.samples.append(flat[torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(0))[:4096]])
            return self.linear(x)
        if self.mode == "off":
            return self.linear(x)
        q = torch.clamp(torch.round(x / self.x_scale) + self.x_zp, 0, 255)
        xq = _ste(x, (q - self.x_zp) * self.x_scale)
        w = self.linear.weight
        qmax = weight_qmax(self.weight_bits)
        amax = w.detach().abs().amax(dim=1, keepdim=True)
        ws = torch.where(amax > 0, amax / float(qmax), torch.ones_like(amax))
        wq = _ste(w, torch.clamp(torch.round(w / ws), -qmax, qmax) * ws)
        return nn.functional.linear(xq, wq, self.linear.bias)


def insert_fake_quant(model: nn.Module, skip: tuple[str, ...] = (), weight_bits: int = 8) -> dict[str, FakeQuantLinear]:
    """Replace every encoder Linear (except ``skip`` internal names) by a FakeQuantLinear with
    ``weight_bits``-bit weights, in place."""
    weight_qmax(weight_bits)  # validates before the model is touched
    fq = {}
    names = {id(m): n for n, m in encoder_linears(model).items()}
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and id(child) in names and names[id(child)] not in skip:
                wrapper = FakeQuantLinear(child, names[id(child)], weight_bits)
                setattr(parent, child_name, wrapper)
                fq[wrapper.name] = wrapper
    return fq


def remove_fake_quant(model: nn.Module, only: set[str] | None = None) -> None:
    """Put the plain Linears back (weights are shared, so nothing is copied); ``only``: just these
    internal names (the layers a sensitivity pass keeps fp32)."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, FakeQuantLinear) and (only is None or child.name in only):
                setattr(parent, child_name, child.linear)


def finish_calibration(fq: dict[str, FakeQuantLinear], method: str = "minmax", percentile: float = 99.99) -> None:
    """Turn observed ranges into (x_scale, x_zp) and switch every module to quant mode."""
    for m in fq.values():
        lo, hi = m.lo, m.hi
        if method == "percentile" and m.samples:
            s = torch.cat(m.samples).float()
            lo = float(torch.quantile(s, (100 - percentile) / 100))
            hi = float(torch.quantile(s, percentile / 100))
        m.set_qparams(*act_qparams(lo, hi))
        m.samples.clear()
        m.mode = "quant"


def quant_state(fq: dict[str, FakeQuantLinear]) -> dict:
    """What ``torch/quant.json`` stores: the weight bits (one value for the whole model) and the
    activation qparams per internal Linear name."""
    bits = {m.weight_bits for m in fq.values()} or {8}
    if len(bits) > 1:
        raise ValueError(f"fake-quant modules disagree on weight bits: {sorted(bits)}")
    return {"scheme": SCHEME, "weight_bits": bits.pop(),
            "layers": {n: {"x_scale": m.x_scale, "x_zp": m.x_zp} for n, m in sorted(fq.items())}}


def attach_fake_quant(wrapper: nn.Module, state: dict) -> nn.Module:
    """Rebuild the fake-quant model from plain (pruned) weights + ``quant.json`` (the torch runtime uses it)."""
    if state.get("scheme") != SCHEME:
        raise ArtifactError(f"unknown quantization scheme {state.get('scheme')!r} in torch/quant.json")
    bits = state_weight_bits(state)
    layers = state["layers"]
    skip = tuple(n for n in encoder_linears(wrapper) if n not in layers)
    fq = insert_fake_quant(wrapper, skip=skip, weight_bits=bits)
    for n, m in fq.items():
        m.set_qparams(layers[n]["x_scale"], layers[n]["x_zp"])
        m.mode = "quant"
    return wrapper
