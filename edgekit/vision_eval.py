"""Accuracy of an image classifier on a built-in image test split, on any runtime (through the Session Protocol).

The artifact's recorded preprocessing (``manifest.extra.preprocessing``) turns the uint8 images into
``pixel_values``, so torch, ONNX Runtime and OpenVINO see the same floats.

>>> evaluate_image("out/vit", "openvino")["value"]      # doctest: +SKIP
0.8912
"""
from __future__ import annotations

import numpy as np

from edgekit.errors import InputError


def evaluate_session(session, x: np.ndarray, y: np.ndarray, batch: int = 100) -> dict:
    """Top-1 accuracy of ``session`` on ``pixel_values`` ``x`` with labels ``y``."""
    hits = 0
    for i in range(0, len(y), batch):
        logits = session.run({"pixel_values": np.ascontiguousarray(x[i:i + batch])})
        hits += int((np.asarray(logits).argmax(1) == y[i:i + batch]).sum())
    return {"task": "image-classification", "metric": "accuracy", "value": round(hits / max(len(y), 1), 4),
            "n": int(len(y)), "runtime": getattr(session, "runtime", "torch")}


def evaluate_image(model, runtime: str = "torch", data: str = "fashion-mnist", threads: int | None = None,
                   limit: int | None = None) -> dict:
    """``edgekit eval`` for image classifiers: MODEL is an artifact (any runtime it has) or a zoo name / ViT
    folder (torch only)."""
    from edgekit.artifact import load_artifact
    from edgekit.data.fashion_mnist import image_splits
    from edgekit.vision_models import Preprocessing
    from edgekit.zoo import resolve

    test = image_splits(data)["test"]
    ref = resolve(model)
    if ref.kind == "artifact":
        from edgekit.runtimes import load

        art = load_artifact(ref.path)
        prep = art.manifest.extra.get("preprocessing")
        if prep is None:
            raise InputError(f"artifact {ref.path} records no image preprocessing (manifest extra.preprocessing)")
        prep = Preprocessing.from_dict(prep)
        session = load(art, runtime, threads)
    else:
        if runtime != "torch":
            raise InputError(f"a model folder runs on torch only; export it first to use {runtime!r}")
        from edgekit.runtimes.torch_backend import ModuleSession
        from edgekit.vision_models import IMAGE_TASK, load_image_classifier

        module, prep = load_image_classifier(ref.path)
        session = ModuleSession(module, IMAGE_TASK)
    n = len(test) if limit is None else min(limit, len(test))
    out = evaluate_session(session, prep.apply(test.pixels[:n]), test.labels[:n])
    return {**out, "data": str(data), "runtime": runtime}


def is_image_model(model) -> bool:
    """Whether MODEL (zoo name, model folder or artifact) is an image classifier, decided from the zoo table,
    the manifest or config.json alone (nothing is built or loaded)."""
    from pathlib import Path

    from edgekit.artifact import is_artifact
    from edgekit.zoo import ZOO, hf_task

    name = str(model)
    if name in ZOO:
        return ZOO[name][0] == "image-classification"
    path = Path(name)
    try:
        if is_artifact(path):
            from edgekit.artifact import load_artifact

            return load_artifact(path, verify=False).task == "image-classification"
        return path.is_dir() and (path / "config.json").is_file() and hf_task(path) == "image-classification"
    except InputError:
        return False
