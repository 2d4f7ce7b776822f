"""Image classifiers (CNNs) -> artifact: torch weights, ONNX and OpenVINO IR, fp32 and calibrated int8.

One input, ``pixel_values`` float32 [batch, C, H, W] (NCHW, preprocessed as the manifest's
``extra.preprocess`` says), dynamic batch; one output, ``logits`` float32 [batch, classes].

int8 (``calibration`` = preprocessed real photos):
- ONNX Runtime: ``quantize_static``, QDQ, per-channel weights, u8 activations, MinMax or percentile
  calibration, every Conv / Gemm / MatMul. Weights are s8 on CPUs with VNNI and u8 (asymmetric) elsewhere:
  without VNNI, ONNX Runtime's u8 x s8 kernels use ``vpmaddubsw``, whose int16 pair sums saturate.
- OpenVINO: ``nncf.quantize`` with the default (CNN) model type and the performance preset and full bias
  correction, activation ranges from the calibration's min / max (recipe ``calibration: minmax``);
  ``overflow_fix`` (7-bit weights in every layer, NNCF's answer to the same saturation) on CPUs without VNNI.
- ``stream_percentile`` (recipe ``quantize.stream_percentile``): on both runtimes the residual stream's tensors
  (outputs of convolutions with no activation after them, and of Adds) take their range from that percentile
  of the calibration values, not from min / max.
- ONNX Runtime post-passes: no quantize / dequantize pair between convolutions that run in float (the ReLU6
  the quantizer folded into it is put back), and int32 biases that fit (:func:`fit_int32_bias`).
- ``gptq`` (recipe ``quantize.gptq``, OpenVINO): NNCF without bias correction, then the int8 weights of the 1x1
  convolutions and the classifier re-rounded by GPTQ (:func:`gptq_openvino`) on NNCF's scales and integer range.
- ``float_ops`` (recipe ``quantize.float_ops``) keeps the stem, the depthwise and / or the projection (1x1, no
  activation after them) convolutions in float on both runtimes. ONNX Runtime keeps the logits float (its
  default quantizes the classifier's output to u8 per tensor, which flips near-tied classes). A torch simulation of int8 on EfficientNet-Lite0 showed where the error comes from: weights
  alone (logit cosine to fp32 0.987) far more than activations alone (0.998), and among the weights the
  depthwise convolutions (0.990 alone), then the 1x1 projections (0.997) and the stem (0.999).
Measured on EfficientNet-Lite0, AVX2 host without VNNI, 300 calibration crops, top-1 agreement with fp32 on
600 held-out crops of other photos (plasma / MATE wallpapers; the crops are mostly textures and parts of scenes,
on which the model is unsure: median top-1 probability 0.17): all int8, ONNX Runtime 0.835 (s8 weights 0.597,
s8 with reduce_range 0.630), OpenVINO 0.707 (NNCF defaults 0.687); stem and depthwise in float, ONNX Runtime
0.878, OpenVINO 0.877 (0.777 without the overflow fix; the mixed preset 0.877); also the 1x1 projections in
float (ONNX Runtime) 0.927. The misses are near-ties: on the 147 crops where fp32's top-1 probability is >= 0.3
agreement is 0.980 / 0.973, on the 52 with >= 0.5 it is 1.0, and int8's top-1 is within fp32's top-5 on 599 of
600 crops (recipe ptq, both runtimes).
Tuning on other crops of the 8 calibration photographs (400 crops, seed 1000; never the held-out pictures),
ONNX Runtime, u8 weights, stem and depthwise float: 0.873; + float logits 0.888; + projections float 0.935; + every
activation 16-bit 0.963 (nearly no int8 left); all weights 16-bit with u8 activations 0.930; projection + head +
classifier weights 16-bit 0.930; percentile (99.999) calibration 0.933; expansion convolutions 16-bit 0.878.
Tuning on 400 crops of the calibration photographs (seed 1000; top-1 agreement / mean KL(fp32 || int8)), stem,
depthwise and projections float: ONNX Runtime 0.935 / 0.0048; without the pairs between float convolutions 0.933 /
0.0030; + stream_percentile 99.999 0.945 / 0.0022 (99.99: 0.950 / 0.0029); with the float weights put back 0.945 /
0.0021. Only the four projections that cost most alone in float (blocks 0, 1, 5, 11): 0.915 / 0.0051 (0.920 / 0.0044
with the percentile). OpenVINO: 0.920 / 0.0060 (NNCF's ranges); min / max ranges 0.925 / 0.0050; + stream_percentile
99.999 0.920 / 0.0040; mixed preset 0.928 / 0.0046; NNCF's mean-quantile ranges 0.900 / 0.0091; 8-bit weights (no
overflow fix) 0.918 / 0.0090; classifier in float 0.925 / 0.0038. Recipe ptq as chosen (stem, depthwise and
projections float, stream_percentile 99.999, the post-passes, NNCF min / max ranges) on the 600 held-out crops: ONNX
Runtime 0.958, OpenVINO 0.928 (0.932 / 0.933 with all projections float and neither the percentile nor the post-
passes). About 49% of the multiply-adds (the expansion and head convolutions, the classifier) run in int8.
Why OpenVINO trailed: on this host NNCF's overflow fix keeps its weights to 7 bits (symmetric, [-63, 64]); ONNX Runtime
given the same 7-bit symmetric weights scored like it (tuning crops 0.910 / 0.0064, against 0.945 / 0.0021 with its u8
asymmetric weights). Asymmetric weights in OpenVINO reached 0.958 / 0.0016 but its CPU plugin then ran those
convolutions in f32 (slower than fp32). With weights fp32 and only the activations int8 (bias correction off) KL was
0.0015, so weights were most of the rest. GPTQ (act-order, damp 1e-3) on NNCF's weights, bias correction off: tuning
0.948 / 0.0024 (NNCF's bias correction kept: 0.943 / 0.0031; damp 1e-2 / 3e-3 / 1e-4: 0.950 / 0.955 / 0.935, same KL
within 0.0001); held-out 0.940-0.950 across those settings, KL 0.0061 -> 0.0039. Per-layer weight scale search (0.7-1
x max) on top gave nothing; accuracy control (``nncf.quantize_with_accuracy_control``) reverted expansion
convolutions one at a time with about 0.0001 of KL each. Recipe ptq held-out: OpenVINO 0.950.
The fp32 models stay in the artifact next to the int8 ones (``extra.fp32``), so fp32 vs int8 runs on each
runtime from one folder.

>>> export_image_artifact(model, pre, "out/cnn", model_name="efficientnet-lite0")   # doctest: +SKIP
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from edgekit import __version__
from edgekit.artifact import FORMAT_VERSION, Artifact, Manifest, TensorSpec, finalize_manifest, load_artifact, staging_dir
from edgekit.errors import EdgekitError

IMAGE_TASK = "image-classification"
PIXEL_INPUT = "pixel_values"
LOGITS = "logits"
OPSET = 18


def to_onnx_image(model, path: Path, input_shape: Sequence[int]) -> Path:
    """Legacy TorchScript exporter (one self-contained file), batch axis dynamic, C/H/W fixed."""
    import torch

    model = model.eval()
    x = torch.randn(2, *input_shape, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), str(path), input_names=[PIXEL_INPUT], output_names=[LOGITS],
                          dynamic_axes={PIXEL_INPUT: {0: "batch"}, LOGITS: {0: "batch"}}, opset_version=OPSET,
                          dynamo=False)
    return path


class _Reader:
    """ONNX Runtime's CalibrationDataReader over preprocessed images, ``batch`` at a time. Every batch has the
    same size (the largest divisor of the image count up to ``batch``): ONNX Runtime's histogram calibrators
    (percentile, entropy) stack the batches' outputs and fail on a shorter last batch."""

    def __init__(self, x: np.ndarray, batch: int = 8):
        batch = max(b for b in range(1, max(1, min(batch, len(x))) + 1) if len(x) % b == 0) if len(x) else 1
        self._it = iter([{PIXEL_INPUT: x[i:i + batch]} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self._it, None)


def onnx_float_weights(model, float_ops: Sequence[str]) -> list[str]:
    """Weight initializers of the ``float_ops`` convolutions of an ONNX model (the first Conv for ``stem``, Convs
    with ``group`` > 1 for ``depthwise``, the other Convs whose output goes to no activation for ``projection``)."""
    import onnx

    _check_float_ops(float_ops)
    inits = {i.name for i in model.graph.initializer}
    activated = {i for n in model.graph.node if n.op_type in ACTIVATIONS for i in n.input}
    convs = [n for n in model.graph.node if n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in inits]
    out = [convs[0].input[1]] if "stem" in float_ops and convs else []
    for n in convs[1:]:
        group = next((onnx.helper.get_attribute_value(a) for a in n.attribute if a.name == "group"), 1)
        kind = "depthwise" if group > 1 else "projection" if n.output[0] not in activated else None
        if kind in float_ops and n.input[1] not in out:
            out.append(n.input[1])
    return out


def quantize_onnx_image(fp32_path: Path, out_path: Path, calibration: np.ndarray, method: str = "minmax",
                        percentile: float = 99.99, reduce_range: bool = False, weight_type: str = "s8",
                        float_ops: Sequence[str] = (), stream_percentile: float | None = None) -> Path:
    """Static QDQ int8 of an image model with ONNX Runtime (see the module doc). The ``float_ops`` convolutions
    get 16-bit weights: ONNX Runtime has no int16 convolution kernel, so they run in float; after quantization
    their fp32 weights and biases are put back in place (:func:`float_weights_in_place`: 13.8 -> 8.0 ms per image
    on EfficientNet-Lite0, and their int32 biases, which overflowed with 16-bit weight scales, are exact). (Leaving them out with
    ``nodes_to_exclude`` instead made agreement worse, not better: 0.38 without the depthwise convolutions, 0.71
    without them and the stem, against 0.835 all int8: ONNX Runtime's quantizer folds each ReLU6 into the u8 range of
    its output, so excluding a node also dropped the clipping after it.)

    ``stream_percentile``: the residual stream's tensors (outputs of convolutions with no activation after them, and
    of Adds) take their range from that percentile of the calibration values (both tails) instead of min / max.
    After quantization, a quantize / dequantize pair whose producer and consumers all run in float is removed (it
    only added rounding error; the activation the quantizer folded into it is put back), and a weight scale too small
    for its convolution's int32 bias is widened (:func:`fit_int32_bias`). Note: ONNX Runtime (1.32, x86) runs int8
    convolutions in NHWC and inserts a Transpose at every boundary between int8 and float convolutions, so this
    mix is slower than the fp32 model on EfficientNet-Lite0 (8.0 vs 5.7 ms per image, AVX2 host, busy). Every
    convolution int8 is no way out on such hosts: with u8 weights (the only exact choice without VNNI) it took 39.0 ms
    against fp32's 7.3 ms and the mix's 9.0 ms (batch 1, 2 threads, interleaved, quiet)."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out_path.with_name(out_path.stem + "_pre.onnx")
    calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[method]
    # the logits stay float: quantizing the classifier's output to u8 per tensor flips near-tied top-1 classes
    extra: dict = {"OpTypesToExcludeOutputQuantization": ["Gemm", "MatMul"],
                   **({"CalibPercentile": percentile} if method == "percentile" else {})}
    try:
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        model = onnx.load(str(pre))
        overrides = {w: [{"quant_type": QuantType.QInt16, "symmetric": True}] for w in onnx_float_weights(model, float_ops)}
        if stream_percentile is not None:
            overrides.update({t: [{"rmin": lo, "rmax": hi}] for t, (lo, hi)
                              in stream_ranges(model, calibration, stream_percentile).items()})
        if overrides:
            extra.update(UseQDQContribOps=True, TensorQuantOverrides=overrides)
        quantize_static(str(pre), str(out_path), _Reader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                        weight_type={"s8": QuantType.QInt8, "u8": QuantType.QUInt8}[weight_type],
                        calibrate_method=calib, extra_options=extra)
        q = onnx.load(str(out_path))
        drop_float_qdq(q, model)
        float_weights_in_place(q, model)
        fit_int32_bias(q, model)
        onnx.save(q, str(out_path))
    except EdgekitError:
        raise
    except Exception as exc:  # onnxruntime raises many kinds; one line
        raise EdgekitError(f"ONNX Runtime int8 quantization failed: {exc}") from exc
    finally:
        pre.unlink(missing_ok=True)
    return out_path


def tensor_batches(model, names: Sequence[str], calibration: np.ndarray, batch: int):
    """For each ``batch`` of ``calibration`` images, the fp32 values of the ONNX ``model``'s tensors ``names`` (in
    that order), from one ONNX Runtime session that outputs them."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in model.graph.output}
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None)
                              for t in dict.fromkeys(names) if t not in outputs)
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    for i in range(0, len(calibration), batch):
        yield session.run(list(names), {PIXEL_INPUT: calibration[i:i + batch]})


