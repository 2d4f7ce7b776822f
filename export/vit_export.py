"""Export a ViT / DeiT image classifier to an artifact: torch (Hugging Face folder), ONNX and OpenVINO, fp32 or int8.

The image graph and its signature are :mod:`edgekit.export.image_export`'s (shared with the CNNs); what is
ViT-specific lives here: the Hugging Face torch folder, the fake-quant ``quant.json``, and the QDQ int8 with the
activation ranges edgekit's QAT trained.

One float32 input ``pixel_values`` [batch, C, H, W] (dynamic batch), one output ``logits`` [batch, classes].
The preprocessing (:class:`edgekit.data.images.ImagePreprocessConfig`) goes into ``manifest.extra.preprocess``
and the torch folder's ``preprocessor_config.json``. int8 uses the same exporters as text: ONNX Runtime static
QDQ (with the activation qparams edgekit's QAT trained, when given) and NNCF for OpenVINO, calibrated on
``int8_calibration`` (real training images); the torch folder gets ``quant.json`` for the fake-quant reference.

>>> export_vit("vit-fmnist", "out/vit-fp32")       # doctest: +SKIP
"""
from __future__ import annotations

import json
import os
from typing import Sequence

import numpy as np

from edgekit import __version__
from edgekit.artifact import FORMAT_VERSION, Manifest, TensorSpec, finalize_manifest, load_artifact, staging_dir
from edgekit.errors import InputError

from .image_export import IMAGE_TASK, LOGITS, PIXEL_INPUT, to_onnx_image

def export_vit_artifact(model, prep, out_dir, *, model_name: str, labels: list[str] | None,
                          formats: Sequence[str] = ("onnx", "openvino"), qstate: dict | None = None,
                          int8_calibration: dict[str, np.ndarray] | None = None, fp32_layers: Sequence[str] = (),
                          act_qparams: dict | None = None, recipe: dict | None = None, overwrite: bool = True,
                          progress: bool = True, native: bool = False):
    """Write ``model`` (an :class:`edgekit.vision.vit_models.ImageClassifier`) as an artifact folder; ``native``:
    also edgekit's native format (``native/``, :func:`edgekit.formats.native.write_native`, with ``qstate``)."""
    from tqdm.auto import tqdm

    from edgekit.models import hf_model_of
    from . import onnx_export, openvino_export

    hf = hf_model_of(model)
    shape = (1, *prep.input_shape)
    precision = "int8" if int8_calibration is not None else "fp32"
    with staging_dir(out_dir, overwrite=overwrite) as tmp, tqdm(total=1 + len(formats), desc="export",
                                                               disable=not progress, unit="step") as bar:
        hf.save_pretrained(tmp / "torch", safe_serialization=True)
        (tmp / "torch" / "preprocessor_config.json").write_text(json.dumps(_hf_preprocessor(prep), indent=2))
        if qstate:
            (tmp / "torch" / "quant.json").write_text(json.dumps(qstate, indent=2))
        paths, prec = {"torch": "torch"}, {"torch": "fp32"}
        if native:
            from edgekit.formats.native import write_native

            write_native(model, IMAGE_TASK, qstate, tmp / "native", labels)
            paths["native"], prec["native"] = "native", "int8" if qstate else "fp32"
        bar.update()
        onnx_dir = tmp / "onnx"
        onnx_dir.mkdir()
        fp32 = to_onnx_image(model, onnx_dir / ("model.onnx" if int8_calibration is None else "model_fp32.onnx"),
                             shape[1:])
        if "onnx" in formats:
            if int8_calibration is not None:
                onnx_export.quantize_static_qdq(fp32, onnx_dir / "model.onnx", int8_calibration, fp32_layers,
                                                act_qparams, qstate["weight_bits"] if qstate else None)
            paths["onnx"], prec["onnx"] = "onnx/model.onnx", precision
            bar.update()
        if "openvino" in formats:
            openvino_export.to_openvino(fp32, tmp / "openvino" / "model.xml", int8_calibration, fp32_layers)
            paths["openvino"], prec["openvino"] = "openvino/model.xml", precision
            bar.update()
        if int8_calibration is not None or "onnx" not in formats:
            fp32.unlink()
        if not any(onnx_dir.iterdir()):
            onnx_dir.rmdir()
        tokens = (prep.crop // _patch(hf)) ** 2 + 1 if _patch(hf) else 0
        manifest = Manifest(
            format_version=FORMAT_VERSION, edgekit_version=__version__, task=IMAGE_TASK, model=model_name,
            inputs=[TensorSpec(name=PIXEL_INPUT, dtype="float32", shape=["batch", *shape[1:]])],
            outputs=[TensorSpec(name=LOGITS, dtype="float32", shape=["batch", int(hf.config.num_labels)])],
            max_sequence_length=max(tokens, 1), formats=paths, precision=prec, tokenizer=None, labels=labels,
            recipe=recipe, extra={"preprocess": prep.to_dict()})
        finalize_manifest(tmp, manifest)
    return load_artifact(out_dir, verify=False)


def _patch(hf) -> int:
    p = getattr(hf.config, "patch_size", 0)
    return int(p[0] if isinstance(p, (list, tuple)) else p)


def _hf_preprocessor(prep) -> dict:
    return {"image_processor_type": "ViTImageProcessor", "do_resize": True,
            "size": {"height": prep.crop, "width": prep.crop}, "do_rescale": True,
            "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": list(prep.mean),
            "image_std": list(prep.std)}


def export_vit(model: str | os.PathLike, out_dir: str | os.PathLike, formats=("onnx", "openvino"),
                 progress: bool = True):
    """Export a zoo name or ViT / DeiT folder (fp32) to an artifact folder."""
    from edgekit.vision.vit_models import load_image_classifier
    from edgekit.zoo import resolve

    ref = resolve(model)
    if ref.kind == "artifact":
        raise InputError(f"{model} is already an artifact; export takes a zoo name or a Hugging Face model folder")
    wrapper, prep = load_image_classifier(ref.path)
    id2label = wrapper.model.config.id2label
    return export_vit_artifact(wrapper, prep, out_dir, model_name=ref.name, formats=tuple(formats),
                                 labels=[id2label[i] for i in sorted(id2label)], progress=progress)
