"""Image models on disk and in the zoo: save / load an artifact's ``torch/`` folder, the built-in CNNs.

``torch/config.json`` holds the architecture config and ``torch/model.safetensors`` the state dict; the
preprocessing each zoo model expects is part of its entry here and is written into every artifact made
from it.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from edgekit.data.images import ImagePreprocessConfig
from edgekit.errors import InputError

from .efficientnet_lite import EfficientNetLite, EfficientNetLiteConfig, efficientnet_lite0, init_random

CONFIG = "config.json"
WEIGHTS = "model.safetensors"


def save_image_model(model: EfficientNetLite, folder: Path) -> None:
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    (folder / CONFIG).write_text(json.dumps(model.config.to_dict(), indent=2) + "\n")
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / WEIGHTS))


def load_image_model(folder: Path):
    """An artifact's ``torch/`` image classifier in eval mode (``pixel_values`` -> logits): the model saved by
    :func:`save_image_model` (weights loaded strictly), or a Hugging Face ViT / DeiT folder (its config.json
    names a ``model_type``)."""
    from safetensors.torch import load_file

    try:
        cfg = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{folder} has no readable {CONFIG} ({exc})") from None
    if isinstance(cfg, dict) and "model_type" in cfg:
        from .vit_models import load_image_classifier

        return load_image_classifier(folder)[0]
    model = EfficientNetLite(EfficientNetLiteConfig.from_dict(cfg))
    try:
        model.load_state_dict(load_file(str(folder / WEIGHTS)), strict=True)
    except (OSError, RuntimeError) as exc:
        raise InputError(f"{folder / WEIGHTS} does not fit its {CONFIG}: {str(exc).splitlines()[0]}") from None
    return model.eval()


@dataclass(frozen=True)
class VisionEntry:
    """A built-in image model: how to build it and how its inputs are preprocessed."""

    build: Callable[[], EfficientNetLite]
    preprocess: ImagePreprocessConfig
    labels: tuple[str, ...] | None = None
    weights: Callable[[], Path] | None = None  # the file the weights come from (for cache keys), if any


#: EfficientNet-Lite was trained (TensorFlow) on pixels mapped to [-1, 1] as (x - 127) / 128; checked here: the
#: stem's output statistics on real photos match its first batch norm's running mean with this scaling (mean
#: squared error 0.018 of the running variance) far better than with ImageNet's mean/std (0.098).
LITE0_PREPROCESS = ImagePreprocessConfig(resize=256, crop=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3,
                                         interpolation="bilinear")

#: a random-weight EfficientNet-Lite shape for tests: 3 stages, 4 classes, 32 x 32 inputs
TINY_CONFIG = EfficientNetLiteConfig(num_classes=4, stem_channels=8, head_channels=32, image_size=32,
                                     stages=((1, 3, 1, 1, 8), (1, 3, 2, 3, 16), (1, 5, 2, 3, 16)))
TINY_PREPROCESS = ImagePreprocessConfig(resize=36, crop=32, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def _lite0_weights() -> Path:
    from .efficientnet_lite import lite0_weights_path

    return lite0_weights_path()


VISION_ZOO: dict[str, VisionEntry] = {
    "efficientnet-lite0": VisionEntry(lambda: efficientnet_lite0(pretrained=True), LITE0_PREPROCESS,
                                      weights=_lite0_weights),
    "tiny-cnn": VisionEntry(lambda: init_random(EfficientNetLite(TINY_CONFIG), seed=0), TINY_PREPROCESS,
                            labels=("a", "b", "c", "d")),
}
