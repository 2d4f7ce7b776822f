"""Data-parallel compression: two torchrun processes reproduce the single-process run (same global batch)."""
from __future__ import annotations

import copy
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from edgekit.compress import training as D
from edgekit.errors import InputError

# A few steps of every training stage. Global batch 8 = 2 shards of 4; max_length 32 keeps it quick
# (BBC articles are longer, so every mask is full here; the padded case is checked on the losses below).
# Two windows per article: the extra rows go through the same sharding.
RECIPE = """\
name: ddp-test
batch: 8
max_length: 32
train_windows: 2
checkpoint_every: 4
stages:
  - type: distill
  - type: prune
    pattern: "4x1"
    sparsity: 0.8
    steps: 6
    update_every: 2
    lr: 1.0e-4
  - type: quantize
    calibration_samples: 8
    qat_steps: 2
    lr: 2.0e-5
"""
# sum over the steps of LambdaLR's factor max(0.05, 1 - s/steps) times lr: the most any weight can move
# if Adam's normalised step were exactly lr every time (it is about lr when a gradient's sign is steady)
LR_SUM = 1e-4 * sum(max(0.05, 1 - s / 6) for s in range(6)) + 2e-5 * sum(max(0.05, 1 - s / 2) for s in range(2))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dropout_free_tiny_cls(dest):
    """tiny-bert-cls without dropout: with dropout the two runs draw different masks by design."""
    import shutil

    from edgekit.zoo import resolve

    shutil.copytree(resolve("tiny-bert-cls").path, dest)
    cfg = json.loads((dest / "config.json").read_text())
    cfg.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    (dest / "config.json").write_text(json.dumps(cfg, indent=2))
    return dest


def test_batch_must_divide_by_world_and_shards_are_contiguous():
    with pytest.raises(InputError, match="recipe batch 6 is the global batch and must divide by the number of "
                                         r"processes \(4\)"):
        D.check_batch(6, D.Dist(rank=1, world=4))
    D.check_batch(6, D.Dist())  # alone: anything goes
    x = torch.arange(8)
    assert D.shard((x,), D.Dist(rank=1, world=2))[0].tolist() == [4, 5, 6, 7]
    assert D.shard((x,), D.Dist())[0] is x
    assert D.fingerprint({"a": torch.zeros(3)}) != D.fingerprint({"a": torch.tensor([0.0, 0.0, -0.0])})


def test_shard_losses_average_to_the_global_batch_loss():
    """What DDP computes (mean of the shard gradients) equals the global-batch gradient, also for the
    token-mean losses when the shards hold different numbers of real tokens."""
    from edgekit.compress.config import DistillConfig
    from edgekit.compress.distill import Distiller
    from edgekit.zoo import load_torch, resolve

    teacher, _ = load_torch(resolve("tiny-bert-cls"))
    student = copy.deepcopy(teacher).eval()  # eval: no dropout, so every call sees the same network
    torch.manual_seed(0)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    d = Distiller(teacher, student, DistillConfig(), "text-classification")  # every loss on
    ids = torch.randint(1000, 5000, (4, 12))
    mask = torch.ones(4, 12, dtype=torch.long)
    mask[0, 3:] = 0  # shard 0 holds 15 real tokens, shard 1 holds 20
    mask[2, 8:] = 0
    labels = torch.tensor([0, 1, 2, 3])
    shards = (slice(0, 2), slice(2, 4))

    def loss_and_grads(fn):
        student.zero_grad(set_to_none=True)
        loss = fn()
        loss.backward()
        return float(loss.detach()), torch.cat([p.grad.flatten() for p in student.parameters() if p.grad is not None])

    full, g_full = loss_and_grads(lambda: d.loss(ids, mask, labels)[0])
    tokens = float(mask.sum()) / 2
    dp, g_dp = loss_and_grads(lambda: sum(d.loss(ids[s], mask[s], labels[s], tokens=tokens)[0] for s in shards) / 2)
    naive, _ = loss_and_grads(lambda: sum(d.loss(ids[s], mask[s], labels[s])[0] for s in shards) / 2)
    # fp32 sums of a few thousand terms in another order: relative differences of order 1e-6
    assert dp == pytest.approx(full, rel=1e-5)
    torch.testing.assert_close(g_dp, g_full, rtol=1e-4, atol=1e-5 * float(g_full.abs().max()))
    assert abs(naive - full) > 1e-3 * full  # each shard's own token mean would be the wrong loss


