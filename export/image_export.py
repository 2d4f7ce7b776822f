"""Image classifiers (CNNs) -> artifact: torch weights, ONNX and OpenVINO IR, fp32 and calibrated int8.

One input, ``pixel_values`` float32 [batch, C, H, W] (NCHW, preprocessed as the manifest's
``extra.preprocess`` says), dynamic batch; one output, ``logits`` float32 [batch, classes].

int8 (``calibration`` = preprocessed real photos):
- ONNX Runtime: ``quantize_static``, QDQ, per-channel weights, u8 activations, MinMax or percentile
  calibration, every Conv / Gemm / MatMul. Weights are s8 on CPUs with VNNI and u8 (asymmetric) elsewhere:
  without VNNI, ONNX Runtime's u8 x s8 kernels use ``vpmaddubsw``, whose int16 pair sums saturate.
- OpenVINO: ``nncf.quantize`` with the default (CNN) model type and the performance preset and full bias
  correction; ``overflow_fix`` (7-bit weights in every layer, NNCF's answer to the same saturation) on CPUs
  without VNNI.
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
                        float_ops: Sequence[str] = ()) -> Path:
    """Static QDQ int8 of an image model with ONNX Runtime (see the module doc). The ``float_ops`` convolutions
    get 16-bit weights: ONNX Runtime has no int16 convolution kernel, so they run in float on dequantized
    weights while every tensor around them keeps its int8 quantization. (Leaving them out with
    ``nodes_to_exclude`` instead made agreement worse, not better: 0.38 without the depthwise convolutions, 0.71
    without them and the stem, against 0.835 all int8; not investigated further.)"""
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
        if overrides:
            extra.update(UseQDQContribOps=True, TensorQuantOverrides=overrides)
        quantize_static(str(pre), str(out_path), _Reader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                        weight_type={"s8": QuantType.QInt8, "u8": QuantType.QUInt8}[weight_type],
                        calibrate_method=calib, extra_options=extra)
    except EdgekitError:
        raise
    except Exception as exc:  # onnxruntime raises many kinds; one line
        raise EdgekitError(f"ONNX Runtime int8 quantization failed: {exc}") from exc
    finally:
        pre.unlink(missing_ok=True)
    return out_path


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
                      overflow_fix: bool = False, float_ops: Sequence[str] = ()) -> Path:
    """ONNX -> OpenVINO IR (fp32 weights kept); with ``calibration`` int8 through NNCF (see the module doc),
    ``float_ops`` (:data:`FLOAT_OPS`) left in float."""
    import openvino as ov

    xml_path.parent.mkdir(parents=True, exist_ok=True)
    model = ov.convert_model(str(onnx_path))
    if calibration is not None:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

        items = [{PIXEL_INPUT: calibration[i:i + 1]} for i in range(len(calibration))]
        fix = OverflowFix.ENABLE if overflow_fix else OverflowFix.FIRST_LAYER
        scope = openvino_float_scope(model, float_ops)
        try:
            model = nncf.quantize(model, nncf.Dataset(items), preset=nncf.QuantizationPreset.PERFORMANCE,
                                  subset_size=len(items), fast_bias_correction=False,
                                  **({"ignored_scope": scope} if scope is not None else {}),
                                  advanced_parameters=AdvancedQuantizationParameters(overflow_fix=fix))
        except Exception as exc:
            raise EdgekitError(f"NNCF int8 quantization failed: {exc}") from exc
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def export_image_artifact(model, preprocess, out_dir: str | os.PathLike, *, model_name: str,
                          formats: Sequence[str] = ("onnx", "openvino"), labels: list[str] | None = None,
                          calibration: np.ndarray | None = None, calibration_method: str = "minmax",
                          percentile: float = 99.99, reduce_range: bool = False, weight_type: str = "s8",
                          float_ops: Sequence[str] = (), recipe: dict | None = None,
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
                                    percentile, reduce_range, weight_type, float_ops)
            if "onnx" in formats:
                paths["onnx"], prec["onnx"] = "onnx/model.onnx", "int8" if int8 else "fp32"
                if int8:
                    fp32["onnx"] = "onnx/model_fp32.onnx"
            if "openvino" in formats:
                to_openvino_image(onnx_fp32, tmp / "openvino" / "model.xml", calibration,
                                  overflow_fix=weight_type == "u8", float_ops=float_ops)
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
