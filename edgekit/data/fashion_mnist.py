"""Fashion-MNIST, built in as ``fashion-mnist``: read from the Debian package ``dataset-fashion-mnist``.

The package installs the four original idx-ubyte.gz files under ``/usr/share/datasets/fashion-mnist/``
(``$EDGEKIT_FASHION_MNIST`` points elsewhere). The 60,000 training images give ``train`` and
``validation`` (a seeded, stratified cut of 1/12 of each class, 5,000 images in all: the same images for the
same seed on every machine); the 10,000 test images are ``test``, untouched.

>>> ds = load_fashion_mnist("test")                         # doctest: +SKIP
>>> ds.pixels.shape, ds.pixels.dtype, ds.label_names[0]     # doctest: +SKIP
((10000, 28, 28), dtype('uint8'), 'T-shirt/top')
"""
from __future__ import annotations

import gzip
import os
import random
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgekit.errors import InputError, one_of

NAME = "fashion-mnist"
PACKAGE = "dataset-fashion-mnist"
DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
#: class names in label order (Zalando's published list)
LABEL_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot")
SPLITS = ("train", "validation", "test")
VALIDATION_FRACTION = 1 / 12  # 5,000 of 60,000
_FILES = {"train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
          "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")}


@dataclass(frozen=True)
class ImageDataset:
    """One split of labelled grey images: ``pixels`` uint8 [N, H, W], ``labels`` int64 [N]."""

    pixels: np.ndarray
    labels: np.ndarray
    label_names: tuple[str, ...]
    name: str = NAME

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))


def data_root() -> Path:
    return Path(os.environ.get("EDGEKIT_FASHION_MNIST", DEFAULT_ROOT))


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx-ubyte(.gz) file as a uint8 array; the header's magic number and sizes are checked."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    magic, = struct.unpack(">I", raw[:4])
    if magic != 0x800 + ndim:
        raise InputError(f"{path} is not an idx file of {ndim} dimension(s) (magic {magic:#x})")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise InputError(f"{path} is truncated: {body.size} bytes of {int(np.prod(dims))}")
    return body.reshape(dims)


@lru_cache(maxsize=2)
def _read_part(part: str, root: str) -> tuple[np.ndarray, np.ndarray]:
    images, labels = (Path(root) / f for f in _FILES[part])
    if not images.is_file() or not labels.is_file():
        raise InputError(f"data {NAME!r} needs the Debian package {PACKAGE} (apt-get install {PACKAGE}); "
                         f"{images.name} not found in {root}")
    x, y = _read_idx(images, 3), _read_idx(labels, 1)
    if len(x) != len(y):
        raise InputError(f"{root}: {len(x)} {part} images but {len(y)} labels")
    return x, y.astype(np.int64)


def _validation_index(labels: np.ndarray, seed: int) -> np.ndarray:
    """Indices of the validation images: per class, shuffled with the seed, the first 1/12."""
    rng = random.Random(seed)
    picked: list[int] = []
    for c in range(len(LABEL_NAMES)):
        idx = np.flatnonzero(labels == c).tolist()
        rng.shuffle(idx)
        picked += idx[: round(len(idx) * VALIDATION_FRACTION)]
    return np.array(sorted(picked), dtype=np.int64)


def load_fashion_mnist(split: str = "test", seed: int = 0) -> ImageDataset:
    """One split of Fashion-MNIST (``train`` 55,000, ``validation`` 5,000, ``test`` 10,000 images)."""
    if split not in SPLITS:
        raise one_of("split", split, SPLITS)
    root = str(data_root())
    if split == "test":
        x, y = _read_part("test", root)
        return ImageDataset(x, y, LABEL_NAMES)
    x, y = _read_part("train", root)
    val = _validation_index(y, seed)
    if split == "validation":
        return ImageDataset(x[val], y[val], LABEL_NAMES)
    keep = np.ones(len(y), dtype=bool)
    keep[val] = False
    return ImageDataset(x[keep], y[keep], LABEL_NAMES)


#: built-in labelled image data (``--data`` for image models)
IMAGE_DATA = (NAME,)


def image_splits(data: str = NAME, seed: int = 0) -> dict[str, ImageDataset]:
    """{split: ImageDataset} of a built-in image dataset (one line naming the allowed ones otherwise)."""
    if str(data) not in IMAGE_DATA:
        raise InputError(f"image models take --data {', '.join(IMAGE_DATA)}; got {data}")
    return {s: load_fashion_mnist(s, seed) for s in SPLITS}
