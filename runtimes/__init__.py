"""Runtimes behind one Protocol (:mod:`edgekit.runtimes.base`). Each backend imports its library lazily.

>>> from edgekit.runtimes import load
>>> session = load("out/minilm", "onnxruntime", threads=2)      # doctest: +SKIP
>>> session.run({"input_ids": ids, "attention_mask": mask})      # doctest: +SKIP
"""
from __future__ import annotations

import importlib
import os

import numpy as np

from edgekit.artifact import Artifact, load_artifact
from edgekit.errors import InputError, one_of

from .base import Runtime, Session

# name -> "module:Class"; a new runtime is one line here plus one module.
_BACKENDS = {
    "torch": "edgekit.runtimes.torch_backend:TorchRuntime",
    "onnxruntime": "edgekit.runtimes.onnxruntime_backend:OnnxRuntime",
    "openvino": "edgekit.runtimes.openvino_backend:OpenVinoRuntime",
    "native": "edgekit.runtimes.native_backend:NativeRuntime",
}
RUNTIMES = tuple(_BACKENDS)
#: the libraries each runtime imports when it loads (the native engine is part of edgekit itself)
RUNTIME_MODULES = {"torch": ("torch", "transformers"), "onnxruntime": ("onnxruntime",), "openvino": ("openvino",)}


def get_runtime(name: str) -> Runtime:
    if name not in _BACKENDS:
        raise one_of("runtime", name, RUNTIMES)
    module, cls = _BACKENDS[name].split(":")
    try:
        return getattr(importlib.import_module(module), cls)()
    except ModuleNotFoundError as exc:
        raise InputError(f"runtime {name!r} is not available in this build ({exc})") from exc


def require_runtime(name: str) -> None:
    """Refuse, in one line naming the extra to install, a runtime whose library is not installed."""
    from edgekit.extras import require

    require(*RUNTIME_MODULES.get(name, ()), what=f"the {name} runtime")


def default_threads() -> int:
    """All physical cores (here: 2)."""
    try:
        import psutil

        n = psutil.cpu_count(logical=False)
    except Exception:  # psutil missing or unable to tell
        n = None
    return int(n or os.cpu_count() or 1)


def load(artifact: Artifact | str | os.PathLike, runtime: str = "onnxruntime", threads: int | None = None,
         precision: str | None = None) -> Session:
    """Load an artifact folder on a runtime and return a :class:`Session`."""
    rt = get_runtime(runtime)
    if not isinstance(artifact, Artifact):
        artifact = load_artifact(artifact)
    return rt.load(artifact, threads or default_threads(), precision)


def versions() -> dict[str, str | None]:
    """Installed version of each runtime's library (None when missing)."""
    out: dict[str, str | None] = {}
    for name in RUNTIMES:
        try:
            out[name] = get_runtime(name).version()
        except InputError:
            out[name] = None
    return out


def check_feeds(feeds: dict[str, np.ndarray], max_len: int) -> tuple[int, int]:
    """Validate feeds before any runtime sees them; returns (batch, seq) (image feeds: (batch, height))."""
    if "pixel_values" in feeds:
        return check_pixel_values(feeds)
    missing = [k for k in ("input_ids", "attention_mask") if k not in feeds]
    if missing:
        raise InputError(f"missing input(s) {', '.join(missing)}; a session takes input_ids and attention_mask")
    ids, mask = feeds["input_ids"], feeds["attention_mask"]
    for name, arr in (("input_ids", ids), ("attention_mask", mask)):
        if not isinstance(arr, np.ndarray) or arr.ndim != 2 or arr.dtype != np.int64:
            got = f"{getattr(arr, 'dtype', type(arr).__name__)} {getattr(arr, 'shape', '')}"
            raise InputError(f"{name} must be an int64 array of shape [batch, seq]; got {got}")
    if ids.shape != mask.shape:
        raise InputError(f"input_ids {ids.shape} and attention_mask {mask.shape} must have the same shape")
    b, s = ids.shape
    if b == 0 or s == 0:
        raise InputError(f"empty input of shape {ids.shape}; batch and seq must be at least 1")
    if s > max_len:
        raise InputError(f"sequence length {s} is longer than the model's maximum {max_len}")
    return b, s


def model_feeds(feeds: dict[str, np.ndarray], inputs) -> dict[str, np.ndarray]:
    """The feeds a graph with ``inputs`` (names) takes: others dropped; ``token_type_ids`` all zeros (one segment)
    when the graph takes it and the caller has none (single texts: bench, serve)."""
    out = {k: v for k, v in feeds.items() if k in inputs}
    types = feeds.get("token_type_ids")
    if "token_type_ids" not in inputs and isinstance(types, np.ndarray) and types.any():
        raise InputError("this model's graph takes no token_type_ids, so the second text of a pair would read as "
                         "the first; re-export it with this edgekit (BERT-family graphs take them)")
    if "token_type_ids" in inputs and "token_type_ids" not in out:
        out["token_type_ids"] = np.zeros_like(feeds["input_ids"])
    elif "token_type_ids" in out:
        t = out["token_type_ids"]
        if not isinstance(t, np.ndarray) or t.dtype != np.int64 or t.shape != feeds["input_ids"].shape:
            raise InputError(f"token_type_ids must be an int64 array shaped like input_ids "
                             f"{feeds['input_ids'].shape}; got {getattr(t, 'dtype', type(t).__name__)} "
                             f"{getattr(t, 'shape', '')}")
    return out


def check_pixel_values(feeds: dict[str, np.ndarray]) -> tuple[int, int]:
    """Image feeds: ``pixel_values`` float32 [batch, channels, height, width] (NCHW); returns (batch, height)."""
    x = feeds["pixel_values"]
    if not isinstance(x, np.ndarray) or x.ndim != 4 or x.dtype != np.float32:
        got = f"{getattr(x, 'dtype', type(x).__name__)} {getattr(x, 'shape', '')}"
        raise InputError(f"pixel_values must be a float32 array of shape [batch, channels, height, width]; got {got}")
    if 0 in x.shape:
        raise InputError(f"empty input of shape {x.shape}; every dimension of pixel_values must be at least 1")
    return int(x.shape[0]), int(x.shape[2])


def load_tokenizer(artifact: Artifact | str | os.PathLike):
    """The tokenizer saved in an artifact folder: transformers' AutoTokenizer where transformers is installed,
    else its ``tokenizer.json`` through the ``tokenizers`` library (:class:`edgekit.tokenizer.ArtifactTokenizer`,
    the runtime-only install; same ids)."""
    if not isinstance(artifact, Artifact):
        artifact = load_artifact(artifact, verify=False)
    if artifact.tokenizer_path is None or not artifact.tokenizer_path.is_dir():
        raise InputError(f"artifact {artifact.root} has no tokenizer folder")
    try:
        from transformers import AutoTokenizer
    except ImportError:
        from edgekit.tokenizer import ArtifactTokenizer

        return ArtifactTokenizer.from_folder(artifact.tokenizer_path)
    return AutoTokenizer.from_pretrained(artifact.tokenizer_path)