def stream_ranges(model, calibration: np.ndarray, percentile: float, batch: int = 25,
                  sample: int = 200_000) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{tensor: (low, high)}: the ``100 - percentile`` and ``percentile`` points (widened to hold 0) of the residual
    stream's tensors on ``calibration``, from up to ``sample`` values per batch drawn with a fixed seed."""
    activated = {i for n in model.graph.node if n.op_type in ACTIVATIONS for i in n.input}
    inits = {i.name for i in model.graph.initializer}
    names = [n.output[0] for n in model.graph.node
             if n.op_type == "Add" or (n.op_type == "Conv" and len(n.input) > 1 and n.input[1] in inits
                                       and n.output[0] not in activated)]
    names = [t for t in names if t not in {o.name for o in model.graph.output}]
    if not names:
        return {}
    rng = np.random.default_rng(0)
    seen: dict[str, list] = {t: [] for t in names}
    for values in tensor_batches(model, names, calibration, batch):
        for t, v in zip(names, values):
            v = v.ravel()
            seen[t].append(v if v.size <= sample else rng.choice(v, sample, replace=False))
    out = {}
    for t, parts in seen.items():
        lo, hi = np.percentile(np.concatenate(parts), [100.0 - percentile, percentile])
        out[t] = (np.array(min(lo, 0.0), np.float32), np.array(max(hi, 0.0), np.float32))
    return out


