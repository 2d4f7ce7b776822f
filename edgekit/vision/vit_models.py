"""Image classifiers (ViT / DeiT folders) with the task's fixed signature, and their preprocessing.

Every runtime and exporter sees one float32 input ``pixel_values`` [batch, channels, height, width] and one
output ``logits`` [batch, classes]. How grey uint8 images become ``pixel_values`` (scale, mean, std, size,
channels) is read from the model folder's ``preprocessor_config.json`` and written into the artifact
manifest (``extra.preprocess``, :class:`edgekit.data.images.ImagePreprocessConfig`, the spec the CNNs use
too), so every runtime preprocesses the same way.

>>> prep = hf_preprocess(Path("vit-fmnist"))                     # doctest: +SKIP
>>> prep.apply(images_uint8).shape                                # doctest: +SKIP
(10000, 1, 28, 28)
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from edgekit.data.images import ImagePreprocessConfig

IMAGE_TASK = "image-classification"
IMAGE_INPUT = "pixel_values"


def hf_preprocess(path: Path, config=None) -> ImagePreprocessConfig:
    """The :class:`~edgekit.data.images.ImagePreprocessConfig` of a ViT / DeiT folder: ``preprocessor_config.json``
    (ViTImageProcessor fields) and the model config's image size / channels; ImageNet-style defaults (0.5 / 0.5)
    where the file is missing, as ViTImageProcessor has. Images are resized (shorter side) and centre-cropped to
    the model's square input."""
    from edgekit.errors import InputError

    if config is None:
        config = json.loads((Path(path) / "config.json").read_text())
    get = config.get if isinstance(config, dict) else lambda k, d=None: getattr(config, k, d)
    size = get("image_size", 224)
    size = tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))
    if size[0] != size[1]:
        raise InputError(f"{path}: image size {list(size)} is not square; edgekit's image preprocessing crops squares")
    channels = int(get("num_channels", 3))
    pfile = Path(path) / "preprocessor_config.json"
    p = json.loads(pfile.read_text()) if pfile.is_file() else {}
    mean = p.get("image_mean", [0.5] * channels) if p.get("do_normalize", True) else [0.0] * channels
    std = p.get("image_std", [0.5] * channels) if p.get("do_normalize", True) else [1.0] * channels
    rescale = p.get("rescale_factor", 1 / 255) if p.get("do_rescale", True) else 1.0
    if abs(float(rescale) - 1 / 255) > 1e-9:
        raise InputError(f"{pfile}: rescale_factor {rescale} is not supported; edgekit scales pixels by 1/255")
    return ImagePreprocessConfig(resize=size[0], crop=size[0], mean=tuple(float(m) for m in mean),
                                 std=tuple(float(v) for v in std), channels="L" if channels == 1 else "RGB")


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
    """``(ImageClassifier, ImagePreprocessConfig)`` from a Hugging Face image-classification folder, eval mode, fp32."""
    from transformers import AutoModelForImageClassification
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf = AutoModelForImageClassification.from_pretrained(path).eval()
    return ImageClassifier(hf).eval(), hf_preprocess(path, hf.config)
