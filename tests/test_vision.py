"""The CNN path on a tiny random EfficientNet-Lite (``tiny-cnn``, 32 x 32 inputs) and tiny photos made in-test:
SAME padding, export parity, preprocessing recorded and applied identically, the ptq artifact, eval and bench."""
from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch
from PIL import Image

from edgekit.cli import main


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Three random-texture 'photos' (smooth noise, so crops differ) as the photo folder, and a private cache."""
    d = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i in range(3):
        small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)
        Image.fromarray(small).resize((800, 600), Image.Resampling.BICUBIC).save(d / f"p{i}.png")
    mp = pytest.MonkeyPatch()
    mp.setenv("EDGEKIT_PHOTO_DIR", str(d))
    mp.setenv("EDGEKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield d
    mp.undo()


@pytest.fixture(scope="module")
def ptq_artifact(photos, tmp_path_factory):
    out = tmp_path_factory.mktemp("ptq") / "tiny"
    assert main(["compress", "tiny-cnn", "--recipe", "ptq", "-o", str(out)]) == 0
    return out


def test_same_padding_matches_tensorflow():
    """TF 'SAME' with stride 2 on an even side pads (k-2)//2 before and the rest after: compare with an explicit
    asymmetric pad."""
    from edgekit.vision.efficientnet_lite import SameConv2d

    torch.manual_seed(0)
    conv = SameConv2d(3, 4, 5, stride=2)
    x = torch.randn(1, 3, 32, 32)
    want = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (1, 2, 1, 2)), conv.weight, stride=2)
    assert conv(x).shape == (1, 4, 16, 16)
    torch.testing.assert_close(conv(x), want)


def test_lite0_weights_load_strictly_with_the_expected_size():
    from edgekit.vision.efficientnet_lite import efficientnet_lite0

    model = efficientnet_lite0(pretrained=True)  # strict=True: every key of the package's state dict matched
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(4.65e6, rel=0.01)
    assert model(torch.zeros(2, 3, 224, 224)).shape == (2, 1000)


def test_export_parity_and_preprocessing_recorded(photos, tmp_path):
    from edgekit.api import export
    from edgekit.data.images import ImagePreprocessConfig, photo_crops
    from edgekit.runtimes import load
    from edgekit.vision.io import TINY_PREPROCESS, VISION_ZOO

    art = export("tiny-cnn", tmp_path / "fp32", formats="onnx,openvino")
    m = art.manifest
    assert m.task == "image-classification" and m.inputs[0].name == "pixel_values"
    assert m.inputs[0].shape == ["batch", 3, 32, 32] and m.outputs[0].shape == ["batch", 4]
    pre = ImagePreprocessConfig.from_dict(m.extra["preprocess"])
    assert pre == TINY_PREPROCESS
    x = pre.apply(photo_crops()[1][:5])
    with torch.no_grad():
        want = VISION_ZOO["tiny-cnn"].build()(torch.from_numpy(x)).numpy()
    for rt in ("torch", "onnxruntime", "openvino"):
        got = load(art, rt, threads=1).run({"pixel_values": x})
        assert got.shape == (5, 4)
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4, err_msg=rt)


def test_ptq_artifact_is_int8_checksummed_and_scored(ptq_artifact):
    from edgekit.artifact import load_artifact

    art = load_artifact(ptq_artifact)  # verifies every sha256, report included
    m = art.manifest
    assert m.precision == {"torch": "fp32", "onnx": "int8", "openvino": "int8"}
    assert m.extra["fp32"] == {"onnx": "onnx/model_fp32.onnx", "openvino": "openvino/model_fp32.xml"}
    q = onnx.load(str(ptq_artifact / "onnx" / "model.onnx"))
    ops = [n.op_type for n in q.graph.node]
    assert ops.count("QuantizeLinear") >= 5 and "Conv" in ops
    # every convolution with 8-bit weights reads a dequantized (int8) input, so ONNX Runtime can fuse it
    init = {i.name: i.data_type for i in q.graph.initializer}
    producer = {o: n for n in q.graph.node for o in n.output}
    int8 = [n for n in q.graph.node if n.op_type == "Conv" and n.input[1] in producer
            and init.get(producer[n.input[1]].input[0]) in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)]
    assert int8 and all(producer[n.input[0]].op_type == "DequantizeLinear" for n in int8)
    assert "QuantizeLinear" not in {n.op_type for n in onnx.load(str(ptq_artifact / "onnx/model_fp32.onnx")).graph.node}
    assert "FakeQuantize" in (ptq_artifact / "openvino" / "model.xml").read_text()
    assert "FakeQuantize" not in (ptq_artifact / "openvino" / "model_fp32.xml").read_text()
    report = json.loads((ptq_artifact / "report.json").read_text())
    assert report["recipe"] == "ptq" and report["precision"] == "int8" and report["task"] == "image-classification"
    assert report["stages"][0]["float_ops"] == ["stem", "depthwise", "projection"]
    assert report["photo_source"]["name"] == "user"
    for rt in ("onnxruntime", "openvino", "onnxruntime-fp32", "openvino-fp32"):
        assert report["runtimes"][rt]["n"] == 600 and 0 <= report["runtimes"][rt]["agreement"] <= 1
    assert report["runtimes"]["onnxruntime-fp32"]["agreement"] == 1.0  # fp32 ONNX vs torch: same top-1 everywhere


def _conv_kinds(convs, grouped, activated) -> dict:
    """{conv name: stem | depthwise | projection | other}; projections are the ungrouped convolutions after the stem
    whose output goes to no activation."""
    return {name: "stem" if i == 0 else "depthwise" if grouped[name] else "other" if activated[name] else "projection"
            for i, name in enumerate(convs)}


def _weight_bits_of_convs(ptq_artifact):
    """{conv kind: set of weight element types} of the int8 ONNX model and of the int8 OpenVINO model (kinds read
    from the artifact's fp32 models, whose graphs have no quantization nodes between a convolution and its
    activation)."""
    import openvino as ov

    from edgekit.export.image_export import _ov_activated

    f = onnx.load(str(ptq_artifact / "onnx" / "model_fp32.onnx"))
    clipped = {i for n in f.graph.node if n.op_type == "Clip" for i in n.input}
    fconvs = [n for n in f.graph.node if n.op_type == "Conv"]
    kinds = _conv_kinds([n.name for n in fconvs],
                        {n.name: any(a.name == "group" and a.i > 1 for a in n.attribute) for n in fconvs},
                        {n.name: n.output[0] in clipped for n in fconvs})
    q = onnx.load(str(ptq_artifact / "onnx" / "model.onnx"))
    init = {i.name: i.data_type for i in q.graph.initializer}
    producer = {o: n for n in q.graph.node for o in n.output}
    onnx_bits: dict[str, set] = {}
    for n in (c for c in q.graph.node if c.op_type == "Conv"):
        w = n.input[1] if n.input[1] in init else producer[n.input[1]].input[0]  # float, or DequantizeLinear's input
        onnx_bits.setdefault(kinds[n.name], set()).add(onnx.TensorProto.DataType.Name(init[w]))
    core = ov.Core()
    # keep the model referenced: an op's consumers (what _ov_activated looks at) go with the model that owns them
    fmodel = core.read_model(str(ptq_artifact / "openvino" / "model_fp32.xml"))
    fov = [op for op in fmodel.get_ordered_ops() if op.get_type_name() in ("Convolution", "GroupConvolution")]
    ov_kinds = _conv_kinds([op.get_friendly_name() for op in fov],
                           {op.get_friendly_name(): op.get_type_name() == "GroupConvolution" for op in fov},
                           {op.get_friendly_name(): _ov_activated(op) for op in fov})
    ov_bits: dict[str, set] = {}
    model = core.read_model(str(ptq_artifact / "openvino" / "model.xml"))
    for op in (o for o in model.get_ordered_ops() if o.get_type_name() in ("Convolution", "GroupConvolution")):
        seen, todo = set(), [op.input_value(1).get_node()]
        while todo:  # the weight path: Constant [-> Convert -> Subtract -> Multiply] or FakeQuantize
            node = todo.pop()
            seen.add(node.get_type_name() if node.get_type_name() != "Constant" else node.get_element_type().get_type_name())
            if node.get_type_name() != "Constant":
                todo += [v.get_node() for v in node.input_values()]
        ov_bits.setdefault(ov_kinds[op.get_friendly_name()], set()).update(seen)
    return onnx_bits, ov_bits


def test_ptq_keeps_the_stem_depthwise_and_projection_convolutions_in_float(ptq_artifact):
    """Recipe ptq's float_ops reach both exporters: ONNX Runtime's model holds those convolutions' weights in float
    (quantized to 16 bits, then put back as the fp32 weights: ONNX Runtime runs them in float and would otherwise
    dequantize them at every inference), NNCF leaves them out; the rest is int8. The logits stay float on ONNX
    Runtime (no QuantizeLinear on the classifier's output)."""
    onnx_bits, ov_bits = _weight_bits_of_convs(ptq_artifact)
    assert set(onnx_bits) == {"stem", "depthwise", "projection", "other"}
    for kind in ("stem", "depthwise", "projection"):
        assert onnx_bits[kind] == {"FLOAT"}, (kind, onnx_bits[kind])  # ONNX Runtime runs these in float
        assert not ov_bits[kind] & {"i8", "u8", "FakeQuantize"}, (kind, ov_bits[kind])
    assert onnx_bits["other"] <= {"INT8", "UINT8"}
    assert ov_bits["other"] & {"i8", "u8", "FakeQuantize"}
    q = onnx.load(str(ptq_artifact / "onnx" / "model.onnx"))
    f = onnx.load(str(ptq_artifact / "onnx" / "model_fp32.onnx"))
    fw = {i.name: onnx.numpy_helper.to_array(i) for i in f.graph.initializer}
    qw = {i.name: onnx.numpy_helper.to_array(i) for i in q.graph.initializer}
    float_convs = [n for n in q.graph.node if n.op_type == "Conv" and n.input[1] in qw]
    assert float_convs
    for n in float_convs:  # exactly the fp32 weights and biases
        for name in n.input[1:]:
            np.testing.assert_array_equal(qw[name], fw[name])
    assert not [i for i in q.graph.initializer if i.data_type == onnx.TensorProto.INT16]
    last = next(n for n in q.graph.node if "logits" in n.output)
    assert last.op_type == "Gemm", last.op_type


def test_float_ops_choose_the_convolutions_each_exporter_keeps(tmp_path):
    """Each float_ops kind alone selects its own convolutions on both exporters (ONNX weights, NNCF ignored scope)."""
    import openvino as ov

    from edgekit.export.image_export import onnx_float_weights, openvino_float_scope, to_onnx_image
    from edgekit.vision.io import VISION_ZOO

    entry = VISION_ZOO["tiny-cnn"]
    path = to_onnx_image(entry.build(), tmp_path / "m.onnx", entry.preprocess.input_shape)
    m = onnx.load(str(path))
    convs = [n for n in m.graph.node if n.op_type == "Conv"]
    clipped = {i for n in m.graph.node if n.op_type == "Clip" for i in n.input}
    proj = [n.input[1] for n in convs[1:] if not n.output[0] in clipped
            and not any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert proj and onnx_float_weights(m, ["projection"]) == proj
    assert onnx_float_weights(m, ["stem"]) == [convs[0].input[1]]
    assert not set(proj) & set(onnx_float_weights(m, ["stem", "depthwise"]))
    om = ov.convert_model(str(path))
    scope = openvino_float_scope(om, ["projection"])
    assert len(scope.names) == len(proj) and not scope.types
    assert all("project" in name for name in scope.names), scope.names


def test_ptq_runs_float_convolutions_on_unrounded_inputs_and_keeps_relu6(ptq_artifact):
    """Between two convolutions ONNX Runtime runs in float (stem -> depthwise -> projection) there is no quantize /
    dequantize pair left, and the ReLU6 the quantizer had folded into that pair's u8 range is back (same Clip
    bounds as the fp32 graph); the residual stream's ranges come from the recipe's percentile."""
    report = json.loads((ptq_artifact / "report.json").read_text())
    assert report["stages"][0]["stream_percentile"] == 99.999
    f = onnx.load(str(ptq_artifact / "onnx" / "model_fp32.onnx"))
    q = onnx.load(str(ptq_artifact / "onnx" / "model.onnx"))
    quantized = {n.input[0] for n in q.graph.node if n.op_type == "QuantizeLinear"}
    dw_out = [n.output[0] for n in f.graph.node if n.op_type == "Clip"
              and any(c.op_type == "Conv" and c.output[0] == n.input[0] and any(a.name == "group" and a.i > 1
                                                                                for a in c.attribute)
                      for c in f.graph.node)]
    assert dw_out and not set(dw_out) & quantized, set(dw_out) & quantized
    assert "pixel_values" not in quantized  # the stem runs in float on the raw input
    fclips = {n.output[0]: list(n.input[1:]) for n in f.graph.node if n.op_type == "Clip"}
    qclips = {n.output[0]: list(n.input[1:]) for n in q.graph.node if n.op_type == "Clip"}
    assert set(dw_out) <= set(qclips)
    for t in dw_out:  # the same bounds (the quantizer's pre-processing may rename the constants)
        assert [_const(q, c) for c in qclips[t]] == [_const(f, c) for c in fclips[t]] == [0.0, 6.0]
    # every Conv input is either a float tensor or a dequantized one, and the graph still runs
    import onnxruntime as ort

    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    out = ort.InferenceSession(q.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x})[0]
    assert out.shape == (2, 4) and np.isfinite(out).all()


def _const(model, name: str) -> float:
    """The scalar value of an initializer or Constant node output of ``model``."""
    for i in model.graph.initializer:
        if i.name == name:
            return float(onnx.numpy_helper.to_array(i))
    node = next(n for n in model.graph.node if n.op_type == "Constant" and name in n.output)
    return float(onnx.numpy_helper.to_array(node.attribute[0].t))


def test_stream_ranges_cover_projection_and_add_outputs(tmp_path):
    """stream_ranges picks the residual stream (projection convolutions and Adds), its 100th percentile is the exact
    min / max, a lower percentile narrows it; quantize_onnx_image gives those tensors that range (u8: scale =
    (high - low) / 255) and set_openvino_ranges puts it into NNCF's symmetric quantizers."""
    import openvino as ov

    from edgekit.export.image_export import quantize_onnx_image, stream_ranges, to_onnx_image, to_openvino_image
    from edgekit.vision.io import VISION_ZOO

    entry = VISION_ZOO["tiny-cnn"]
    path = to_onnx_image(entry.build(), tmp_path / "m.onnx", entry.preprocess.input_shape)
    m = onnx.load(str(path))
    x = np.random.default_rng(1).standard_normal((16, 3, 32, 32)).astype(np.float32)
    full, narrow = stream_ranges(m, x, 100.0), stream_ranges(m, x, 99.0)
    producer = {o: n for n in m.graph.node for o in n.output}
    assert full and {producer[t].op_type for t in full} == {"Conv", "Add"}
    assert all("project" in t or "Add" in t for t in full), list(full)
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(m)
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None) for t in full)
    vals = dict(zip(full, ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
                    .run(list(full), {"pixel_values": x})))
    for t, (lo, hi) in full.items():
        assert lo == pytest.approx(min(vals[t].min(), 0), rel=1e-5) and hi == pytest.approx(max(vals[t].max(), 0), rel=1e-5)
        assert narrow[t][0] >= lo and narrow[t][1] <= hi and (narrow[t][0] > lo or narrow[t][1] < hi)
    qpath = quantize_onnx_image(path, tmp_path / "q.onnx", x, weight_type="u8", stream_percentile=99.0)
    init = {i.name: onnx.numpy_helper.to_array(i) for i in onnx.load(str(qpath)).graph.initializer}
    for t, (lo, hi) in narrow.items():
        assert float(init[t + "_scale"]) == pytest.approx((hi - lo) / 255, rel=1e-4), t
    xml = to_openvino_image(path, tmp_path / "ov" / "model.xml", x, stream_percentile=99.0, method="minmax")
    fqs = {op.input_value(0).get_node().get_friendly_name(): op for op in ov.Core().read_model(str(xml)).get_ordered_ops()
           if op.get_type_name() == "FakeQuantize"}
    for t, (lo, hi) in narrow.items():
        fq = fqs[producer[t].name]
        high = float(fq.input_value(2).get_node().get_data().ravel()[0])
        assert high == pytest.approx(max(-float(lo), float(hi)), rel=1e-5), t


