"""Compression pieces on tiny random BERTs (fast) and the whole pipeline with the `quick` recipe."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from edgekit.arch import encoder_linears
from edgekit.compress.config import load_recipe, recipe_from_dict
from edgekit.compress.prune import Pruner, cubic_sparsity, mask_for
from edgekit.errors import InputError
from edgekit.formats.native import is_4x1


@pytest.mark.parametrize("data, match", [
    ({"stages": [{"type": "prune", "pattern": "3x3"}]}, "pattern: Input should be '4x1', '4x4', 'unstructured', '2:4', 'head', 'neuron' or 'head\\+neuron'"),
    ({"stages": [{"type": "frobnicate"}]}, "unknown stage type 'frobnicate'; allowed: prune, distill, quantize"),
    ({"stages": [{"type": "prune", "sparsity": 1.5}]}, "sparsity"),
    ({"stages": [{"type": "quantize"}, {"type": "prune"}]}, "quantize stage must be last"),
    ({"stages": [{"type": "prune", "bogus": 1}]}, "bogus: unknown field"),
    ({"train_windows": 0, "stages": []}, "train_windows: Input should be greater than or equal to 1"),
    ({"augment_tokens": 1.0, "stages": []}, "augment_tokens: Input should be less than 1"),
])
def test_recipe_errors_name_the_field(data, match):
    with pytest.raises(InputError, match=match):
        recipe_from_dict(data)


def test_builtin_recipes_load_and_unknown_is_clear(tmp_path):
    r = load_recipe()
    assert r.name == "fast-distilbert" and r.stage("prune").sparsity == 0.8 and r.stage("prune").pattern == "4x1"
    assert load_recipe("quick").stage("quantize").qat_steps == 2
    fe = load_recipe("feature-extraction")  # searched sparsity at a latency target, distilled on more text
    assert fe.train_windows == 4 and fe.stage("distill").embedding_weight == 4.0
    fe_prune = fe.stage("prune")
    assert fe_prune.scope == "search" and fe_prune.openvino_speedup == 3.3 and fe_prune.oneshot
    assert fe.distill_data.source == "english-mix" and fe.distill_data.passages == 4000
    long = load_recipe("feature-extraction-long")  # the fixed-80% recipe with 3x the steps
    assert long.stage("prune").layer_sparsity == {5: 0.3} and long.stage("prune").steps == 1800
    assert long.stage("prune").kind_sparsity == {"q": 0.95, "k": 0.95, "v": 0.85, "o": 0.85}
    # the same losses; the searched recipe trains its student without dropout, after a warm-up, with dense allowed
    assert long.stage("distill") == fe.stage("distill").model_copy(update={"student_dropout": True})
    assert long.stage("quantize") == fe.stage("quantize")
    assert not fe.stage("distill").student_dropout and fe_prune.warmup == 30 and 0.0 in fe_prune.search_grid
    with pytest.raises(InputError, match="unknown recipe 'nope'; built-in: fast-distilbert, feature-extraction, "
                                         "feature-extraction-long, "):
        load_recipe("nope")
    bad = tmp_path / "r.yaml"
    bad.write_text("stages: [")
    with pytest.raises(InputError, match="not valid YAML"):
        load_recipe(bad)


def test_cubic_schedule():
    assert cubic_sparsity(0, 100, 0.8) == 0.0
    assert cubic_sparsity(100, 100, 0.8) == pytest.approx(0.8)
    vals = [cubic_sparsity(t, 100, 0.8) for t in range(101)]
    assert all(b >= a for a, b in zip(vals, vals[1:]))
    assert vals[50] == pytest.approx(0.8 * (1 - 0.5**3))


@pytest.mark.parametrize("pattern", ["4x1", "unstructured"])
def test_masks_hit_target_and_pattern(pattern):
    torch.manual_seed(0)
    w = torch.randn(64, 48)
    m = mask_for(w, 0.8, pattern)
    assert (1 - m.mean()).item() == pytest.approx(0.8, abs=0.01)
    if pattern == "4x1":
        assert is_4x1(w * m) and not is_4x1(w * mask_for(w, 0.8, "unstructured"))
    # magnitude criterion: every kept unit scores at least as high as every pruned one
    if pattern == "unstructured":
        assert w.abs()[m > 0].min() >= w.abs()[m == 0].max()


@pytest.mark.parametrize("shape", [(64, 48), (66, 50)])  # 50 inputs, 66 outputs: partial blocks at the edges
def test_four_by_four_blocks(shape):
    torch.manual_seed(0)
    w = torch.randn(*shape)
    m = mask_for(w, 0.8, "4x4")
    n, k = shape
    mp = torch.nn.functional.pad(m, (0, (-k) % 4, 0, (-n) % 4))
    blocks = mp.reshape(mp.shape[0] // 4, 4, mp.shape[1] // 4, 4)
    # every 4x4 block (cut at the edges) all kept or all pruned, and a 4x4 mask is a valid 4x1 mask
    kept = blocks.amax((1, 3)) > 0
    assert torch.equal(m, kept.float().repeat_interleave(4, 0).repeat_interleave(4, 1)[:n, :k])
    assert is_4x1(w * m) and not is_4x1(w * mask_for(w, 0.8, "unstructured"))
    assert (1 - m.mean()).item() == pytest.approx(0.8, abs=0.03)
    # magnitude: every kept block's L2 norm >= every pruned one's (whole blocks only)
    norms = torch.nn.functional.pad(w, (0, (-k) % 4, 0, (-n) % 4)).reshape(blocks.shape).pow(2).sum((1, 3))
    assert norms[kept].min() >= norms[~kept].max()


def test_two_four_pattern():
    w = torch.randn(8, 16)
    m = mask_for(w, 0.5, "2:4")
    assert (m.reshape(8, 4, 4).sum(-1) == 2).all()


def test_pruner_gradual_keeps_pruned_pruned():
    from edgekit.zoo import load_torch, resolve

    model, _ = load_torch(resolve("tiny-bert"))
    lin = encoder_linears(model)
    assert len(lin) == 12 and set(n.split(".")[-1] for n in lin) == {"q", "k", "v", "o", "ffn_in", "ffn_out"}
    p = Pruner(lin, "4x1")
    p.update(0.5, 0.8)
    first = {n: m.clone() for n, m in p.masks.items()}
    p.update(1.0, 0.8)
    for n, m in p.masks.items():
        assert (m <= first[n]).all() and is_4x1(lin[n].weight.detach())
    assert np.mean(list(p.sparsity().values())) == pytest.approx(0.8, abs=0.02)


def test_relation_loss_zero_for_identical_positive_otherwise():
    from edgekit.compress.config import DistillConfig
    from edgekit.compress.distill import Distiller
    from edgekit.zoo import load_torch, resolve

    teacher, tok = load_torch(resolve("tiny-bert-cls"))
    import copy

    student = copy.deepcopy(teacher)
    cfg = DistillConfig(logits_weight=1, label_weight=0, hidden_weight=1, relation_weight=1)
    d = Distiller(teacher, student, cfg, "text-classification")
    ids = torch.randint(1000, 5000, (2, 16))
    mask = torch.ones(2, 16, dtype=torch.long)
    _, parts = d.loss(ids, mask)
    assert all(abs(v) < 1e-6 for v in parts.values()), parts
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    _, parts = d.loss(ids, mask)
    assert parts["relation"] > 1e-5 and parts["hidden"] > 1e-5 and parts["logits"] > 0


def test_compress_end_to_end_report_and_artifact(quick_cls_artifact):
    from edgekit.artifact import load_artifact

    out, report = quick_cls_artifact
    saved = json.loads((out / "report.json").read_text())
    for key in ("task", "data", "recipe", "baseline", "compressed", "sparsity", "precision", "stages", "seconds"):
        assert key in saved
    assert saved["precision"] == "int8" and saved["sparsity"]["pattern"] == "4x1"
    assert saved["sparsity"]["total"] == pytest.approx(0.8, abs=0.02)
    assert len(saved["sparsity"]["layers"]) == 12 and "accuracy" in saved["compressed"]
    art = load_artifact(out)  # checksums verify, report included
    assert {"torch", "onnx", "openvino", "native"} <= set(art.manifest.formats)
    assert "report.json" in art.manifest.files and (out / "report.md").is_file()
    assert "report.png" in art.manifest.files and (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "](report.png)" in (out / "report.md").read_text()
    assert not out.with_name(out.name + ".ckpt").exists()
    # the three runtimes agree on the compressed model's predictions
    rts = saved["runtimes"]
    assert rts["torch"]["precision"] == "int8-fakequant" and rts["onnxruntime"]["precision"] == "int8"


def test_print_recipe_and_cli_errors(capsys, tmp_path):
    from edgekit.cli import main

    assert main(["compress", "tiny-bert", "--print-recipe"]) == 0
    assert "fast-distilbert" in capsys.readouterr().out
    assert main(["compress", "tiny-bert", "-o", str(tmp_path / "x"), "--recipe", "nope"]) == 2
    assert "unknown recipe 'nope'" in capsys.readouterr().err


def test_hardware_aware_allocation_uses_measured_table(monkeypatch, tmp_path):
    from edgekit.compress import allocation as hardware
    from edgekit.zoo import load_torch, resolve

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    model, _ = load_torch(resolve("tiny-bert"))
    lin = encoder_linears(model)
    assert hardware.hardware_allocation(lin, 0.8, None) is None  # no target: uniform
    table = hardware.latency_table({tuple(m.weight.shape) for m in lin.values()})
    assert set(table) == {"64x64", "128x64", "64x128"} and all(v > 0 for r in table.values() for v in r.values())
    alloc = hardware.hardware_allocation(lin, 0.8, 1.5)
    for name, s in alloc.items():
        row = table[f"{lin[name].weight.shape[0]}x{lin[name].weight.shape[1]}"]
        ok = [g for g in hardware.GRID if row["0.0"] / row[str(g)] >= 1.5]
        assert s == (min(ok) if ok else max(hardware.GRID))
    assert list((tmp_path).glob("latency-*.json"))
    # 7-bit weights run on other kernels on AVX2: their own table, cached in its own file
    t7 = hardware.latency_table({(64, 64)}, weight_bits=7)
    assert set(t7) == {"64x64"} and all(v > 0 for v in t7["64x64"].values())
    assert len(list(tmp_path.glob("latency-*-w7.json"))) == 1


def test_onnx_int8_uses_the_trained_activation_qparams(quick_cls_artifact):
    import onnx
    from onnx import numpy_helper

    out, _ = quick_cls_artifact
    quant = json.loads((out / "torch" / "quant.json").read_text())["layers"]
    g = onnx.load(str(out / "onnx" / "model.onnx")).graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    node = next(n for n in g.node if n.op_type == "MatMul" and "layer.1/intermediate/dense/" in n.name)
    dq = producer[node.input[0]]
    assert float(inits[dq.input[1]]) == pytest.approx(quant["layers.1.ffn_in"]["x_scale"])
    assert int(inits[dq.input[2]]) == quant["layers.1.ffn_in"]["x_zp"]


def test_onnx_int8_rounds_only_linear_inputs(quick_cls_artifact):
    """As in edgekit's scheme (torch fake-quant, native engine): u8 only at the data input of the Linear MatMuls.
    No Q/DQ pair on a MatMul output, and the residual Adds read the fp32 LayerNorm outputs."""
    import onnx

    out, _ = quick_cls_artifact
    g = onnx.load(str(out / "onnx" / "model.onnx")).graph
    producer = {o: n for n in g.node for o in n.output}
    weights = {i.name for i in g.initializer}
    act_dq = [n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] not in weights]
    assert act_dq  # the model is int8
    for dq in act_dq:
        assert producer[dq.input[0]].op_type == "QuantizeLinear"
        users = [(n, list(n.input).index(dq.output[0])) for n in g.node if dq.output[0] in n.input]
        assert users and all(n.op_type == "MatMul" and i == 0 for n, i in users), dq.name
        assert producer.get(producer[dq.input[0]].input[0], dq).op_type != "MatMul"  # not a MatMul output
    lin = [n for n in g.node if n.op_type == "MatMul" and producer.get(n.input[1]) is not None
           and producer[n.input[1]].op_type == "DequantizeLinear"]
    assert len(lin) == 12 and all(producer[n.input[0]].op_type == "DequantizeLinear" for n in lin)


def test_float_outside_linears_rewires_residuals():
    """On a hand-made QDQ graph: x -> Q/DQ -> (Linear MatMul, Add); the Add gets x back, the MatMul keeps the DQ."""
    import onnx
    from onnx import TensorProto, helper

    from edgekit.export.onnx_export import float_outside_linears

    w = helper.make_tensor("w", TensorProto.INT8, [4, 4], [1] * 16)
    inits = [w, helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("z", TensorProto.UINT8, [], [3]),
             helper.make_tensor("ws", TensorProto.FLOAT, [], [0.01]), helper.make_tensor("wz", TensorProto.INT8, [], [0])]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
             helper.make_node("DequantizeLinear", ["w", "ws", "wz"], ["wd"]),
             helper.make_node("MatMul", ["xd", "wd"], ["y"]),
             helper.make_node("Add", ["xd", "y"], ["out"])]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, [2, 4])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    assert float_outside_linears(model) == 1
    onnx.checker.check_model(model)
    g = model.graph
    by_out = {n.output[0]: n for n in g.node}
    assert list(by_out["out"].input) == ["x", "y"] and list(by_out["y"].input) == ["xd", "wd"]


@pytest.mark.parametrize("freeze", [False, True])
def test_freeze_embeddings_keeps_the_teachers_input_layer(freeze, tmp_path):
    """distill.freeze_embeddings: training steps leave the student's embedding layer at the teacher's values
    (and still train the encoder); without it the embeddings move."""
    from edgekit.arch import encoder
    from edgekit.compress.stages.distill import make_student, objective
    from edgekit.compress.training import Run
    from edgekit.zoo import load_torch, resolve

    data = load_recipe("quick").model_dump()
    data["stages"][0]["freeze_embeddings"] = freeze
    rec = recipe_from_dict(data)
    ref = resolve("tiny-bert")
    teacher, tok = load_torch(ref)
    student = make_student(teacher, objective(rec))
    run = Run(rec, objective(rec), teacher, student, tok, ref.task, "bbc-news", None, tmp_path / "ckpt", False)
    run.train(3, 1e-2, "test")
    t_emb, s_emb = encoder(teacher).embeddings.state_dict(), encoder(student).embeddings.state_dict()
    moved = [n for n in t_emb if not torch.equal(t_emb[n], s_emb[n])]
    assert (moved == []) if freeze else ("word_embeddings.weight" in moved), moved
    t_enc, s_enc = encoder(teacher).base.encoder.state_dict(), encoder(student).base.encoder.state_dict()
    assert any(not torch.equal(t_enc[n], s_enc[n]) for n in t_enc)


@pytest.mark.parametrize("model", ["tiny-bert", "tiny-bert-cls"])
def test_tail_loss_judges_a_layer_by_the_teachers_remaining_layers(model):
    """distill.tail_weight: the student's state after layer 0, through the teacher's layer 1 and head. A change to
    the student's layer 1 alone leaves that tail at zero (the teacher's layer 1 replaces it) while the output
    losses see it; with both layers changed, the tail equals the output loss of a model made of the student's layer 0
    and the teacher's rest, not the student's own."""
    import copy

    from edgekit.arch import encoder
    from edgekit.compress.config import DistillConfig
    from edgekit.compress.distill import Distiller
    from edgekit.errors import InputError
    from edgekit.models import hf_model_of
    from edgekit.zoo import load_torch, resolve

    teacher, _ = load_torch(resolve(model))
    task = "text-classification" if model.endswith("cls") else "feature-extraction"
    out_key = "logits" if task == "text-classification" else "embedding"
    cfg = DistillConfig(logits_weight=1, label_weight=0, embedding_weight=1, hidden_weight=0, relation_weight=0,
                        tail_weight=1.0)
    ids = torch.randint(1000, 5000, (3, 12))
    mask = torch.ones(3, 12, dtype=torch.long)
    mask[1, 8:] = 0

    def perturb(student, layer):
        with torch.no_grad():
            for p in encoder(student).layers[layer].block.parameters():
                p.add_(torch.randn_like(p) * 0.2)

    student = copy.deepcopy(teacher)
    perturb(student, 1)
    _, parts = Distiller(teacher, student, cfg, task).loss(ids, mask)
    assert parts[out_key] > 1e-4 and abs(parts["tail"]) < 1e-6, parts

    student = copy.deepcopy(teacher)
    perturb(student, 0)
    perturb(student, 1)
    _, parts = Distiller(teacher, student, cfg, task).loss(ids, mask)
    hybrid = copy.deepcopy(teacher)
    enc = encoder(hybrid)
    enc.adapter.set_layers(enc, hf_model_of(hybrid), [encoder(student).layers[0].block, enc.layers[1].block])
    _, want = Distiller(teacher, hybrid, cfg, task).loss(ids, mask)
    assert parts["tail"] > 1e-4 and parts["tail"] == pytest.approx(want[out_key], rel=1e-4), (parts, want)
    assert abs(parts[out_key] - want[out_key]) > 1e-4, (parts, want)

    with pytest.raises(InputError, match="tail_layers must name student layers 0..0"):
        Distiller(teacher, copy.deepcopy(teacher), cfg.model_copy(update={"tail_layers": [1]}), task)


def test_token_replacement_touches_text_tokens_only_and_follows_the_seed():
    """augment_tokens: about the asked fraction of text tokens replaced by tokens of the pool; padding and special
    tokens never; the same generator state gives the same batch (a resumed run sees what the first run saw)."""
    from edgekit.compress.training import replace_tokens

    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(1000, 2000, (64, 128), generator=gen)
    ids[:, 0], ids[:, 100], ids[:, 101:] = 101, 102, 0  # [CLS] text [SEP] padding
    text = torch.zeros_like(ids, dtype=torch.bool)
    text[:, 1:100] = True
    pool = torch.arange(5000, 5100)
    state = gen.get_state()
    out = replace_tokens(ids, text, pool, 0.25, gen)
    changed = out != ids
    assert not changed[~text].any()  # [CLS], [SEP], padding untouched
    assert 0.22 < changed[text].float().mean() < 0.28
    assert torch.isin(out[changed], pool).all() and torch.equal(out[~changed], ids[~changed])
    gen.set_state(state)
    assert torch.equal(replace_tokens(ids, text, pool, 0.25, gen), out)
    assert torch.equal(replace_tokens(ids, text, pool, 0.0, gen), ids)