def drop_float_qdq(q, fp32) -> int:
    """Remove every QuantizeLinear -> DequantizeLinear pair of the QDQ model ``q`` whose producer is the graph input
    or a convolution with non-8-bit weights and whose consumers are all such convolutions: ONNX Runtime runs those
    convolutions in float, so the pair only adds rounding. Where the quantizer had folded an activation (Clip,
    Relu) into the pair's range, the activation from ``fp32`` (the graph that was quantized) is put back.
    Returns the number of pairs removed."""
    import onnx

    g = q.graph
    init = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)

    def float_conv(n) -> bool:
        if n.op_type != "Conv":
            return False
        dq = producer.get(n.input[1])
        return not (dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in init
                    and init[dq.input[0]].data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8))

    fp_act = {n.output[0]: n for n in fp32.graph.node if n.op_type in ("Clip", "Relu")}
    fp_consts = {n.output[0]: n for n in fp32.graph.node if n.op_type == "Constant"}
    fp_inits = {i.name: i for i in fp32.graph.initializer}
    graph_inputs = {i.name for i in g.input}
    removed = 0
    for qn in [n for n in g.node if n.op_type == "QuantizeLinear"]:
        t = qn.input[0]
        src = producer.get(t)
        if t in init or not (t in graph_inputs or (src is not None and float_conv(src))):
            continue
        dqs = consumers.get(qn.output[0], [])
        users = [u for dq in dqs for u in consumers.get(dq.output[0], [])]
        if not dqs or any(dq.op_type != "DequantizeLinear" for dq in dqs) or not users \
                or not all(float_conv(u) for u in users) or any(dq.output[0] in {o.name for o in g.output} for dq in dqs):
            continue
        for u in users:
            for dq in dqs:
                for k, name in enumerate(u.input):
                    if name == dq.output[0]:
                        u.input[k] = t
        for dq in dqs:
            g.node.remove(dq)
        g.node.remove(qn)
        removed += 1
        act = fp_act.get(t)
        if act is not None and src is not None and src.op_type != act.op_type:  # the quantizer folded it
            pre = t + "_before_" + act.op_type.lower()
            src.output[list(src.output).index(t)] = pre
            restored = onnx.NodeProto()
            restored.CopyFrom(act)
            restored.input[0] = pre
            at = list(g.node).index(src) + 1
            for extra in (x for x in act.input[1:] if x):
                if extra in fp_inits and extra not in init:
                    g.initializer.append(fp_inits[extra])
                    init[extra] = fp_inits[extra]
                elif extra in fp_consts and extra not in producer:
                    g.node.insert(at, fp_consts[extra])
                    producer[extra] = fp_consts[extra]
                    at += 1
            g.node.insert(at, restored)
    return removed