def test_fit_int32_bias_keeps_a_dead_channels_bias(tmp_path):
    """A weight channel of near-zeros with a large bias: ONNX Runtime's asymmetric (u8) weights give it a scale so
    small that its int32 bias clips; quantize_onnx_image widens that scale, so the channel's output (= its bias)
    survives to within one output quantization step."""
    import onnxruntime as ort
    from onnx import helper as h, numpy_helper as nh

    from edgekit.export.image_export import quantize_onnx_image

    rng = np.random.default_rng(0)
    w = rng.standard_normal((4, 3, 1, 1)).astype(np.float32)
    w[2] = 1e-9  # a dead channel
    b = np.array([0.1, -0.2, 3.0, 0.05], np.float32)
    g = h.make_graph([h.make_node("Conv", ["pixel_values", "w", "b"], ["y"]), h.make_node("Relu", ["y"], ["logits"])],
                     "g", [h.make_tensor_value_info("pixel_values", onnx.TensorProto.FLOAT, ["batch", 3, 8, 8])],
                     [h.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["batch", 4, 8, 8])],
                     [nh.from_array(w, "w"), nh.from_array(b, "b")])
    path = tmp_path / "conv.onnx"
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 18)]), str(path))
    x = rng.standard_normal((8, 3, 8, 8)).astype(np.float32)
    q = quantize_onnx_image(path, tmp_path / "q.onnx", x, weight_type="u8")
    model = onnx.load(str(q))
    init = {i.name: nh.to_array(i) for i in model.graph.initializer}
    dqb = next(n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "b")
    bias = init[dqb.input[0]] * init[dqb.input[1]]
    assert bias[2] == pytest.approx(3.0, abs=1e-6)  # clipped to about 1e-9 x 2^31 without the fit
    np.testing.assert_allclose(bias, b, atol=1e-3)  # the others within their own rounding
    got = ort.InferenceSession(str(q), providers=["CPUExecutionProvider"]).run(None, {"pixel_values": x})[0]
    step = float(next(v for k, v in init.items() if k.endswith("_scale") and ("logits" in k or k.startswith("y"))))
    assert np.abs(got[:, 2] - 3.0).max() <= step


