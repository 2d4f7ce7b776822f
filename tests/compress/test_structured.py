"""Structured pruning (heads, FFN neurons), layer dropping and the int8 sensitivity pass."""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from edgekit.arch import encoder, encoder_linears
from edgekit.compress.config import recipe_from_dict
from edgekit.compress.prune import Pruner, group_scores, structured_groups
from edgekit.errors import InputError
from edgekit.formats import fake_quant as FQ
from edgekit.formats.native import is_4x1


def _tiny(name="tiny-bert"):
    from edgekit.zoo import load_torch, resolve

    return load_torch(resolve(name))


def _feeds(tok, n=6, seq=48):
    from edgekit.data import load_dataset, tokenize

    f = tokenize(tok, load_dataset("bbc-news", "test").texts[:n], max_length=seq)
    f["attention_mask"][1, 30:] = 0
    f["input_ids"][1, 30:] = tok.pad_token_id
    return f


def _cos(a, b):
    return np.sum(a * b, 1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# ------------------------------------------------------------------------------------------- config
@pytest.mark.parametrize("stage, match", [
    ({"type": "prune", "pattern": "heads"}, "pattern: Input should be .*'head', 'neuron' or 'head\\+neuron'"),
    ({"type": "prune", "pattern": "head", "head_sparsity": 0.3}, "prune.head_sparsity: applies to pattern 'head\\+neuron'"),
    ({"type": "prune", "pattern": "neuron", "scope": "hardware-aware"}, "prune.scope: 'hardware-aware' does not apply"),
    ({"type": "distill", "student_layers": [2, 0]}, "distill.student_layers: must be sorted and without repeats"),
    ({"type": "prune", "kind_sparsity": {"qk": 0.9}}, "prune.kind_sparsity: unknown kind\\(s\\) 'qk'; allowed: q, k, v"),
    ({"type": "prune", "kind_sparsity": {"q": 1.0}}, "prune.kind_sparsity: q: 1.0 is not in \\[0, 1\\)"),
    ({"type": "prune", "scope": "global", "kind_sparsity": {"q": 0.9}}, "prune.kind_sparsity: applies with scope 'per-layer'"),
    ({"type": "prune", "pattern": "neuron", "kind_sparsity": {"q": 0.9}}, "prune.kind_sparsity: applies to patterns 4x1"),
    ({"type": "prune", "kind_sparsity": dict.fromkeys(["q", "k", "v", "o", "ffn_in", "ffn_out"], 0.8)},
     "prune.kind_sparsity: lists every kind"),
    ({"type": "prune", "layer_sparsity": {-1: 0.5}}, "prune.layer_sparsity: layer -1: layer indices start at 0"),
    ({"type": "prune", "layer_sparsity": {5: 1.0}}, "prune.layer_sparsity: layer 5: 1.0 is not in \\[0, 1\\)"),
    ({"type": "prune", "scope": "global", "layer_sparsity": {5: 0.5}}, "prune.layer_sparsity: applies with scope 'per-layer'"),
    ({"type": "prune", "pattern": "head", "layer_sparsity": {5: 0.5}}, "prune.layer_sparsity: applies to patterns 4x1"),
    ({"type": "distill", "student_layers": [1, 1]}, "distill.student_layers: must be sorted and without repeats"),
    ({"type": "distill", "student_layers": []}, "distill.student_layers: must list at least one"),
    ({"type": "distill", "student_layers": [-1, 0]}, "distill.student_layers: layer indices start at 0"),
    ({"type": "quantize", "accuracy_budget": -0.5}, "quantize.accuracy_budget: Input should be greater than or equal to 0"),
    ({"type": "quantize", "sensitivity_samples": 0}, "quantize.sensitivity_samples"),
    ({"type": "quantize", "fp32_layers": ["layers.0.fc"]}, "quantize.fp32_layers: 'layers.0.fc' is not a native Linear"),
])
def test_new_fields_are_validated_naming_the_field(stage, match):
    with pytest.raises(InputError, match=match):
        recipe_from_dict({"stages": [stage]})


def test_structured_recipe_loads():
    from edgekit.compress.config import load_recipe

    r = load_recipe("structured")
    p = r.stage("prune")
    assert p.pattern == "head+neuron" and p.head_sparsity is not None and 0 < p.sparsity < 1
    assert recipe_from_dict({"stages": [{"type": "quantize", "accuracy_budget": 0.5}]}).stage("quantize").sensitivity_samples == 128


# ------------------------------------------------------------------------------------------- masks
def _head_units(w_rows, heads):
    """[heads] bool: the head's block of rows is entirely non-zero (True) or entirely zero (False); fails otherwise."""
    blocks = (w_rows != 0).reshape(heads, -1)
    assert bool((blocks.all(1) | ~blocks.any(1)).all()), "a head block is partly pruned"
    return blocks.all(1)


@pytest.mark.parametrize("pattern", ["head", "neuron", "head+neuron"])
def test_structured_masks_hit_their_units_and_target(pattern):
    model, _ = _tiny()
    lin = encoder_linears(model)
    with torch.no_grad():
        for m in lin.values():  # the random model's biases start at 0; give them values to see them pruned
            m.bias.normal_()
    before = {n: (m.weight.detach().clone(), m.bias.detach().clone()) for n, m in lin.items()}
    p = Pruner(lin, pattern, heads=4, head_sparsity=0.25 if pattern == "head+neuron" else None)
    p.update(1.0, 0.5)
    kept = p.kept()
    for i in range(2):
        L = f"layers.{i}."
        if "head" in pattern:
            keep = _head_units(lin[L + "q"].weight, 4)
            assert int(keep.sum()) == (3 if pattern == "head+neuron" else 2)  # 25% / 50% of 4 heads
            for part in ("k", "v"):
                assert torch.equal(_head_units(lin[L + part].weight, 4), keep)
            assert torch.equal(_head_units(lin[L + "o"].weight.t(), 4), keep)  # o: the head's input columns
            for part in ("q", "k", "v"):
                b = lin[L + part].bias.detach().reshape(4, -1)
                assert (b[~keep] == 0).all() and (b[keep] != 0).all()
            assert kept["heads"]["kept"][i] == int(keep.sum()) and kept["heads"]["of"] == 4
            # magnitude: every kept head's L2 norm over its unit >= every pruned head's
            g = next(g for g in structured_groups(lin, "head", 4) if g.name == L + "heads")
            s = group_scores(g, {n: w for n, (w, _) in before.items()})
            assert s[keep].min() >= s[~keep].max()
        else:
            for part in ("q", "k", "v", "o"):
                assert torch.equal(lin[L + part].weight, before[L + part][0])
        if "neuron" in pattern:
            w_in, w_out, b_in = lin[L + "ffn_in"].weight, lin[L + "ffn_out"].weight, lin[L + "ffn_in"].bias
            dead = (w_in == 0).all(1)
            assert int(dead.sum()) == 64 and int(dead.sum()) % 4 == 0  # 50% of 128, in multiples of 4
            assert ((w_in != 0).all(1) | dead).all()  # whole rows only
            assert torch.equal((w_out == 0).all(0), dead) and (b_in[dead] == 0).all()
            assert kept["neurons"]["kept"][i] == 64
        else:
            assert torch.equal(lin[L + "ffn_in"].weight, before[L + "ffn_in"][0])


def test_structured_pruning_is_gradual_and_movement_scored():
    model, _ = _tiny()
    lin = encoder_linears(model)
    p = Pruner(lin, "head", criterion="movement", heads=4)
    # movement: pretend heads 2 and 3 of layer 0 moved toward zero (negative score); they must go first
    for n in p.movement:
        p.movement[n].fill_(1.0)
    for part in ("q", "k", "v"):
        p.movement[f"layers.0.{part}"][32:] = -1.0
    p.movement["layers.0.o"][:, 32:] = -1.0
    p.update(0.5, 0.75)  # 0.375 of 4 heads -> 2
    first = _head_units(lin["layers.0.q"].weight, 4)
    assert first.tolist() == [True, True, False, False]
    p.update(1.0, 0.75)  # 3 of 4 heads; the two already pruned stay pruned
    again = _head_units(lin["layers.0.q"].weight, 4)
    assert int(again.sum()) == 1 and not (again & ~first).any()
    # never the last head, even at a target that rounds to all of them
    p.update(1.0, 0.99)
    assert p.kept()["heads"]["kept"] == [1, 1]


def test_global_structured_allocation_one_threshold_across_layers():
    from edgekit.compress.allocation import global_allocation as _global_allocation

    model, _ = _tiny()
    lin = encoder_linears(model)
    with torch.no_grad():
        lin["layers.1.ffn_in"].weight.mul_(0.01)  # layer 1's neurons are much smaller: global pruning takes them
        lin["layers.1.ffn_out"].weight.mul_(0.01)
    alloc = _global_allocation(lin, 0.5, "neuron", 4)
    assert set(alloc) == {"layers.0.neurons", "layers.1.neurons"}
    assert alloc["layers.1.neurons"] == pytest.approx(1.0) and alloc["layers.0.neurons"] == pytest.approx(0.0)
    p = Pruner(lin, "neuron", allocation=alloc, heads=4)
    p.update(1.0, 0.5)
    assert p.kept()["neurons"]["kept"] == [128, 4]  # capped: a layer keeps at least one block of 4 neurons


def test_kind_allocation_fixes_the_listed_kinds_and_meets_the_total():
    from edgekit.compress.allocation import kind_allocation as _kind_allocation
    from edgekit.compress.prune import Pruner, total_sparsity

    model, _ = _tiny()
    lin = encoder_linears(model)
    alloc = _kind_allocation(lin, 0.8, {"q": 0.95, "k": 0.95})
    assert all(alloc[n] == 0.95 for n in lin if n.endswith((".q", ".k")))
    rest = {alloc[n] for n in lin if not n.endswith((".q", ".k"))}
    assert len(rest) == 1 and 0.7 < rest.pop() < 0.8  # the others give up the q, k surplus
    p = Pruner(lin, "4x1", allocation=alloc)
    p.update(1.0, 0.8)
    p.apply()
    assert total_sparsity(lin) == pytest.approx(0.8, abs=0.01)
    assert float((lin["layers.0.q"].weight == 0).float().mean()) == pytest.approx(0.95, abs=0.01)
    with pytest.raises(InputError, match="prune.kind_sparsity .* leave 1.600 for the other Linears .* must be in \\[0, 1\\)"):
        _kind_allocation(lin, 0.8, {"q": 0.0, "k": 0.0, "v": 0.0, "o": 0.0})  # FFN alone cannot reach 80%


def test_layer_sparsity_fixes_whole_layers_over_kinds_and_meets_the_total():
    from edgekit.compress.allocation import kind_allocation as _kind_allocation
    from edgekit.compress.prune import Pruner, total_sparsity

    model, _ = _tiny()
    lin = encoder_linears(model)
    last = max(int(n.split(".")[1]) for n in lin)
    alloc = _kind_allocation(lin, 0.6, {"q": 0.9}, {last: 0.4})
    assert all(alloc[n] == 0.4 for n in lin if n.startswith(f"layers.{last}."))  # the layer's value wins over q's
    assert all(alloc[n] == 0.9 for n in lin if n.endswith(".q") and not n.startswith(f"layers.{last}."))
    rest = {alloc[n] for n in lin if not n.startswith(f"layers.{last}.") and not n.endswith(".q")}
    assert len(rest) == 1 and rest.pop() > 0.6
    p = Pruner(lin, "4x1", allocation=alloc)
    p.update(1.0, 0.6)
    p.apply()
    assert total_sparsity(lin) == pytest.approx(0.6, abs=0.01)
    assert float((lin[f"layers.{last}.ffn_in"].weight == 0).float().mean()) == pytest.approx(0.4, abs=0.01)
    with pytest.raises(InputError, match=f"prune.layer_sparsity names layer\\(s\\) \\[{last + 1}\\]; this model's encoder "
                                         f"layers are 0..{last}"):
        _kind_allocation(lin, 0.8, {}, {last + 1: 0.5})
    with pytest.raises(InputError, match="fix every encoder Linear"):
        _kind_allocation(lin, 0.8, {}, dict.fromkeys(range(last + 1), 0.8))


def _remove_head(attn_self, attn_out, head: int, heads: int):
    from transformers.pytorch_utils import prune_linear_layer

    d = attn_self.query.weight.shape[0] // heads
    idx = torch.tensor([i for i in range(heads * d) if i // d != head])
    for part in ("query", "key", "value"):
        setattr(attn_self, part, prune_linear_layer(getattr(attn_self, part), idx, dim=0))
    attn_out.dense = prune_linear_layer(attn_out.dense, idx, dim=1)
    attn_self.num_attention_heads -= 1
    attn_self.all_head_size -= d


def test_masked_head_equals_the_head_removed():
    """A head pruned by masks gives exactly the model with that head physically removed (and a neuron too)."""
    from transformers.pytorch_utils import prune_linear_layer

    from edgekit.compress.prune import group_masks

    model, tok = _tiny("tiny-bert-cls")
    model.eval()
    with torch.no_grad():  # non-zero biases, so a pruned unit's bias must go too
        for m in encoder_linears(model).values():
            m.bias.normal_(0, 0.5)
    removed = copy.deepcopy(model)
    lin = encoder_linears(model)
    p = Pruner(lin, "head+neuron", heads=4)
    groups = {g.name: g for g in p.groups}
    keep_h = torch.tensor([True, False, True, True])
    keep_n = torch.ones(128, dtype=torch.bool)
    keep_n[[3, 17, 90, 127]] = False
    p.masks.update(group_masks(groups["layers.0.heads"], keep_h, {n: m.weight.shape for n, m in lin.items()}))
    p.masks.update(group_masks(groups["layers.1.neurons"], keep_n, {n: m.weight.shape for n, m in lin.items()}))
    p.apply()
    layers = removed.model.bert.encoder.layer
    _remove_head(layers[0].attention.self, layers[0].attention.output, 1, 4)
    idx = keep_n.nonzero().flatten()
    layers[1].intermediate.dense = prune_linear_layer(layers[1].intermediate.dense, idx, dim=0)
    layers[1].output.dense = prune_linear_layer(layers[1].output.dense, idx, dim=1)
    f = _feeds(tok)
    ids, mask = torch.from_numpy(f["input_ids"]), torch.from_numpy(f["attention_mask"])
    with torch.no_grad():
        h = model.model.bert.embeddings(input_ids=ids)
        # the pruned head's slice of the attention context is exactly zero, so o-proj sees nothing of it
        ctx = model.model.bert.encoder.layer[0].attention.self(h)[0]
        assert (ctx.reshape(*ctx.shape[:2], 4, -1)[:, :, 1] == 0).all()
        a, b = model(ids, mask), removed(ids, mask)
    assert layers[0].attention.self.query.weight.shape[0] == 48
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _write_artifact(model, tok, dest, task, qstate):
    from edgekit.artifact import load_artifact
    from edgekit.formats.native import write_native
    from edgekit.export import export_artifact

    def extra(d):
        if qstate:
            (d / "torch" / "quant.json").write_text(json.dumps(qstate))
        write_native(model, task, qstate, d / "native")
        return {"native": "native"}

    export_artifact(model, tok, dest, task=task, model_name="t", formats=(), extra_files=extra, progress=False)
    return load_artifact(dest)


@pytest.mark.parametrize("int8", [False, True])
def test_structured_model_runs_sparse_on_the_native_engine(tmp_path, int8):
    """head+neuron masks -> write_native gathers pruned neurons into 4x1 blocks; engine == torch."""
    from edgekit.formats.native import read_native
    from edgekit.runtimes import load

    model, tok = _tiny()
    lin = encoder_linears(model)
    Pruner(lin, "head+neuron", heads=4).update(1.0, 0.5)
    assert not is_4x1(lin["layers.0.ffn_in"].weight.detach())  # single rows: not 4x1 before gathering
    qstate = None
    if int8:
        fq = FQ.insert_fake_quant(model)
        with torch.no_grad():
            f = _feeds(tok, n=8)
            model(torch.from_numpy(f["input_ids"]), torch.from_numpy(f["attention_mask"]))
        FQ.finish_calibration(fq)
        qstate = FQ.quant_state(fq)
        FQ.remove_fake_quant(model)
    art = _write_artifact(model, tok, tmp_path / "a", "feature-extraction", qstate)
    cfg, t = read_native(art.path("native"))
    assert cfg["pattern"] == "4x1"
    for i in range(2):  # the 64 pruned neurons now fill the last 16 4-row blocks of ffn_in, whole
        w_in = t[f"layers.{i}.ffn_in.weight"]
        assert (w_in[64:] == 0).all() and (w_in[:64] != 0).any(1).all()
        assert (t[f"layers.{i}.ffn_in.bias"][64:] == 0).all() and (t[f"layers.{i}.ffn_out.weight"][:, 64:] == 0).all()
        if not int8:  # (int8 rounding may zero single small weights inside kept blocks; packing keeps those blocks)
            assert all(is_4x1(torch.from_numpy(t[f"layers.{i}.{x}.weight"])) for x in ("q", "k", "v", "o", "ffn_in"))
    f = _feeds(tok)
    s = load(art, "native", threads=2, precision="fp32")  # fp32 attention: the tight parity below
    assert s.precision == ("int8-sparse" if int8 else "fp32-sparse")
    out, ref = s.run(f), load(art, "torch", threads=1).run(f)
    assert _cos(out, ref).min() >= 0.9999
    np.testing.assert_allclose(out, ref, atol=1e-3 * np.abs(ref).max() + 1e-6)


# ------------------------------------------------------------------------------------------- layer dropping
def test_layer_dropping_builds_a_shallower_student_and_maps_layers():
    from edgekit.compress.config import DistillConfig
    from edgekit.arch import num_layers
    from edgekit.compress.distill import Distiller, default_relation_layer, forward_all
    from edgekit.compress.stages.distill import make_student, objective

    teacher, _ = _tiny("tiny-bert-cls")
    rec = recipe_from_dict({"stages": [{"type": "distill", "student_layers": [1]}]})
    student = make_student(teacher, objective(rec))
    assert num_layers(student) == 1 and num_layers(teacher) == 2
    assert encoder(student).base.config.num_hidden_layers == 1 and student.model.config.num_hidden_layers == 1
    assert encoder(teacher).base.config.num_hidden_layers == 2
    # student layer 0 starts as teacher layer 1 (not a copy of layer 0)
    w = encoder(student).layers[0].linears["ffn_in"].weight
    assert torch.equal(w, encoder(teacher).layers[1].linears["ffn_in"].weight)
    d = Distiller(teacher, student, rec.stage("distill"), "text-classification")
    assert d.layer_map == [1] and d.t_rel == 1 and d.s_rel == 0
    assert default_relation_layer(6, 3) == 3 and default_relation_layer(6, 6) == 5  # intermediate when shallower
    # hidden MSE pairs the embeddings, and student layer 0 with teacher layer 1 (hidden_states index 2)
    cfg = DistillConfig(logits_weight=0, label_weight=0, relation_weight=0, hidden_weight=1, student_layers=[1])
    ids, mask = torch.randint(1000, 5000, (2, 12)), torch.ones(2, 12, dtype=torch.long)
    _, parts = Distiller(teacher, student, cfg, "text-classification").loss(ids, mask)
    with torch.no_grad():
        _, t_hid, _ = forward_all(teacher, ids, mask, None)
        _, s_hid, _ = forward_all(student, ids, mask, None)
    expect = (((s_hid[0] - t_hid[0]) ** 2).mean() + ((s_hid[1] - t_hid[2]) ** 2).mean()) / 2
    assert parts["hidden"] == pytest.approx(float(expect), rel=1e-5) and parts["hidden"] > 0
    with pytest.raises(ValueError, match="layer map has 1 entries for a 2-layer student"):
        Distiller(teacher, copy.deepcopy(teacher), cfg, "text-classification")
    with pytest.raises(InputError, match=r"distill.student_layers: \[2\] out of range; the teacher has 2 layers"):
        make_student(teacher, objective(recipe_from_dict({"stages": [{"type": "distill", "student_layers": [0, 2]}]})))


# ------------------------------------------------------------------------------------------- sensitivity
def test_sensitivity_pass_real_probe_meets_the_budget():
    from edgekit.compress.sensitivity import ValidationProbe, sensitivity_pass

    teacher, tok = _tiny()
    with torch.no_grad():  # at its init scale the random model's embeddings barely depend on the input
        for m in encoder_linears(teacher).values():
            m.weight.mul_(5.0)
    student = copy.deepcopy(teacher)
    fq = FQ.insert_fake_quant(student)
    with torch.no_grad():
        f = _feeds(tok, n=8, seq=32)
        student(torch.from_numpy(f["input_ids"]), torch.from_numpy(f["attention_mask"]))
    FQ.finish_calibration(fq)
    probe = ValidationProbe(student, teacher, tok, "feature-extraction", "bbc-news", 32, 16)
    assert probe.n == 16 and probe.metric_name == "embedding_cosine"
    first = sensitivity_pass(fq, probe, budget=1e9)  # within any budget: nothing measured per layer
    assert first["keep_fp32"] == [] and first["costs"] == {} and first["fp32"] == pytest.approx(100.0)
    assert first["loss"] > 0  # int8 costs something on this model, so a small budget forces fp32 layers
    budget = first["loss"] / 2
    rec = sensitivity_pass(fq, probe, budget=budget)
    assert set(rec["costs"]) == set(fq) and 1 <= len(rec["keep_fp32"]) < len(fq)
    assert rec["final_loss"] <= budget < rec["loss"]
    assert rec["evaluations"] == 2 + len(fq) + len(rec["keep_fp32"])
    assert all(m.mode == "quant" for m in fq.values())  # modes restored
    # the measured final equals the model with exactly those layers fp32
    for n in rec["keep_fp32"]:
        fq[n].mode = "off"
    assert probe.metric(probe.outputs()) == pytest.approx(rec["final"], abs=1e-3)


class FakeProbe:
    """Metric 100 minus a fixed cost per quantized layer (the fake-quant modes say which are)."""

    metric_name = "accuracy"
    n = 16
    COSTS = {"layers.0.ffn_out": 3.0, "layers.0.q": 2.0}

    def __init__(self, student, *args, **kwargs):
        self.fq = [m for m in student.modules() if isinstance(m, FQ.FakeQuantLinear)]

    def outputs(self):
        return np.array([sum(self.COSTS.get(m.name, 0.05) for m in self.fq if m.mode == "quant")])

    def metric(self, out):
        return 100.0 - float(out[0])

    def divergence(self, out, ref):
        return float(out[0])


def test_sensitivity_greedy_keeps_costliest_until_within_budget():
    from edgekit.compress.sensitivity import sensitivity_pass

    model, _ = _tiny()
    fq = FQ.insert_fake_quant(model)
    for m in fq.values():
        m.mode = "quant"
    rec = sensitivity_pass(fq, FakeProbe(model), budget=1.0)
    assert rec["loss"] == pytest.approx(5.5) and rec["costs"]["layers.0.ffn_out"]["points"] == pytest.approx(3.0)
    assert rec["keep_fp32"] == ["layers.0.ffn_out", "layers.0.q"] and rec["final_loss"] == pytest.approx(0.5)
    assert sensitivity_pass(fq, FakeProbe(model), budget=0.0)["keep_fp32"].__len__() == 12
    assert sensitivity_pass(fq, FakeProbe(model), budget=6.0)["keep_fp32"] == []


# ------------------------------------------------------------------------------------------- end to end
RECIPE = """
name: struct-test
batch: 8
max_length: 64
checkpoint_every: 5
stages:
  - type: distill
    student_layers: [1]
  - type: prune
    pattern: head+neuron
    sparsity: 0.5
    head_sparsity: 0.5
    steps: 6
    update_every: 2
  - type: quantize
    calibration_samples: 16
    qat_steps: 2
    accuracy_budget: 1.0
    sensitivity_samples: 16
"""


@pytest.fixture(scope="module")
def dropped_structured_artifact(tmp_path_factory):
    """tiny-bert-cls: keep teacher layer 1 only, prune half its heads and neurons, int8 with a (fake)
    sensitivity pass that must keep two Linears fp32."""
    from edgekit.compress import compress, sensitivity

    root = tmp_path_factory.mktemp("s")
    (root / "r.yaml").write_text(RECIPE)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(sensitivity, "ValidationProbe", FakeProbe)
        art = compress("tiny-bert-cls", root / "out", recipe=root / "r.yaml", progress=False)
    return root / "out", art


@pytest.mark.slow
@pytest.mark.ci
def test_dropped_structured_student_end_to_end(dropped_structured_artifact):
    """~30-60 s: one whole compress run (training, ONNX + OpenVINO int8 export, per-runtime scoring)."""
    from edgekit.formats.native import read_native
    from edgekit.runtimes import load, load_tokenizer

    out, _ = dropped_structured_artifact
    rep = json.loads((out / "report.json").read_text())
    assert rep["student_layers"] == [1] and rep["precision"] == "int8"
    stages = {s["stage"]: s for s in rep["stages"]}
    assert stages["distill"]["layer_map"] == [1] and stages["distill"]["relation_teacher_layer"] == 1
    assert stages["prune"]["kept"] == {"heads": {"kept": [2], "of": 4}, "neurons": {"kept": [64], "of": 128}}
    sens = stages["quantize"]["sensitivity"]
    assert sens["keep_fp32"] == ["layers.0.ffn_out", "layers.0.q"] and len(sens["costs"]) == 6
    assert stages["quantize"]["fp32_layers"] == ["layers.0.ffn_out", "layers.0.q"]
    assert len(rep["sparsity"]["layers"]) == 6 and "Heads kept per layer" in (out / "report.md").read_text()
    # the chosen fp32 layers reach every export: no qparams, fp32 in the native file
    quant = json.loads((out / "torch" / "quant.json").read_text())["layers"]
    assert set(quant) == {"layers.0.k", "layers.0.v", "layers.0.o", "layers.0.ffn_in"}
    cfg, t = read_native(out / "native")
    assert cfg["layers"] == 1 and cfg["pattern"] == "4x1" and cfg["fp32_layers"] == ["layers.0.ffn_out", "layers.0.q"]
    assert t["layers.0.q.weight"].dtype == np.float32 and t["layers.0.k.weight"].dtype == np.int8
    import onnx

    g = onnx.load(str(out / "onnx" / "model.onnx")).graph
    producer = {o: n.op_type for n in g.node for o in n.output}
    w_src = {n.name.split("layer.0/")[1]: producer.get(n.input[1], "initializer") for n in g.node
             if n.op_type == "MatMul" and "layer.0/" in n.name and n.name.endswith("dense/MatMul") or
             n.op_type == "MatMul" and n.name.endswith(("query/MatMul", "key/MatMul"))}
    assert w_src["attention/self/query/MatMul"] == "initializer" and w_src["output/dense/MatMul"] == "initializer"
    assert w_src["attention/self/key/MatMul"] == "DequantizeLinear" == w_src["intermediate/dense/MatMul"]
    hf = json.loads((out / "torch" / "config.json").read_text())
    assert hf["num_hidden_layers"] == 1
    # the shallower, structured, mixed-precision student: native engine == torch fake-quant
    f = _feeds(load_tokenizer(out), n=8, seq=64)
    ref = load(out, "torch", threads=1).run(f)
    nat = load(out, "native", threads=2, precision="fp32")  # fp32 attention: the tight parity below
    assert nat.precision == "int8-sparse"
    assert _cos(nat.run(f), ref).min() >= 0.9999
    for rt in ("onnxruntime", "openvino"):
        assert _cos(load(out, rt, threads=1).run(f), ref).min() >= 0.99, rt