def float_weights_in_place(q, fp32) -> int:
    """Give every convolution of the QDQ model ``q`` that has 16-bit weights (the ``float_ops``) its float weights
    and bias from ``fp32`` directly: ONNX Runtime runs those convolutions in float and does not constant-fold a
    DequantizeLinear, so the 16-bit form dequantized every weight at every inference. Returns how many."""
    import onnx

    g = q.graph
    init = {i.name: i for i in g.initializer}
    fp = {i.name: i for i in fp32.graph.initializer}
    producer = {o: n for n in g.node for o in n.output}
    users: dict[str, int] = {}
    for n in g.node:
        for i in n.input:
            users[i] = users.get(i, 0) + 1
    done = 0
    for n in [c for c in g.node if c.op_type == "Conv"]:
        dqw = producer.get(n.input[1])
        if dqw is None or dqw.op_type != "DequantizeLinear" or dqw.input[0] not in init \
                or init[dqw.input[0]].data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8):
            continue
        for k in range(1, len(n.input)):
            dq = producer.get(n.input[k])
            name = dq.input[0].removesuffix("_quantized") if dq is not None and dq.op_type == "DequantizeLinear" else None
            if name not in fp or users.get(dq.output[0], 0) != 1:
                continue
            if name not in init:
                g.initializer.append(fp[name])
                init[name] = fp[name]
            n.input[k] = name
            g.node.remove(dq)
            for i in dq.input:  # the quantized tensor, its scale and zero point, unless shared
                users[i] -= 1
                if users[i] == 0 and i in init:
                    g.initializer.remove(init.pop(i))
        done += 1
    return done


