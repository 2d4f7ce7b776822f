"""torch -> ONNX (dynamic batch and sequence axes), and ONNX Runtime int8 (static QDQ)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.models import INPUT_NAMES, TOKEN_TYPES

OPSET = 18


def _example(batch: int = 2, seq: int = 16):
    import torch

    ids = torch.randint(1000, 2000, (batch, seq), dtype=torch.long)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, seq // 2 :] = 0  # one padded row so masking is part of the traced graph
    return ids, mask


def to_onnx(model, path: Path, output_name: str, token_types: bool = False, per_token: bool = False) -> Path:
    """Export with the legacy TorchScript exporter: it writes one self-contained file with named
    dynamic axes and matches torch to ~4e-5 here; the dynamo exporter matches too but
    is slower to run and splits large weights into side files.

    ``token_types``: the graph takes ``token_type_ids`` as a third input (sentence pairs on BERT);
    ``per_token``: the output is [batch, sequence, tags] (token classification), else [batch, width]."""
    import torch

    model = model.eval()
    ids, mask = _example()
    inputs, names = (ids, mask), list(INPUT_NAMES)
    if token_types:
        types = torch.zeros_like(ids)
        types[0, ids.shape[1] // 2 :] = 1  # a pair in row 0, so the segment lookup is traced as data
        inputs, names = inputs + (types,), names + [TOKEN_TYPES]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    axes[output_name] = {0: "batch", 1: "sequence"} if per_token else {0: "batch"}
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            inputs,
            str(path),
            input_names=names,
            output_names=[output_name],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    return path


class _FeedsReader:
    """ONNX Runtime's CalibrationDataReader over a dict of stacked feeds, a few rows at a time."""

    def __init__(self, feeds: dict[str, np.ndarray], batch: int = 8):
        n = len(next(iter(feeds.values())))  # feeds hold every graph input (export_artifact adds token_type_ids)
        self._batches = iter([{k: v[i : i + batch] for k, v in feeds.items()} for i in range(0, n, batch)])

    def get_next(self):
        return next(self._batches, None)


def node_pattern(module_name: str) -> str:
    """The fragment of exported node names that belongs to a torch module:
    ``model.bert.encoder.layer.3.output.dense`` -> ``encoder/layer.3/output/dense/``."""
    import re

    tail = module_name.split("encoder.", 1)[-1] if "encoder." in module_name else module_name
    path = "encoder/" + tail.replace(".", "/") if "encoder." in module_name else tail.replace(".", "/")
    return re.sub(r"/(\d+)(?=/|$)", r".\1", path) + "/"


def _matmuls_of(path: Path, modules) -> list[str]:
    import onnx

    pats = [node_pattern(m) for m in modules]
    g = onnx.load(str(path), load_external_data=False).graph
    return [n.name for n in g.node if n.op_type == "MatMul" and any(p in n.name for p in pats)]


def _activation_matmuls(path: Path) -> list[str]:
    """Names of MatMuls whose second input is not a weight (attention QK^T and PV).

    ``extra_options={"MatMulConstBOnly": True}`` is ignored by the QDQ quantizer here, so they are
    excluded by name."""
    import onnx

    g = onnx.load(str(path), load_external_data=False).graph
    weights = {i.name for i in g.initializer}
    return [n.name for n in g.node if n.op_type == "MatMul" and n.input[1] not in weights]


def _set_activation_qparams(model, act_qparams: dict[str, tuple[float, int]]) -> int:
    """Overwrite the input scale / zero point of quantised Linear MatMuls with given values (keyed by
    torch module name), so ONNX Runtime runs the activation quantisation the model was trained with.
    Returns how many MatMuls were set."""
    from onnx import numpy_helper

    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    done = 0
    for module, (scale, zp) in act_qparams.items():
        pat = node_pattern(module)
        for n in g.node:
            if n.op_type != "MatMul" or pat not in n.name:
                continue
            dq = producer.get(n.input[0])
            if dq is None or dq.op_type != "DequantizeLinear":
                continue
            q = producer.get(dq.input[0])
            for node in (dq, q):
                if node is None:
                    continue
                s_name, z_name = node.input[1], node.input[2]
                inits[s_name].CopyFrom(numpy_helper.from_array(np.array(scale, np.float32), s_name))
                inits[z_name].CopyFrom(numpy_helper.from_array(np.array(zp, np.uint8), z_name))
            done += 1
    return done


