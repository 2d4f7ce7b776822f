"""ONNX -> OpenVINO IR, fp32 weights kept (or int8 via NNCF)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError


def to_openvino(onnx_path: Path, xml_path: Path, calibration: dict[str, np.ndarray] | None = None,
                fp32_layers=()) -> Path:
    """Convert; with ``calibration`` quantise with NNCF (transformer model type, mixed preset:
    symmetric weights, asymmetric activations), which keeps MiniLM's embedding cosine >= 0.99."""
    import openvino as ov

    xml_path.parent.mkdir(parents=True, exist_ok=True)
    model = ov.convert_model(str(onnx_path))
    if calibration is not None:
        import nncf

        n = len(next(iter(calibration.values())))
        items = [{k: v[i : i + 1] for k, v in calibration.items()} for i in range(n)]
        from .onnx_export import node_pattern

        names = _one_row_lookups(model)
        if fp32_layers:
            pats = [node_pattern(m) for m in fp32_layers]
            names += [op.get_friendly_name() for op in model.get_ops()
                      if op.get_type_name() == "MatMul" and any(p in op.get_friendly_name() for p in pats)]
        ignored = nncf.IgnoredScope(names=names, validate=False) if names else None
        try:
            model = nncf.quantize(
                model, nncf.Dataset(items), model_type=nncf.ModelType.TRANSFORMER,
                preset=nncf.QuantizationPreset.MIXED, subset_size=len(items),
                **({"ignored_scope": ignored} if ignored else {}),
            )
        except Exception as exc:
            raise EdgekitError(f"NNCF int8 quantization failed: {exc}") from exc
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


def _one_row_lookups(model) -> list[str]:
    """Gathers from a one-row table (RoBERTa's token type embeddings: type_vocab_size 1). Their output is a
    constant; NNCF's int8 table in front of them made OpenVINO's constant folding fail at compile time
    ("convert->constant_fold ... failed"), so they stay fp32 (they cost nothing at run time either way)."""
    names = []
    for op in model.get_ops():
        if op.get_type_name() != "Gather":
            continue
        table = op.input(0).get_source_output().get_node()
        shape = table.get_output_partial_shape(0)
        if table.get_type_name() == "Constant" and shape.rank.get_length() == 2 and shape[0].get_length() == 1:
            names.append(op.get_friendly_name())
    return names