def fit_int32_bias(q, fp32) -> int:
    """Widen per-channel 8-bit weight scales of the QDQ model ``q`` where a convolution's int32 bias (scale = input
    scale x weight scale) cannot hold its float bias (``fp32`` = the graph that was quantized), and requantize that
    channel's weights and bias. ONNX Runtime makes this adjustment only for symmetric weights; with asymmetric (u8)
    weights a nearly-zero weight channel gets a scale so small that its bias is clipped (by up to 1.4 on
    EfficientNet-Lite0's expansion convolutions). Returns the number of channels widened."""
    from onnx import numpy_helper as nh

    init = {i.name: i for i in q.graph.initializer}
    fp = {i.name: i for i in fp32.graph.initializer}
    producer = {o: n for n in q.graph.node for o in n.output}
    lim = np.iinfo(np.int32).max
    fixed = 0
    for n in q.graph.node:
        if n.op_type != "Conv" or len(n.input) < 3:
            continue
        dqx, dqw, dqb = (producer.get(i) for i in n.input[:3])
        if not all(d is not None and d.op_type == "DequantizeLinear" for d in (dqx, dqw, dqb)) \
                or dqw.input[0] not in init or dqb.input[0] not in init or dqx.input[1] not in init:
            continue
        wq = nh.to_array(init[dqw.input[0]])
        w_name, b_name = dqw.input[0].removesuffix("_quantized"), dqb.input[0].removesuffix("_quantized")
        if wq.dtype not in (np.int8, np.uint8) or w_name not in fp or b_name not in fp:
            continue
        s_in = float(nh.to_array(init[dqx.input[1]]))
        s_w = nh.to_array(init[dqw.input[1]]).astype(np.float64)
        b = nh.to_array(fp[b_name]).astype(np.float64)
        need = np.abs(b) / (s_in * lim) * 1.0001
        bad = s_w < need
        if s_w.shape != b.shape or not bad.any():
            continue
        zp = (nh.to_array(init[dqw.input[2]]).astype(np.int64) if len(dqw.input) > 2 and dqw.input[2]
              else np.zeros(s_w.shape, np.int64))
        w = nh.to_array(fp[w_name]).astype(np.float64)
        s_w = np.where(bad, need, s_w)
        col = (-1,) + (1,) * (w.ndim - 1)
        info = np.iinfo(wq.dtype)
        new = {dqw.input[0]: np.clip(np.round(w / s_w.reshape(col)) + zp.reshape(col), info.min, info.max).astype(wq.dtype),
               dqw.input[1]: s_w.astype(np.float32),
               dqb.input[0]: np.clip(np.round(b / (s_in * s_w)), -lim - 1, lim).astype(np.int32),
               dqb.input[1]: (s_in * s_w).astype(np.float32)}
        for name, arr in new.items():
            init[name].CopyFrom(nh.from_array(arr, name))
        fixed += int(bad.sum())
    return fixed


#: kinds of convolution int8 may keep in float (recipe ``quantize.float_ops``): ``stem``, the first convolution
#: (it sees the raw pixels); ``depthwise``, every grouped convolution with one input channel per group;
#: ``projection``, every other convolution whose output goes to no activation (MobileNet-style linear bottlenecks:
#: their output is the residual stream)
FLOAT_OPS = ("stem", "depthwise", "projection")
#: activation ops: a convolution feeding one of these is not a projection (ONNX op types, OpenVINO op types)
ACTIVATIONS = ("Clip", "Relu", "Sigmoid", "HardSigmoid", "HardSwish", "Swish", "Tanh")
OV_ACTIVATIONS = ("Clamp", "Relu", "Sigmoid", "HSigmoid", "HSwish", "Swish", "Tanh")


def _check_float_ops(float_ops: Sequence[str]) -> None:
    bad = [k for k in float_ops if k not in FLOAT_OPS]
    if bad:
        raise EdgekitError(f"float_ops {', '.join(bad)} not supported; allowed: {', '.join(FLOAT_OPS)}")


def openvino_float_scope(model, float_ops: Sequence[str]):
    """The NNCF IgnoredScope that keeps ``float_ops`` of an OpenVINO model in float (None when empty)."""
    import nncf

    _check_float_ops(float_ops)
    if not float_ops:
        return None
    convs = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]
    names = [convs[0].get_friendly_name()] if "stem" in float_ops and convs else []
    if "projection" in float_ops:
        names += [op.get_friendly_name() for op in convs[1:] if not _ov_activated(op)]
    types = ["GroupConvolution"] if "depthwise" in float_ops else []
    return nncf.IgnoredScope(names=names, types=types, validate=False)


