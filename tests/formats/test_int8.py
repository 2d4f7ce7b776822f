"""edgekit's int8 scheme (edgekit.formats.int8) and its torch fake-quant modules (edgekit.formats.fake_quant):
the quantised Linear equals the integer formula the native engine computes, for 8- and 7-bit weights."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.errors import ArtifactError
from edgekit.formats import fake_quant as Q
from edgekit.formats.fake_quant import FakeQuantLinear, finish_calibration
from edgekit.formats.int8 import act_qparams, weight_qparams


def test_fake_quant_equals_integer_formula():
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 8)
    x = torch.randn(5, 32) * 3
    s, zp = act_qparams(float(x.min()), float(x.max()))
    q_x = torch.clamp(torch.round(x / s) + zp, 0, 255)
    q_w, ws = weight_qparams(lin.weight)
    expect = (((q_x - zp).double() @ q_w.double().T) * (s * ws.double()) + lin.bias.double()).detach()
    fq = FakeQuantLinear(lin, "layers.0.q")
    fq(x)
    finish_calibration({"layers.0.q": fq})
    assert (fq.x_scale, fq.x_zp) == (s, zp)
    np.testing.assert_allclose(fq(x).detach().double().numpy(), expect.numpy(), rtol=1e-5, atol=1e-5)
    assert q_w.dtype == torch.int8 and q_w.abs().max() <= 127


@pytest.mark.parametrize("bits, qmax", [(8, 127), (7, 63)])
def test_weight_qparams_range_and_round_trip(bits, qmax):
    torch.manual_seed(0)
    w = torch.randn(16, 40)
    w[3] = 0.0  # an all-zero row: scale 1, q 0
    w[5, 7] = 25.0  # an outlier sets its row's scale
    q, ws = weight_qparams(w, bits)
    assert q.dtype == torch.int8 and ws.dtype == torch.float32
    assert int(q.abs().max()) == qmax and (q.int().abs() <= qmax).all()
    nonzero = [i for i in range(16) if i != 3]
    assert (q[nonzero].int().abs().amax(1) == qmax).all()  # scale = amax / qmax: every row reaches qmax
    torch.testing.assert_close(ws[nonzero], w[nonzero].abs().amax(1) / qmax)
    assert ws[3] == 1.0 and (q[3] == 0).all()
    err = (q.float() * ws[:, None] - w).abs()
    assert (err <= ws[:, None] / 2 + 1e-6 * ws[:, None]).all()  # round to nearest: at most half a step


def test_weight_qparams_default_is_8_bit_and_other_bits_rejected():
    w = torch.randn(4, 8)
    q8, s8 = weight_qparams(w)
    q, s = weight_qparams(w, 8)
    assert torch.equal(q8, q) and torch.equal(s8, s)
    for bad in (6, 4, 16):
        with pytest.raises(ValueError, match="7, 8"):
            weight_qparams(w, bad)
        with pytest.raises(ValueError, match="7, 8"):
            FakeQuantLinear(torch.nn.Linear(8, 4), "layers.0.q", weight_bits=bad)


def test_fake_quant_7_bit_equals_integer_formula():
    torch.manual_seed(0)
    lin = torch.nn.Linear(32, 8)
    x = torch.randn(5, 32) * 3
    s, zp = act_qparams(float(x.min()), float(x.max()))
    q_x = torch.clamp(torch.round(x / s) + zp, 0, 255)
    q_w, ws = weight_qparams(lin.weight, 7)
    expect = (((q_x - zp).double() @ q_w.double().T) * (s * ws.double()) + lin.bias.double()).detach()
    fq = FakeQuantLinear(lin, "layers.0.q", weight_bits=7)
    fq(x)
    finish_calibration({"layers.0.q": fq})
    np.testing.assert_allclose(fq(x).detach().double().numpy(), expect.numpy(), rtol=1e-5, atol=1e-5)
    # and it differs from the 8-bit model
    fq.weight_bits = 8
    assert not np.allclose(fq(x).detach().double().numpy(), expect.numpy(), rtol=1e-5, atol=1e-5)


def test_quant_state_records_bits_and_attach_reads_them():
    from edgekit.zoo import load_torch, resolve

    model, _ = load_torch(resolve("tiny-bert"))
    fq = Q.insert_fake_quant(model, weight_bits=7)
    assert {m.weight_bits for m in fq.values()} == {7}
    for m in fq.values():
        m.set_qparams(0.05, 128)
    state = Q.quant_state(fq)
    assert state["weight_bits"] == 7 and state["scheme"] == "edgekit-u8s8-v1"
    Q.remove_fake_quant(model)

    def bits_after_attach(st):
        m, _ = load_torch(resolve("tiny-bert"))
        Q.attach_fake_quant(m, st)
        return {x.weight_bits for x in m.modules() if isinstance(x, FakeQuantLinear)}

    assert bits_after_attach(state) == {7}
    old = {k: v for k, v in state.items() if k != "weight_bits"}  # artifacts written before the field: 8
    assert bits_after_attach(old) == {8}
    with pytest.raises(ArtifactError, match="weight_bits 6 .*allowed: 7, 8"):
        bits_after_attach({**state, "weight_bits": 6})