def test_torchrun_two_processes_match_single_process(tmp_path):
    """``torchrun --nproc_per_node 2 -m edgekit compress`` vs ``compress()`` alone, same recipe.

    Tolerance: the runs differ only in fp32 summation order (batch means, weight-gradient sums over
    4 instead of 8 rows, one gloo all-reduce), ~1e-7 relative to the summed terms. Adam's step is
    lr * m / (sqrt(v) + 1e-8): about lr whatever the gradient's size, so that noise shifts a step by
    lr times the gradient's relative error. That error is tiny except for gradients that nearly cancel;
    below ~1e-8 the eps term damps them. Per step, then, a weight moves by a small fraction of lr from
    noise: 5% of the summed learning rate (LR_SUM; atol ~1.9e-5 here) leaves a wide margin (seen:
    ~4e-7). Wrong shards or unsynced gradients show up as O(lr) = 1e-4 differences: steps on other
    gradients. The unpruned weights do move by ~LR_SUM from the initial model (checked, > 10 atol),
    so the comparison is not trivially met."""
    from safetensors.numpy import load_file

    from edgekit.arch import module_names
    from edgekit.compress import compress
    from edgekit.compress.report import read_report
    from edgekit.zoo import load_torch, resolve

    model = _dropout_free_tiny_cls(tmp_path / "model")
    recipe = tmp_path / "ddp.yaml"
    recipe.write_text(RECIPE)
    env = {k: v for k, v in os.environ.items() if k not in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), "-m", "edgekit", "compress", str(model), "-o", str(tmp_path / "ddp"),
           "--recipe", str(recipe)]
    # the two-process run and the single-process reference run side by side: rank 1 idles while
    # rank 0 evaluates and exports, so this costs little more than the slower of the two
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        single = read_report(compress(str(model), tmp_path / "single", recipe=str(recipe), progress=False))
        out, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert out.count("wrote ") == 1, out  # only rank 0 reports
    assert not (tmp_path / "ddp.ckpt").exists() and not (tmp_path / "ddp.ckpt.tmp").exists()

    ddp_report = json.loads((tmp_path / "ddp" / "report.json").read_text())
    assert ddp_report["precision"] == single["precision"] == "int8"
    assert ddp_report["sparsity"]["layers"] == single["sparsity"]["layers"]

    a = load_file(str(tmp_path / "single" / "torch" / "model.safetensors"))
    b = load_file(str(tmp_path / "ddp" / "torch" / "model.safetensors"))
    init = load_file(str(model / "model.safetensors"))
    assert a.keys() == b.keys()
    atol = 0.05 * LR_SUM
    # the wrapper's module paths start "model." (the task model); the saved keys do not
    paths = {p.removeprefix("model.") + ".weight" for p in module_names(load_torch(resolve(str(model)))[0]).values()}
    linears = [k for k in a if k in paths]
    assert len(linears) == 12
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=0, atol=atol, err_msg=k)
    for k in linears:  # masks: identical, not merely close
        np.testing.assert_array_equal(a[k] == 0, b[k] == 0, err_msg=k)
        assert (a[k] == 0).mean() == pytest.approx(0.8, abs=0.02)
    # unpruned parameters (LayerNorms, biases, embeddings) moved by about the summed learning rate
    moved = max(float(np.abs(a[k] - init[k]).max()) for k in a if k not in linears)
    assert moved > 0.5 * LR_SUM  # = 10 atol

    qa = json.loads((tmp_path / "single" / "torch" / "quant.json").read_text())["layers"]
    qb = json.loads((tmp_path / "ddp" / "torch" / "quant.json").read_text())["layers"]
    assert qa.keys() == qb.keys()
    for n in qa:  # calibrated from weights that agree to ~1e-7
        assert qb[n]["x_zp"] == qa[n]["x_zp"] and qb[n]["x_scale"] == pytest.approx(qa[n]["x_scale"], rel=1e-5), n