def test_eval_reports_agreement_per_runtime(ptq_artifact, capsys):
    for rt, ref in (("onnxruntime", "tiny-cnn"), ("openvino", None)):
        capsys.readouterr()
        assert main(["eval", str(ptq_artifact), "-r", rt, "--json"] + (["--reference", ref] if ref else [])) == 0
        res = json.loads(capsys.readouterr().out)
        assert res["metric"] == "agreement" and res["n"] == 600 and res["runtime"] == rt
        assert res["precision"].startswith("int8") and 0 <= res["agreement"] <= 1
        assert res["reference"] == (ref or f"{rt}-fp32")


def test_eval_accuracy_on_a_labelled_folder(ptq_artifact, tmp_path, capsys):
    """Folders named by the model's labels (tiny-cnn: a, b, c, d) score by name; the torch runtime is the fp32 model,
    so its accuracy equals the share of images whose top-1 is their folder's class, computed here directly."""
    from edgekit.data.images import ImagePreprocessConfig
    from edgekit.vision.io import VISION_ZOO

    rng = np.random.default_rng(1)
    paths = []
    for c, idx in (("a", 0), ("c", 2)):
        (tmp_path / "d" / c).mkdir(parents=True)
        for i in range(6):
            p = tmp_path / "d" / c / f"{i}.png"
            Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(p)
            paths.append((p, idx))
    assert main(["eval", str(ptq_artifact), "-r", "torch", "--data", str(tmp_path / "d"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    pre = ImagePreprocessConfig.from_dict(VISION_ZOO["tiny-cnn"].preprocess.to_dict())
    with torch.no_grad():
        pred = VISION_ZOO["tiny-cnn"].build()(torch.from_numpy(pre.apply([p for p, _ in paths]))).argmax(1).numpy()
    assert res["metric"] == "accuracy" and res["n"] == 12
    assert res["value"] == pytest.approx(np.mean(pred == np.array([c for _, c in paths])))


def test_bench_image_model_fp32_and_int8_rows(ptq_artifact, tmp_path):
    out = tmp_path / "b.jsonl"
    assert main(["bench", str(ptq_artifact), "-r", "onnxruntime,openvino", "-b", "1,2", "--min-time", "0.01",
                 "--min-runs", "2", "--rounds", "1", "--json", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(r["runtime"], r["batch"]) for r in rows} == {(rt, b) for rt in ("onnxruntime", "openvino",
                                                                            "onnxruntime-fp32", "openvino-fp32")
                                                          for b in (1, 2)}
    for r in rows:
        assert {"model", "runtime", "precision", "batch", "seq", "threads", "latency_ms", "throughput_per_s",
                "cpu"} <= r.keys()
        assert r["image_shape"] == [3, 32, 32] and r["seq"] == 32
    assert {r["precision"] for r in rows if r["runtime"].endswith("-fp32")} == {"fp32"}
    from edgekit.bench import format_table

    head = format_table(rows).splitlines()[1].split()
    assert head[2:4] == ["batch", "image"]  # the JSON's seq is the image side here


def test_bad_input_is_one_line_exit_2_and_writes_nothing(photos, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "never"
    assert main(["compress", "tiny-cnn", "-o", str(out), "--data", str(tmp_path / "empty")]) == 2
    err = capsys.readouterr().err
    assert "no class sub-folders" in err and len(err.strip().splitlines()) == 1 and not out.exists()
    assert main(["compress", "tiny-cnn", "-o", str(out), "--recipe", "quick"]) == 2
    assert "post-training int8 only" in capsys.readouterr().err and not out.exists()
    assert main(["eval", "tiny-cnn", "-r", "native"]) == 2
    assert "image models run on torch, onnxruntime, openvino" in capsys.readouterr().err


@pytest.mark.parametrize("field, bad_value, good_value, parsed", [
    ("float_ops", "[pointwise]", "[depthwise]", ["depthwise"]),
    ("stream_percentile", "50", "99.9", 99.9),
    ("gptq", "sometimes", "true", True),
])
def test_cnn_quantize_options_are_validated_and_refused_for_vits(tmp_path, field, bad_value, good_value, parsed):
    from edgekit.compress.config import load_recipe
    from edgekit.compress.vision import check_image_recipe
    from edgekit.errors import InputError

    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: bad\nstages:\n  - type: quantize\n    qat_steps: 0\n    {field}: {bad_value}\n")
    with pytest.raises(InputError, match=field):
        load_recipe(str(bad))
    ok = tmp_path / "ok.yaml"
    ok.write_text(f"name: ok\nstages:\n  - type: quantize\n    qat_steps: 0\n    {field}: {good_value}\n")
    assert getattr(load_recipe(str(ok)).stage("quantize"), field) == parsed
    with pytest.raises(InputError, match="not to ViTs"):
        check_image_recipe(load_recipe(str(ok)))


def test_ptq_takes_the_residual_stream_range_from_the_99999th_percentile():
    from edgekit.compress.config import load_recipe

    assert load_recipe("ptq").stage("quantize").stream_percentile == 99.999


def test_gptq_round_is_round_to_nearest_for_uncorrelated_inputs_and_beats_it_otherwise():
    """With a diagonal input second moment GPTQ has nothing to compensate through, so it must equal
    round-to-nearest; with correlated inputs its output error E||(w - q s) x||^2 must be lower, in range."""
    from edgekit.export.image_export import gptq_round

    rng = np.random.default_rng(0)
    w = rng.standard_normal((24, 16))
    s = np.abs(w).max(1) / 63
    rtn = np.clip(np.round(w / s[:, None]), -63, 64)
    diag = np.diag(rng.uniform(0.1, 2.0, 16))
    assert np.array_equal(gptq_round(w, s, diag, -63, 64, damp=0.0), rtn)
    mix = rng.standard_normal((16, 16)) + 3 * np.eye(16)
    x = rng.standard_normal((4000, 16)) @ mix + 0.5  # correlated, not centred
    h = x.T @ x / len(x)
    q = gptq_round(w, s, h, -63, 64)

    def err(qq):
        d = w - qq * s[:, None]
        return float(np.einsum("ij,jk,ik->", d, h, d))

    assert q.min() >= -63 and q.max() <= 64 and np.array_equal(q, np.round(q))
    assert err(q) < 0.8 * err(rtn), (err(q), err(rtn))
    dead = h.copy()
    dead[3, :] = dead[:, 3] = 0.0  # an input channel that is always zero: its weights are free, set to 0
    assert (gptq_round(w, s, dead, -63, 64)[:, 3] == 0).all()


def test_openvino_gptq_rerounds_the_1x1_weights_only_keeping_nncf_scales(tmp_path):
    """to_openvino_image(gptq=True) on tiny-cnn: the 1x1 convolutions' and classifier's int8 weights change, their
    scales and integer range do not, other layers keep NNCF's rounding, and the re-rounded layers' output error on
    the calibration inputs is lower than round-to-nearest's."""
    import openvino as ov
    from onnx import numpy_helper as nh

    from edgekit.export.image_export import _int8_weight, to_onnx_image, to_openvino_image
    from edgekit.vision.io import VISION_ZOO

    entry = VISION_ZOO["tiny-cnn"]
    path = to_onnx_image(entry.build(), tmp_path / "m.onnx", entry.preprocess.input_shape)
    x = np.random.default_rng(2).standard_normal((24, 3, 32, 32)).astype(np.float32)
    layers = {}
    for flag in (False, True):
        xml = to_openvino_image(path, tmp_path / f"ov{flag}" / "model.xml", x, overflow_fix=True, gptq=flag)
        for op in ov.Core().read_model(str(xml)).get_ordered_ops():
            weight = _int8_weight(op) if op.get_type_name() in ("Convolution", "MatMul", "GroupConvolution") else None
            if weight is not None:
                layers.setdefault(op.get_friendly_name(), {})[flag] = (weight[0].get_data(), weight[1].get_data())
    m = onnx.load(str(path))
    inits = {i.name: nh.to_array(i) for i in m.graph.initializer}
    nodes = {**{n.output[0]: n for n in m.graph.node}, **{n.name: n for n in m.graph.node}}
    changed = 0
    for name, by in layers.items():
        (q0, s0), (q1, s1) = by[False], by[True]
        assert np.array_equal(s0, s1) and q1.min() >= q0.min() and q1.max() <= q0.max(), name
        if q0.ndim > 2 and q0.shape[-2:] != (1, 1):
            assert np.array_equal(q0, q1), name  # not a 1x1 layer: untouched
            continue
        changed += not np.array_equal(q0, q1)
        node = nodes[name.removesuffix("/WithoutBiases")]
        import onnxruntime as ort

        probe = onnx.ModelProto()
        probe.CopyFrom(m)
        if node.input[0] not in {o.name for o in m.graph.output}:
            probe.graph.output.extend([onnx.helper.make_tensor_value_info(node.input[0], onnx.TensorProto.FLOAT, None)])
        a = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"]).run(
            [node.input[0]], {"pixel_values": x})[0]
        a = (a.transpose(0, 2, 3, 1) if a.ndim == 4 else a).reshape(-1, a.shape[1]).astype(np.float64)
        w = inits[node.input[1]].reshape(q0.shape[0], -1)
        scale = s0.reshape(-1, 1)
        e0 = np.square(a @ (w - q0.reshape(len(w), -1) * scale).T).mean()
        e1 = np.square(a @ (w - q1.reshape(len(w), -1) * scale).T).mean()
        assert e1 <= e0 * 1.0001, (name, e1, e0)
    assert changed >= 2 and any(len(by[True][0].shape) == 2 and not np.array_equal(by[False][0], by[True][0])
                                for by in layers.values())  # the classifier too
