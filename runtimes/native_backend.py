"""edgekit's native engine (C++, on edgekit's int8 / 4x1 block-sparse kernels) on an artifact's ``native/``: text
encoders (token ids in) and ViTs (pixel values in, :class:`NativeImageSession`).

Precision hint: ``fp32`` runs attention (softmax(QK^T)V) in fp32; ``bf16`` runs its two products with AVX-512
BF16 dot products; ``int8`` runs both on vpdpbusd (AVX-512 VNNI, 4x1 sparse int8 models; softmax stays fp32).
No hint: int8 for classifiers where it can run, else fp32 (see DEFAULT_ATTENTION). The GEMMs are int8 either way.
"""
from __future__ import annotations

import numpy as np

from edgekit import __version__
from edgekit.artifact import Artifact
from edgekit.errors import EdgekitError, InputError

from . import check_feeds, model_feeds


#: attention precision when no hint is given: int8 (Q K^T and P V on vpdpbusd) for classifiers where it can run
#: (AVX-512 VNNI, a 4x1 sparse int8 model), else fp32. Feature extraction keeps fp32: int8 attention moved
#: embeddings to a mean cosine of 0.9988 against torch (parity target 0.999), logits stayed at 0.99995 (README).
DEFAULT_ATTENTION = {"text-classification": "int8"}


class NativeSession:
    runtime = "native"

    def __init__(self, encoder, task: str, threads: int, precision: str, max_len: int, token_types: bool = False):
        self._enc, self.task, self.threads, self.precision, self.max_len = encoder, task, threads, precision, max_len
        # the engine adds each token's segment row when the model has token type embeddings (BERT pairs); a model
        # without them takes none (model_feeds refuses non-zero segment ids for it, as for a graph without them)
        self._inputs = ("input_ids", "attention_mask") + (("token_type_ids",) if token_types else ())

    @property
    def kernels(self) -> list[str]:
        """The kernels the encoder's Linear layers run on (e.g. ``avx2-u8s7-4x1`` for 7-bit 4x1-sparse weights)."""
        return list(self._enc.kernels)

    def run(self, feeds: dict[str, np.ndarray], profile: dict | None = None) -> np.ndarray:
        check_feeds(feeds, self.max_len)
        feeds = model_feeds(feeds, self._inputs)
        types = feeds.get("token_type_ids")
        try:
            return self._enc.run(np.ascontiguousarray(feeds["input_ids"]), np.ascontiguousarray(feeds["attention_mask"]),
                                 profile, None if types is None else np.ascontiguousarray(types))
        except ValueError as exc:
            raise InputError(str(exc)) from None


class NativeImageSession:
    """A ViT on the native engine: ``pixel_values`` [B, C, H, W] float32 (preprocessed as the artifact's
    ``extra.preprocess`` says) cut into flattened patches here, the rest in the engine."""

    runtime = "native"

    def __init__(self, encoder, task: str, threads: int, precision: str, image: dict):
        self._enc, self.task, self.threads, self.precision, self._image = encoder, task, threads, precision, image
        self.input_shape = (int(image["num_channels"]), *map(int, image["image_size"]))

    @property
    def kernels(self) -> list[str]:
        return list(self._enc.kernels)

    def run(self, feeds: dict[str, np.ndarray], profile: dict | None = None) -> np.ndarray:
        from edgekit.formats.native import image_patches

        if "pixel_values" not in feeds:
            raise InputError("missing input pixel_values; an image model takes pixel_values [batch, C, H, W]")
        check_feeds(feeds, 0)
        x = feeds["pixel_values"]
        if tuple(x.shape[1:]) != self.input_shape:
            raise InputError(f"pixel_values must be [batch, {', '.join(map(str, self.input_shape))}] for this model; "
                             f"got {list(x.shape)}")
        try:
            return self._enc.run_image(image_patches(x, self._image), profile)
        except ValueError as exc:
            raise InputError(str(exc)) from None


class NativeRuntime:
    name = "native"

    def version(self) -> str | None:
        try:
            from edgekit import _engine
        except ImportError:
            return None
        return f"{__version__} ({_engine.isa()})"

    def load(self, artifact: Artifact, threads: int, precision: str | None = None) -> NativeSession:
        from edgekit import _engine
        from edgekit.formats.native import read_native

        cfg, tensors = read_native(artifact.path("native"))
        if cfg["task"] != artifact.task:
            raise InputError(f"native model task {cfg['task']} differs from the artifact's {artifact.task}")
        hints = {"fp32": "fp32", "f32": "fp32", "bf16": "bf16", "int8": "int8"}
        if precision is not None and precision not in hints:
            raise InputError(f"unknown native precision hint {precision!r}; allowed: fp32, bf16, int8")
        if precision == "bf16" and not _engine.has_bf16():
            raise InputError("native precision bf16 needs a CPU with AVX512_BF16")
        # no hint: the engine's "auto" (int8 where it runs, else fp32) for the tasks DEFAULT_ATTENTION names
        attention = hints[precision] if precision is not None else ("auto" if DEFAULT_ATTENTION.get(artifact.task) else "fp32")
        try:
            enc = _engine.Encoder(cfg, tensors, threads, attention)
        except ValueError as exc:
            raise EdgekitError(f"native engine could not load {artifact.path('native')}: {exc}") from None
        attention = enc.attention
        prec = cfg["precision"] + ("-sparse" if cfg["pattern"] == "4x1" else "") + (
            f"+{attention}-attention" if attention != "fp32" else "")
        if cfg["image"] is not None:
            return NativeImageSession(enc, artifact.task, threads, prec, cfg["image"])
        max_len = min(int(cfg["max_position"]) - int(cfg["position_offset"]), artifact.manifest.max_sequence_length)
        return NativeSession(enc, artifact.task, threads, prec, max_len, int(cfg["type_vocab_size"]) > 0)
