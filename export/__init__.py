"""Export a model to an artifact folder: torch (safetensors), ONNX and OpenVINO IR, fp32 or int8.

>>> from edgekit.export import export
>>> export("minilm-l6", "out/minilm", formats=("onnx", "openvino"))   # doctest: +SKIP
Artifact('out/minilm', task='feature-extraction', formats=['onnx', 'openvino', 'torch'])
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from edgekit import __version__
from edgekit.artifact import FORMAT_VERSION, Artifact, Manifest, TensorSpec, finalize_manifest, load_artifact, staging_dir
from edgekit.errors import InputError
from edgekit.models import OUTPUT_NAME, TOKEN_TYPES, hf_model_of, input_names, write_sentence_pooling

EXPORT_FORMATS = ("torch", "onnx", "openvino")


def parse_formats(formats: str | Iterable[str]) -> tuple[str, ...]:
    """``"onnx,openvino"`` -> ``("onnx", "openvino")``, checked against the known formats."""
    items = [f.strip() for f in formats.split(",")] if isinstance(formats, str) else list(formats)
    items = [f for f in items if f]
    bad = [f for f in items if f not in EXPORT_FORMATS]
    if bad or not items:
        raise InputError(f"unknown format {bad[0] if bad else ''!r}; allowed: {', '.join(EXPORT_FORMATS)} (comma-separated)")
    return tuple(dict.fromkeys(items))


def export_artifact(
    model,
    tokenizer,
    out_dir: str | os.PathLike,
    *,
    task: str,
    model_name: str,
    formats: Sequence[str] = EXPORT_FORMATS,
    labels: list[str] | None = None,
    int8_calibration: dict[str, np.ndarray] | None = None,
    fp32_layers: Sequence[str] = (),
    act_qparams: dict[str, tuple[float, int]] | None = None,
    weight_bits: int | None = None,
    recipe: dict | None = None,
    extra_files: Callable[[Path], dict[str, str]] | None = None,
    overwrite: bool = True,
    progress: bool = True,
) -> Artifact:
    """Write ``model`` (a task wrapper from :mod:`edgekit.models`) as an artifact folder.

    The torch format (HF config + safetensors) is always written so the torch runtime can run the
    same artifact. With ``int8_calibration`` (int64 feeds of real text), ONNX is quantised with ONNX
    Runtime (static QDQ, per-channel s8 weights, u8 activations, MatMuls with constant weights only)
    and OpenVINO with NNCF; otherwise both stay fp32. ``fp32_layers`` names Linear modules (as in
    ``model.named_modules()``, e.g. ``encoder.layer.3.output.dense``) that both keep in fp32. ``act_qparams``
    ({module name: (scale, zero point)}) replaces ONNX Runtime's own activation calibration for those
    Linears with the values the model was trained with (edgekit's QAT), and ``weight_bits`` its weight rounding. ``extra_files(tmp)`` may write more files into
    the staging folder and returns the formats it added (``{"native": "native"}``).
    """
    from tqdm.auto import tqdm

    from . import onnx_export, openvino_export

    formats = tuple(dict.fromkeys(["torch", *formats]))
    out_name = OUTPUT_NAME[task]
    inputs = input_names(hf_model_of(model))
    if int8_calibration is not None and TOKEN_TYPES in inputs and TOKEN_TYPES not in int8_calibration:
        # single texts are one segment; calibrating ORT / NNCF needs every graph input
        int8_calibration = {**int8_calibration, TOKEN_TYPES: np.zeros_like(int8_calibration["input_ids"])}
    steps = [f for f in formats] + (["extra"] if extra_files else [])
    precision = "int8" if int8_calibration is not None else "fp32"
    with staging_dir(out_dir, overwrite=overwrite) as tmp, tqdm(
        total=len(steps), desc="export", disable=not progress, unit="step"
    ) as bar:
        paths: dict[str, str] = {}
        prec: dict[str, str] = {}
        hf = hf_model_of(model)
        hf.save_pretrained(tmp / "torch", safe_serialization=True)
        if getattr(model, "pooling", None) is not None:  # a sentence embedder: its torch folder pools as it does
            write_sentence_pooling(tmp / "torch", model.pooling, model.normalize, _width(hf, task))
        tokenizer.save_pretrained(tmp / "tokenizer")
        paths["torch"], prec["torch"] = "torch", "fp32"
        bar.update()
        onnx_fp32 = None
        if "onnx" in formats or "openvino" in formats:
            bar.set_postfix_str("onnx")
            onnx_dir = tmp / "onnx"
            onnx_dir.mkdir()
            onnx_fp32 = onnx_export.to_onnx(model, onnx_dir / ("model.onnx" if int8_calibration is None else "model_fp32.onnx"),
                                            out_name, token_types=TOKEN_TYPES in inputs,
                                            per_token=task == "token-classification")
        if "onnx" in formats:
            if int8_calibration is not None:
                onnx_export.quantize_static_qdq(onnx_fp32, tmp / "onnx" / "model.onnx", int8_calibration, fp32_layers,
                                                act_qparams, weight_bits)
            paths["onnx"], prec["onnx"] = "onnx/model.onnx", precision
            bar.update()
        if "openvino" in formats:
            bar.set_postfix_str("openvino")
            openvino_export.to_openvino(onnx_fp32, tmp / "openvino" / "model.xml", int8_calibration, fp32_layers)
            paths["openvino"], prec["openvino"] = "openvino/model.xml", precision
            bar.update()
        if onnx_fp32 is not None and int8_calibration is not None:
            onnx_fp32.unlink()
        elif onnx_fp32 is not None and "onnx" not in formats:
            onnx_fp32.unlink()
        if onnx_fp32 is not None and not any((tmp / "onnx").iterdir()):
            (tmp / "onnx").rmdir()
        if extra_files:
            bar.set_postfix_str("extra")
            added = extra_files(tmp) or {}
            paths.update(added)
            bar.update()
        manifest = Manifest(
            format_version=FORMAT_VERSION,
            edgekit_version=__version__,
            task=task,
            model=model_name,
            inputs=[TensorSpec(name=n, dtype="int64", shape=["batch", "sequence"]) for n in inputs],
            outputs=[TensorSpec(name=out_name, dtype="float32", shape=_out_shape(hf, task))],
            max_sequence_length=_max_length(model),
            formats=paths,
            precision={**prec, **{k: "int8" for k in paths if k not in prec}},
            tokenizer="tokenizer",
            labels=labels,
            recipe=recipe,
        )
        finalize_manifest(tmp, manifest)
    return load_artifact(out_dir, verify=False)


def _out_shape(hf, task: str) -> list:
    """The output's shape in the manifest: per-token logits carry the sequence axis."""
    cfg = hf.config
    if task == "token-classification":
        return ["batch", "sequence", int(cfg.num_labels)]
    return ["batch", _width(hf, task)]


def _width(hf, task: str) -> int:
    cfg = hf.config
    return int(cfg.num_labels if task != "feature-extraction" else getattr(cfg, "hidden_size", None) or cfg.dim)


def _max_length(model) -> int:
    """The longest sequence the model takes: its position table less the first position id (RoBERTa's 514
    positions start at 2: 512 tokens)."""
    from edgekit.arch import encoder

    try:
        enc = encoder(model)
    except InputError:  # no text encoder adapter: the config's own limit
        return int(getattr(hf_model_of(model).config, "max_position_embeddings", 512))
    return int(enc.max_position - enc.position_offset)


def export(model: str | os.PathLike, out_dir: str | os.PathLike, formats: str | Iterable[str] = ("onnx", "openvino"),
           task: str | None = None, progress: bool = True) -> Artifact:
    """Export a zoo name or Hugging Face folder (fp32) to an artifact folder."""
    from edgekit.zoo import load_torch, resolve

    fmts = parse_formats(formats)
    ref = resolve(model, task)
    if ref.kind == "artifact":
        raise InputError(f"{model} is already an artifact; export takes a zoo name or a Hugging Face model folder")
    wrapper, tok = load_torch(ref)
    labels = None
    if ref.task in ("text-classification", "token-classification"):
        id2label = hf_model_of(wrapper).config.id2label
        labels = [id2label[i] for i in sorted(id2label)]
    return export_artifact(wrapper, tok, out_dir, task=ref.task, model_name=ref.name, formats=fmts, labels=labels,
                           progress=progress)