def _ov_activated(conv) -> bool:
    """Whether an OpenVINO convolution's output (after its bias Add, if any) goes to an activation."""
    users = [t.get_node() for t in conv.output(0).get_target_inputs()]
    if len(users) == 1 and users[0].get_type_name() == "Add" and \
            users[0].input_value(1).get_node().get_type_name() in ("Constant", "Convert"):
        users = [t.get_node() for t in users[0].output(0).get_target_inputs()]
    return any(u.get_type_name() in OV_ACTIVATIONS for u in users)


def to_openvino_image(onnx_path: Path, xml_path: Path, calibration: np.ndarray | None = None,
                      overflow_fix: bool = False, float_ops: Sequence[str] = (),
                      stream_percentile: float | None = None, method: str | None = None,
                      gptq: bool = False) -> Path:
    """ONNX -> OpenVINO IR (fp32 weights kept); with ``calibration`` int8 through NNCF (see the module doc),
    ``float_ops`` (:data:`FLOAT_OPS`) left in float, and with ``stream_percentile`` the residual stream's
    activation ranges taken from that percentile of the calibration values (:func:`stream_ranges`,
    :func:`set_openvino_ranges`) instead of NNCF's. ``method`` ``"minmax"`` makes NNCF's activation ranges the
    calibration's minimum and maximum, as ONNX Runtime's MinMax calibration takes them (NNCF's default averages
    per-image extremes). ``gptq``: NNCF without bias correction, then the int8 weights of the 1x1 convolutions and
    the classifier rounded by :func:`gptq_openvino`."""
    import openvino as ov

    xml_path.parent.mkdir(parents=True, exist_ok=True)
    model = ov.convert_model(str(onnx_path))
    if calibration is not None:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix
        from nncf.quantization.range_estimator import RangeEstimatorParametersSet

        items = [{PIXEL_INPUT: calibration[i:i + 1]} for i in range(len(calibration))]
        fix = OverflowFix.ENABLE if overflow_fix else OverflowFix.FIRST_LAYER
        scope = openvino_float_scope(model, float_ops)
        ranges = {"activations_range_estimator_params": RangeEstimatorParametersSet.MINMAX} if method == "minmax" else {}
        try:
            model = nncf.quantize(model, nncf.Dataset(items), preset=nncf.QuantizationPreset.PERFORMANCE,
                                  subset_size=len(items), fast_bias_correction=False,
                                  **({"ignored_scope": scope} if scope is not None else {}),
                                  advanced_parameters=AdvancedQuantizationParameters(
                                      overflow_fix=fix, disable_bias_correction=gptq, **ranges))
        except Exception as exc:
            raise EdgekitError(f"NNCF int8 quantization failed: {exc}") from exc
        if gptq:
            gptq_openvino(model, onnx_path, calibration)
        if stream_percentile is not None:
            import onnx

            fp32 = onnx.load(str(onnx_path))
            producer = {o: n.name for n in fp32.graph.node for o in n.output}
            ranges = stream_ranges(fp32, calibration, stream_percentile)
            set_openvino_ranges(model, {producer[t]: r for t, r in ranges.items()})
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def gptq_round(w: np.ndarray, scale: np.ndarray, h: np.ndarray, qmin: int, qmax: int,
               damp: float = 1e-3) -> np.ndarray:
    """Integer weights q (``w`` ~ q x ``scale`` per row) that keep the layer's output error small, not each weight's
    (GPTQ: Frantar et al., 2022, with its activation order). ``w`` [out, in], ``scale`` [out], ``h`` [in, in] the
    second moment E[x x^T] of the layer's input. Input columns are rounded one at a time, largest E[x_i^2] first,
    and each rounding error is spread over the columns not yet rounded through the inverse of ``h`` (damped by
    ``damp`` x its mean diagonal), so that later columns absorb it. Minimises E||(w - q s) x||^2 greedily; with
    ``h`` diagonal it is round-to-nearest."""
    w = np.asarray(w, np.float64).copy()
    h = np.asarray(h, np.float64).copy()
    scale = np.asarray(scale, np.float64).reshape(-1)
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    order = np.argsort(-np.diag(h), kind="stable")
    w, h = w[:, order], h[np.ix_(order, order)]
    h += damp * np.mean(np.diag(h)) * np.eye(len(h))
    u = np.linalg.cholesky(np.linalg.inv(h)).T  # upper: inv(h) = u^T u
    q = np.empty_like(w)
    for i in range(w.shape[1]):
        q[:, i] = np.clip(np.round(w[:, i] / scale), qmin, qmax)
        err = (w[:, i] - q[:, i] * scale) / u[i, i]
        w[:, i + 1:] -= np.outer(err, u[i, i + 1:])
    return q[:, np.argsort(order)]