def _requantize_weights(model, source: dict, modules, bits: int) -> int:
    """Round the s8 weights of the named Linears' MatMuls (torch module names) as edgekit's fake-quant and native
    engine do: per output channel, scale = max |w| / weight_qmax(bits), |q| <= weight_qmax(bits) (63 for the
    7-bit weights of AVX2 hosts). ONNX Runtime's quantizer rounds to 8 bits with its own scales; after QAT with
    7-bit weights that put its logits up to 0.36 away from torch's on a small random DistilBERT. ``source``: the
    fp32 initializers of the model the quantizer read, by name. Returns how many MatMuls were rewritten."""
    from onnx import numpy_helper

    from edgekit.formats.int8 import weight_qmax

    qmax = weight_qmax(bits)
    g = model.graph
    inits = {i.name: i for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}
    pats = [node_pattern(m) for m in modules]
    done = 0
    for n in g.node:
        if n.op_type != "MatMul" or not any(p in n.name for p in pats):
            continue
        dq = producer.get(n.input[1])
        if dq is None or dq.op_type != "DequantizeLinear" or not dq.input[0].endswith("_quantized"):
            continue
        q_name, s_name = dq.input[0], dq.input[1]
        w = numpy_helper.to_array(source[q_name[: -len("_quantized")]]).astype(np.float32)  # [K, N]
        amax = np.abs(w).max(axis=0)
        scale = np.where(amax > 0, amax / np.float32(qmax), np.float32(1.0)).astype(np.float32)
        q = np.clip(np.round(w / scale[None, :]), -qmax, qmax).astype(np.int8)
        inits[q_name].CopyFrom(numpy_helper.from_array(q, q_name))
        inits[s_name].CopyFrom(numpy_helper.from_array(scale, s_name))
        done += 1
    return done


def float_outside_linears(model) -> int:
    """Keep every tensor fp32 except the inputs of quantised Linear MatMuls, as edgekit's scheme does.

    ONNX Runtime's QDQ quantizer also puts QuantizeLinear/DequantizeLinear on the MatMul outputs and lets
    the residual Adds read the dequantised LayerNorm outputs, so the residual stream and the q/k/v and
    dense outputs get rounded to u8 with its own calibration (1.6 points lost on minilm-l6-bbc, where the
    torch fake-quant and the native engine round only the Linear inputs). This rewires every consumer of
    an activation Q->DQ pair that is not a Linear MatMul's data input back to the fp32 tensor, then drops
    the pairs nobody reads. ``model``: an ONNX ModelProto, changed in place. Returns the number of rewired
    inputs."""
    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    weights = {i.name for i in g.initializer}

    def is_linear(n) -> bool:  # a MatMul whose second input is a dequantised constant weight
        if n.op_type != "MatMul":
            return False
        dq = producer.get(n.input[1])
        return dq is not None and dq.op_type == "DequantizeLinear" and dq.input[0] in weights

    rewired = 0
    for dq in [n for n in g.node if n.op_type == "DequantizeLinear"]:
        q = producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue
        src = q.input[0]
        for n in g.node:
            for i, name in enumerate(n.input):
                if name == dq.output[0] and not (i == 0 and is_linear(n)):
                    n.input[i] = src
                    rewired += 1
    outputs = {o.name for o in g.output}
    while True:  # drop Q/DQ nodes whose outputs nobody reads any more
        used = {i for n in g.node for i in n.input} | outputs
        dead = [n for n in g.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and not any(o in used for o in n.output)]
        if not dead:
            break
        for n in dead:
            g.node.remove(n)
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    return rewired


def quantize_static_qdq(fp32_path: Path, out_path: Path, calibration: dict[str, np.ndarray], fp32_layers=(),
                        act_qparams: dict[str, tuple[float, int]] | None = None,
                        weight_bits: int | None = None) -> Path:
    """Static int8 in QDQ form: s8 per-channel weights, u8 activations, calibrated on real text.

    Only MatMuls with a constant weight (the Linear layers) are quantised, as in edgekit's own scheme;
    attention products, LayerNorm and softmax stay fp32, and so do the Linear modules in ``fp32_layers``.
    Measured on minilm-l6 (64 bbc-news test texts): all Linears int8 gives embedding cosine 0.937 vs
    fp32; keeping the six FFN-output Linears (input = GELU output, long-tailed) in fp32 gives 0.994.
    With ``act_qparams`` and ``weight_bits`` (a QAT-trained model) those Linears get the activation qparams and
    the weight rounding it was trained with (:func:`_set_activation_qparams`, :func:`_requantize_weights`).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out_path.with_name("model_pre.onnx")
    try:
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(
            str(pre), str(out_path), _FeedsReader(calibration),
            quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            op_types_to_quantize=["MatMul"], calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=_activation_matmuls(pre) + _matmuls_of(pre, fp32_layers),
        )
        # edgekit's scheme on the quantizer's output, in one load and save: the QAT weight rounding, only the
        # Linear inputs rounded, the QAT activation qparams
        model = onnx.load(str(out_path))
        if act_qparams and weight_bits is not None:
            _requantize_weights(model, {i.name: i for i in onnx.load(str(pre)).graph.initializer}, act_qparams,
                                weight_bits)
        float_outside_linears(model)
        if act_qparams:
            _set_activation_qparams(model, act_qparams)
        onnx.save(model, str(out_path))
    except Exception as exc:  # onnxruntime raises many kinds; report one line
        raise EdgekitError(f"ONNX Runtime int8 quantization failed: {exc}") from exc
    finally:
        pre.unlink(missing_ok=True)
    return out_path
