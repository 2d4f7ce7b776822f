"""One-shot activation-aware pruning with the least-squares refit (edgekit.compress.oneshot)."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from edgekit.arch import encoder, encoder_linears, num_layers
from edgekit.compress.oneshot import oneshot_prune, refit
from edgekit.compress.prune import mask_for
from edgekit.formats.native import is_4x1


def _inputs(n=400, k=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    # correlated inputs with a few large dimensions, as transformer activations have
    mix = torch.randn(k, k, generator=g) * 0.3 + torch.eye(k)
    x = torch.randn(n, k, generator=g) @ mix
    x[:, :3] *= 8
    return x


def test_refit_keeps_every_weight_when_nothing_is_pruned():
    x = _inputs()
    w = torch.randn(8, 24, generator=torch.Generator().manual_seed(1))
    out = refit(w, torch.ones_like(w), (x.T @ x).double(), damp=0.0)
    torch.testing.assert_close(out, w, rtol=1e-4, atol=1e-4)


def test_refit_beats_plain_masking_and_stays_inside_the_mask():
    x = _inputs()
    w = torch.randn(16, 24, generator=torch.Generator().manual_seed(2))
    keep = mask_for(w.abs(), 0.75, "4x1")
    H = (x.T @ x).double()
    w_ls = refit(w, keep, H, damp=1e-6)
    assert (w_ls[keep == 0] == 0).all()
    err_mask = ((x @ (w * keep).T - x @ w.T) ** 2).sum()
    err_ls = ((x @ w_ls.T - x @ w.T) ** 2).sum()
    assert err_ls < 0.9 * err_mask, (float(err_ls), float(err_mask))
    # and it is the least-squares optimum: no random perturbation inside the mask does better
    g = torch.Generator().manual_seed(3)
    for _ in range(5):
        d = torch.randn(w.shape, generator=g) * keep * 1e-2
        assert ((x @ (w_ls + d).T - x @ w.T) ** 2).sum() > err_ls


def test_refit_of_an_empty_row_is_zero():
    x = _inputs()
    w = torch.randn(8, 24)
    keep = torch.ones_like(w)
    keep[4:] = 0
    out = refit(w, keep, (x.T @ x).double())
    assert (out[4:] == 0).all() and (out[:4] != 0).any()


@pytest.mark.parametrize("refit_weights", [False, True])
def test_oneshot_prune_tiny_bert(refit_weights):
    from edgekit.data import load_dataset, tokenize
    from edgekit.zoo import load_torch, resolve

    model, tok = load_torch(resolve("tiny-bert"))
    model.eval()
    teacher = copy.deepcopy(model)
    f = tokenize(tok, load_dataset("bbc-news", "train").texts[:16], max_length=48)
    ids, mask = torch.from_numpy(f["input_ids"]), torch.from_numpy(f["attention_mask"])
    batches = [(ids[:8], mask[:8]), (ids[8:], mask[8:])]
    lins = encoder_linears(model)
    seen = []
    masks = oneshot_prune(model, lins, 0.8, "4x1", batches, refit_weights=refit_weights, progress=seen.append)
    assert set(masks) == set(lins) and seen
    for n, lin in lins.items():
        w = lin.weight.detach()
        assert (w[masks[n] == 0] == 0).all(), n
        assert is_4x1(w), n
        assert abs(float((masks[n] == 0).float().mean()) - 0.8) < 0.03, n
    with torch.no_grad():
        t, s = teacher(ids, mask), model(ids, mask)
    cos = torch.nn.functional.cosine_similarity(s, t, dim=-1)
    assert torch.isfinite(cos).all() and float(cos.mean()) > 0.0


def test_layerwise_reconstruction_moves_each_layer_towards_the_teacher():
    """After one-shot pruning, reconstruct_layers lowers every layer's error against the teacher's output of
    that layer (from the reconstructed layers' outputs below), keeps the pruned weights at zero, and brings the
    sentence embedding closer to the teacher's."""
    from edgekit.compress.oneshot import reconstruct_layers
    from edgekit.data import load_dataset, tokenize
    from edgekit.zoo import load_torch, resolve

    teacher, tok = load_torch(resolve("tiny-bert"))
    teacher.eval()
    student = copy.deepcopy(teacher)
    f = tokenize(tok, load_dataset("bbc-news", "train").texts[:48], max_length=48)
    ids, mask = torch.from_numpy(f["input_ids"]), torch.from_numpy(f["attention_mask"])
    lins = encoder_linears(student)
    masks = oneshot_prune(student, lins, 0.8, "4x1", [(ids[:16], mask[:16])], refit_weights=False)
    with torch.no_grad():
        hid = teacher.encoder(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states
        before = teacher(ids, mask), student(ids, mask)
    enc = encoder(student)
    layers = [layer.block for layer in enc.layers]
    real = mask.bool()

    def errors():  # each layer's error on the input the student layers below give it
        out, h = [], hid[0]
        with torch.no_grad():
            for i, layer in enumerate(layers):
                h = enc.run_layer(layer.eval(), h, mask)
                out.append(float(((h - hid[i + 1])[real] ** 2).mean()))
        return out

    e0 = errors()
    wmasks = [{lins[n]: masks[n] for n in lins if n.startswith(f"layers.{i}.")} for i in range(len(layers))]
    seen = []
    final = reconstruct_layers(enc, hid[0], list(hid[1:]), mask, wmasks, steps=30, lr=1e-3, batch=8,
                               progress=seen.append)
    e1 = errors()
    assert len(final) == len(layers) == len(seen) and all(math.isfinite(x) for x in final)
    assert all(a < b for a, b in zip(e1, e0)), (e0, e1)
    for n, lin in lins.items():
        assert (lin.weight.detach()[masks[n] == 0] == 0).all(), n
    cos = torch.nn.functional.cosine_similarity
    with torch.no_grad():
        after = student.eval()(ids, mask)
    assert float(cos(after, before[0], dim=-1).mean()) > float(cos(before[1], before[0], dim=-1).mean())


# ------------------------------------------------------------------------------------------- prune stage
@pytest.mark.parametrize("stage, match", [
    ({"type": "prune", "pattern": "head", "oneshot": True}, "prune.oneshot: applies to patterns 4x1, 4x4, unstructured"),
    ({"type": "prune", "criterion": "movement", "oneshot": True}, "prune.oneshot: uses its own criterion"),
    ({"type": "prune", "oneshot": True, "oneshot_samples": 0}, "oneshot_samples"),
    ({"type": "prune", "layerwise_steps": 10}, "prune.layerwise_steps: applies after one-shot pruning only"),
    ({"type": "prune", "oneshot": True, "layerwise_steps": 10, "layerwise_samples": 4}, "layerwise_samples"),
])
def test_oneshot_config_errors_name_the_field(stage, match):
    from edgekit.compress.config import recipe_from_dict
    from edgekit.errors import InputError

    with pytest.raises(InputError, match=match):
        recipe_from_dict({"stages": [stage]})


@pytest.mark.parametrize("layerwise", [0, 4])
def test_prune_stage_oneshot_then_fixed_masks(tmp_path, layerwise):
    """The prune stage with oneshot (and layer-wise reconstruction): final 4x1 masks before the first step,
    unchanged by training."""
    from edgekit.compress.config import recipe_from_dict
    from edgekit.compress.stages.distill import objective
    from edgekit.compress.stages.prune import run_prune
    from edgekit.compress.training import Run
    from edgekit.zoo import load_torch, resolve

    teacher, tok = load_torch(resolve("tiny-bert"))
    teacher.eval()
    rec = recipe_from_dict({"batch": 4, "max_length": 32, "stages": [
        {"type": "distill"}, {"type": "prune", "sparsity": 0.8, "steps": 3, "oneshot": True, "oneshot_samples": 20,
                              "layerwise_steps": layerwise, "layerwise_samples": 24}]})
    run = Run(rec, objective(rec), teacher, copy.deepcopy(teacher), tok, "feature-extraction", "bbc-news", None, tmp_path / "ckpt",
              progress=False)
    seen = []
    orig = run.train

    def train(steps, lr, desc, on_step=None, start=0, **kw):
        seen.append({n: m.clone() for n, m in run.pruner.masks.items()})  # masks when training starts
        orig(steps, lr, desc, on_step, start, **kw)

    run.train = train
    out = run_prune(run, rec.stage("prune"))
    assert out["oneshot"]["samples"] == 20 and abs(out["oneshot"]["sparsity"] - 0.8) < 0.02
    assert abs(out["sparsity"] - 0.8) < 0.02 and out["steps"] == 3
    if layerwise:
        lw = out["oneshot"]["layerwise"]
        assert lw["samples"] == 24 and lw["steps"] == 4 and len(lw["final_loss"]) == num_layers(run.student)
    else:
        assert "layerwise" not in out["oneshot"]
    lins = encoder_linears(run.student)
    for n, lin in lins.items():
        assert torch.equal(run.pruner.masks[n], seen[0][n]), n  # the one-shot masks are the final ones
        assert (lin.weight.detach()[run.pruner.masks[n] == 0] == 0).all() and is_4x1(lin.weight.detach()), n


def test_report_markdown_rounds_and_dashes_missing_figures():
    """Feature-extraction stages have a cosine but no probe accuracy: '-' rather than 'nan', 4 decimals."""
    from edgekit.compress.report import report_markdown

    r = {"model": "m", "recipe": "r", "task": "feature-extraction", "data": "bbc-news", "precision": "int8",
         "weight_bits": 8, "seconds": 1.0, "baseline": {"accuracy": 0.95774},
         "stages": [{"stage": "prune", "embedding_cosine": 0.747512246, "sparsity": 0.8, "seconds": 2.0},
                    {"stage": "quantize", "accuracy": float("nan"), "embedding_cosine": 0.74764, "seconds": 3.0}],
         "compressed": {"accuracy": 0.946009, "embedding_cosine": 0.747640776}, "sparsity": {"total": 0.8}}
    md = report_markdown(r)
    assert "| prune | - | 0.7475 | 0.800 | 2.0 |" in md and "| quantize | - | 0.7476 |" in md
    assert "| **compressed** | **0.9460** | 0.7476 |" in md and "nan" not in md
