"""Image classifiers (CNNs) -> artifact: torch weights, ONNX and OpenVINO IR, fp32 and calibrated int8.

One input, ``pixel_values`` float32 [batch, C, H, W] (NCHW, preprocessed as the manifest's
``extra.preprocess`` says), dynamic batch; one output, ``logits`` float32 [batch, classes].

int8 (``calibration`` = preprocessed real photos):
- ONNX Runtime: ``quantize_static``, QDQ, per-channel weights, u8 activations, MinMax or percentile
  calibration, every Conv / Gemm / MatMul. Weights are s8 on CPUs with VNNI and u8 (asymmetric) elsewhere:
  without VNNI, ONNX Runtime's u8 x s8 kernels use ``vpmaddubsw``, whose int16 pair sums saturate. Measured on
  EfficientNet-Lite0 (AVX2 host, 120 held-out photo crops, 64 calibration crops): s8 weights, top-1 agreement
  with fp32 0.66 (logit cosine 0.92); s8 with reduce_range (7-bit) 0.70 (0.956); u8 weights 0.86 (0.986);
  percentile calibration and keeping the stem conv and the classifier fp32 did not help.
- OpenVINO: ``nncf.quantize`` with the default (CNN) model type and the performance preset (symmetric
  weights and activations) and full bias correction; ``overflow_fix`` (7-bit weights in every layer, NNCF's
  answer to the same saturation) on CPUs without VNNI. Same measurement: fast bias correction, overflow fix on
  the first layer only (NNCF's default) 0.60 (on all 600 crops, 300 calibration crops); overflow fix everywhere
  0.74 (0.962); plus full bias correction 0.79 (0.978). Recipe ptq with these settings (128 calibration crops),
  all 600 held-out crops: ONNX Runtime 0.810, OpenVINO 0.763 (s8 weights / NNCF defaults: 0.663 / 0.595). These crops are abstract renders on which the model's
  top-1 is rarely confident (median top-1 probability 0.20), so small logit changes flip it.
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


def quantize_onnx_image(fp32_path: Path, out_path: Path, calibration: np.ndarray, method: str = "minmax",
                        percentile: float = 99.99, reduce_range: bool = False, weight_type: str = "s8") -> Path:
    """Static QDQ int8 of an image model with ONNX Runtime (see the module doc)."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    pre = out_path.with_name(out_path.stem + "_pre.onnx")
    calib = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}[method]
    extra = {"CalibPercentile": percentile} if method == "percentile" else {}
    try:
        quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(out_path), _Reader(calibration), quant_format=QuantFormat.QDQ, per_channel=True,
                        reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                        weight_type={"s8": QuantType.QInt8, "u8": QuantType.QUInt8}[weight_type],
                        calibrate_method=calib, extra_options=extra)
    except Exception as exc:  # onnxruntime raises many kinds; one line
        raise EdgekitError(f"ONNX Runtime int8 quantization failed: {exc}") from exc
    finally:
        pre.unlink(missing_ok=True)
    return out_path


def to_openvino_image(onnx_path: Path, xml_path: Path, calibration: np.ndarray | None = None,
                      overflow_fix: bool = False) -> Path:
    """ONNX -> OpenVINO IR (fp32 weights kept); with ``calibration`` int8 through NNCF (see the module doc)."""
    import openvino as ov

    xml_path.parent.mkdir(parents=True, exist_ok=True)
    model = ov.convert_model(str(onnx_path))
    if calibration is not None:
        import nncf
        from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, OverflowFix

        items = [{PIXEL_INPUT: calibration[i:i + 1]} for i in range(len(calibration))]
        fix = OverflowFix.ENABLE if overflow_fix else OverflowFix.FIRST_LAYER
        try:
            model = nncf.quantize(model, nncf.Dataset(items), preset=nncf.QuantizationPreset.PERFORMANCE,
                                  subset_size=len(items), fast_bias_correction=False,
                                  advanced_parameters=AdvancedQuantizationParameters(overflow_fix=fix))
        except Exception as exc:
            raise EdgekitError(f"NNCF int8 quantization failed: {exc}") from exc
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def export_image_artifact(model, preprocess, out_dir: str | os.PathLike, *, model_name: str,
                          formats: Sequence[str] = ("onnx", "openvino"), labels: list[str] | None = None,
                          calibration: np.ndarray | None = None, calibration_method: str = "minmax",
                          percentile: float = 99.99, reduce_range: bool = False, weight_type: str = "s8",
                          recipe: dict | None = None,
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
                                    percentile, reduce_range, weight_type)
            if "onnx" in formats:
                paths["onnx"], prec["onnx"] = "onnx/model.onnx", "int8" if int8 else "fp32"
                if int8:
                    fp32["onnx"] = "onnx/model_fp32.onnx"
            if "openvino" in formats:
                to_openvino_image(onnx_fp32, tmp / "openvino" / "model.xml", calibration, overflow_fix=weight_type == "u8")
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