def _int8_weight(op):
    """(int8 Constant, scale Constant) of an OpenVINO op whose weight input is NNCF's Multiply(Convert(i8), scale),
    else None."""
    import openvino as ov

    mul = op.input_value(1).get_node()
    if mul.get_type_name() != "Multiply":
        return None
    cvt, sc = (mul.input_value(k).get_node() for k in (0, 1))
    if cvt.get_type_name() != "Convert" or sc.get_type_name() != "Constant":
        return None
    qc = cvt.input_value(0).get_node()
    if qc.get_type_name() != "Constant" or qc.get_element_type() != ov.Type.i8:
        return None
    return qc, sc


def gptq_openvino(model, onnx_path: Path, calibration: np.ndarray, damp: float = 1e-3, batch: int = 10) -> int:
    """Re-round, in place, the int8 weights NNCF gave the 1x1 convolutions and the classifier (MatMul) of the
    OpenVINO ``model`` with :func:`gptq_round`, against the second moment of each layer's input on ``calibration``
    (from the fp32 ONNX model ``onnx_path``, whose node names, or output names for the last op, OpenVINO keeps).
    Scales and each layer's integer range (NNCF's: [-63, 64] with the overflow fix) are unchanged, so the CPU plugin
    runs the same int8 kernels. Returns how many layers it re-rounded. NNCF's bias correction should be off: it corrects
    round-to-nearest's mean error, which GPTQ's objective (an uncentred second moment) already includes."""
    import onnx
    from onnx import numpy_helper as nh
    from openvino import opset13 as ops

    fp32 = onnx.load(str(onnx_path))
    inits = {i.name: i for i in fp32.graph.initializer}
    nodes = {**{n.output[0]: n for n in fp32.graph.node if n.output}, **{n.name: n for n in fp32.graph.node}}
    found = []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind not in ("Convolution", "MatMul") or (kind == "MatMul" and not op.get_attributes().get("transpose_b")):
            continue
        weight = _int8_weight(op)
        if weight is None:
            continue
        node = nodes.get(op.get_friendly_name().removesuffix("/WithoutBiases"))
        pointwise = weight[0].get_data().shape[2:] in ((), (1, 1))
        if node is None or len(node.input) < 2 or node.input[1] not in inits or not pointwise:
            continue
        found.append((node, *weight))
    if not found:
        return 0
    names = list(dict.fromkeys(node.input[0] for node, *_ in found))
    moments: dict[str, np.ndarray] = {}
    rows: dict[str, int] = dict.fromkeys(names, 0)
    for values in tensor_batches(fp32, names, calibration, batch):
        for t, v in zip(names, values):
            x = (v.transpose(0, 2, 3, 1) if v.ndim == 4 else v).reshape(-1, v.shape[1]).astype(np.float64)
            moments[t] = moments.get(t, 0.0) + x.T @ x
            rows[t] += len(x)
    for node, qc, sc in found:
        old = qc.get_data()
        w = nh.to_array(inits[node.input[1]]).reshape(old.shape[0], -1)
        # the layer's own integer range: with the overflow fix NNCF keeps convolutions and MatMuls to 7 bits but not
        # depthwise ones, and every channel's extreme weight sits on a bound (its scale is max |w| / bound)
        q = gptq_round(w, sc.get_data().reshape(-1), moments[node.input[0]] / rows[node.input[0]],
                       int(old.min()), int(old.max()), damp)
        new = ops.constant(q.reshape(old.shape).astype(np.int8))
        for target in list(qc.output(0).get_target_inputs()):
            target.replace_source_output(new.output(0))
    return len(found)


