"""Image classifiers (ViT / DeiT folders) with the task's fixed signature, and their preprocessing.

Every runtime and exporter sees one float32 input ``pixel_values`` [batch, channels, height, width] and one
output ``logits`` [batch, classes]. How grey uint8 images become ``pixel_values`` (scale, mean, std, size,
channels) is read from the model folder's ``preprocessor_config.json`` and written into the artifact
manifest (``extra.preprocessing``), so every runtime preprocesses the same way.

>>> prep = Preprocessing.from_folder(Path("vit-fmnist"))         # doctest: +SKIP
>>> prep.apply(images_uint8).shape                                # doctest: +SKIP
(10000, 1, 28, 28)
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

IMAGE_TASK = "image-classification"
IMAGE_INPUT = "pixel_values"


@dataclass(frozen=True)
class Preprocessing:
    """uint8 image -> float: ``x * rescale``, resized (bilinear) to ``size`` when it differs, grey repeated
    to ``channels``, then ``(x - mean[c]) / std[c]``."""

    size: tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    rescale: float = 1 / 255
    version: int = 1

    @classmethod
    def from_folder(cls, path: Path, config=None) -> "Preprocessing":
        """From ``preprocessor_config.json`` (ViTImageProcessor fields) and the model config's image size /
        channels; ImageNet-style defaults (0.5 / 0.5) where the file is missing, as ViTImageProcessor has."""
        if config is None:
            config = json.loads((Path(path) / "config.json").read_text())
        get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
        size = get("image_size", 224)
        size = tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))
        channels = int(get("num_channels", 3))
        pfile = Path(path) / "preprocessor_config.json"
        p = json.loads(pfile.read_text()) if pfile.is_file() else {}
        mean = p.get("image_mean", [0.5] * channels) if p.get("do_normalize", True) else [0.0] * channels
        std = p.get("image_std", [0.5] * channels) if p.get("do_normalize", True) else [1.0] * channels
        rescale = p.get("rescale_factor", 1 / 255) if p.get("do_rescale", True) else 1.0
        return cls(size, channels, tuple(float(m) for m in mean), tuple(float(s) for s in std), float(rescale))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocessing":
        return cls(tuple(d["size"]), int(d["channels"]), tuple(d["mean"]), tuple(d["std"]), float(d["rescale"]),
                   int(d.get("version", 1)))

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 [N, H, W] (grey) or [N, H, W, 3] -> float32 ``pixel_values`` [N, C, size, size]."""
        x = pixels.astype(np.float32) * self.rescale
        x = x[:, None] if x.ndim == 3 else np.transpose(x, (0, 3, 1, 2))
        if tuple(x.shape[2:]) != tuple(self.size):
            x = torch.nn.functional.interpolate(torch.from_numpy(x), size=tuple(self.size), mode="bilinear",
                                                align_corners=False).numpy()
        if x.shape[1] != self.channels:
            x = np.repeat(x.mean(1, keepdims=True), self.channels, axis=1)
        mean = np.asarray(self.mean, np.float32)[None, :, None, None]
        std = np.asarray(self.std, np.float32)[None, :, None, None]
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)


class ImageClassifier(nn.Module):
    """An ``AutoModelForImageClassification`` that returns logits only."""

    task = IMAGE_TASK

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def encoder(self) -> nn.Module:
        return self.model.base_model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def load_image_classifier(path: Path):
    """``(ImageClassifier, Preprocessing)`` from a Hugging Face image-classification folder, eval mode, fp32."""
    from transformers import AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf = AutoModelForImageClassification.from_pretrained(path).eval()
    return ImageClassifier(hf).eval(), Preprocessing.from_folder(path, hf.config)