def set_openvino_ranges(model, ranges: dict) -> int:
    """Give the activation FakeQuantize after each op named in ``ranges`` ({ONNX node name: (low, high)}; OpenVINO
    keeps the ONNX node's name on the op that ends it) that range. A symmetric 256-level quantizer (NNCF's
    performance preset: low = -high x 128 / 127) stays symmetric around the larger bound. Returns how many changed."""
    from openvino import opset13 as ops

    changed = 0
    for fq in [op for op in model.get_ordered_ops() if op.get_type_name() == "FakeQuantize"]:
        src = fq.input_value(0).get_node()
        name = src.get_friendly_name()
        if src.get_type_name() == "Constant" or name not in ranges:
            continue
        lo_old = fq.input_value(1).get_node().get_data().ravel()
        hi_old = fq.input_value(2).get_node().get_data().ravel()
        if lo_old.size != 1:
            continue
        lo, hi = (float(v) for v in ranges[name])
        levels = fq.get_attributes()["levels"]
        if lo_old[0] < 0 and abs(-lo_old[0] / hi_old[0] * (levels // 2 - 1) / (levels // 2) - 1) < 1e-3:
            hi = max(-lo, hi)
            lo = -hi * (levels // 2) / (levels // 2 - 1)
        elif lo_old[0] >= 0:  # unsigned stays unsigned
            lo = 0.0
        else:  # asymmetric (mixed preset): zero must fall on a level, as NNCF's own ranges ensure
            step = (hi - lo) / (levels - 1)
            lo = -round(-lo / step) * step
            hi = lo + step * (levels - 1)
        for k, v in ((1, lo), (2, hi), (3, lo), (4, hi)):
            fq.input(k).replace_source_output(ops.constant(np.array(v, np.float32).reshape(
                fq.input_value(k).get_shape())).output(0))
        changed += 1
    return changed


def export_image_artifact(model, preprocess, out_dir: str | os.PathLike, *, model_name: str,
                          formats: Sequence[str] = ("onnx", "openvino"), labels: list[str] | None = None,
                          calibration: np.ndarray | None = None, calibration_method: str = "minmax",
                          percentile: float = 99.99, reduce_range: bool = False, weight_type: str = "s8",
                          float_ops: Sequence[str] = (), stream_percentile: float | None = None,
                          gptq: bool = False, recipe: dict | None = None,
                          extra: dict | None = None, overwrite: bool = True, write_files=None) -> Artifact:
    """Write an image classifier (``model(pixel_values) -> logits``; an
    :class:`edgekit.vision.efficientnet_lite.EfficientNetLite`) as an artifact folder.

    ``preprocess`` (:class:`edgekit.data.images.ImagePreprocessConfig`) goes into ``extra.preprocess``. With
    ``calibration`` (preprocessed images, float32 NCHW) the ONNX and OpenVINO models are int8 and their fp32
    versions are kept as ``onnx/model_fp32.onnx`` and ``openvino/model_fp32.xml`` (``extra.fp32``).
    ``write_files(tmp)`` may add files (a report) before the manifest is hashed.
    """
    import torch

    from edgekit.vision.io import save_image_model

    int8 = calibration is not None
    shape = preprocess.input_shape
    with staging_dir(out_dir, overwrite=overwrite) as tmp:
        save_image_model(model, tmp / "torch")
        paths, prec, fp32 = {"torch": "torch"}, {"torch": "fp32"}, {}
        if "onnx" in formats or "openvino" in formats:
            (tmp / "onnx").mkdir()
            onnx_fp32 = to_onnx_image(model, tmp / "onnx" / ("model_fp32.onnx" if int8 else "model.onnx"), shape)
            if int8 and "onnx" in formats:
                quantize_onnx_image(onnx_fp32, tmp / "onnx" / "model.onnx", calibration, calibration_method,
                                    percentile, reduce_range, weight_type, float_ops, stream_percentile)
            if "onnx" in formats:
                paths["onnx"], prec["onnx"] = "onnx/model.onnx", "int8" if int8 else "fp32"
                if int8:
                    fp32["onnx"] = "onnx/model_fp32.onnx"
            if "openvino" in formats:
                to_openvino_image(onnx_fp32, tmp / "openvino" / "model.xml", calibration,
                                  overflow_fix=weight_type == "u8", float_ops=float_ops,
                                  stream_percentile=stream_percentile, method=calibration_method, gptq=gptq)
                paths["openvino"], prec["openvino"] = "openvino/model.xml", "int8" if int8 else "fp32"
                if int8:
                    to_openvino_image(onnx_fp32, tmp / "openvino" / "model_fp32.xml")
                    fp32["openvino"] = "openvino/model_fp32.xml"
            if "onnx" not in formats:
                onnx_fp32.unlink()
                (tmp / "onnx").rmdir()
        with torch.no_grad():
            classes = int(model(torch.zeros(1, *shape)).shape[-1])
        manifest = Manifest(
            format_version=FORMAT_VERSION, edgekit_version=__version__, task=IMAGE_TASK, model=model_name,
            inputs=[TensorSpec(name=PIXEL_INPUT, dtype="float32", shape=["batch", *shape])],
            outputs=[TensorSpec(name=LOGITS, dtype="float32", shape=["batch", classes])],
            formats=paths, precision=prec, tokenizer=None, labels=labels, recipe=recipe,
            extra={**(extra or {}), "preprocess": preprocess.to_dict(), **({"fp32": fp32} if fp32 else {})},
        )
        if write_files is not None:
            write_files(tmp)
        finalize_manifest(tmp, manifest)
    return load_artifact(out_dir, verify=False)


def fp32_view(art: Artifact) -> Artifact:
    """The same artifact seen through its fp32 models (``extra.fp32``): load it on a runtime to run fp32."""
    fp32 = art.manifest.extra.get("fp32") or {}
    formats = {**art.manifest.formats, **fp32}
    precision = {k: ("fp32" if k in fp32 else v) for k, v in art.manifest.precision.items()}
    return Artifact(art.root, art.manifest.model_copy(update={"formats": formats, "precision": precision}))
