"""Images: one preprocessing spec, a reader of labelled image folders, and unlabelled photo crops.

The API is small on purpose (the CNN and the ViT paths share it)::

    from edgekit.data.images import ImagePreprocessConfig, load_image_folder, photo_crops
    pre = ImagePreprocessConfig(resize=256, crop=224, mean=(0.5,) * 3, std=(0.5,) * 3)
    x = pre.apply(images)                     # float32 [N, C, H, W], what every runtime is fed
    ds = load_image_folder("pets/")           # ImageFolderData: paths, labels, label_names (Pillow reads)
    cal, held_out = photo_crops()             # real-photo crops (PIL), calibration and evaluation never overlap

:class:`ImagePreprocessConfig` is recorded in the artifact manifest (``extra.preprocess``) and rebuilt from
it with :meth:`ImagePreprocessConfig.from_dict`, so every runtime preprocesses the same way. Every bad
input (an empty folder, a single class, an unreadable image, photos missing) is one InputError line.
"""
from __future__ import annotations

import functools
import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edgekit.errors import InputError

PREPROCESS_VERSION = 1
CHANNELS = ("RGB", "L")
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
LAYOUTS = ("NCHW",)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")
PHOTO_DIR_ENV = "EDGEKIT_PHOTO_DIR"  #: a folder of the user's own photos, used instead of the packages below


@dataclass(frozen=True)
class ImagePreprocessConfig:
    """How a picture becomes a model input: convert to ``channels``, resize the shorter side to ``resize``
    (``interpolation``), cut the centre ``crop`` x ``crop``, scale to [0, 1], subtract ``mean`` and divide
    by ``std`` per channel, lay out as ``layout`` float32.

    >>> pre = ImagePreprocessConfig(resize=256, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    >>> ImagePreprocessConfig.from_dict(pre.to_dict()) == pre
    True
    >>> pre.input_shape
    [3, 224, 224]
    """

    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    channels: str = "RGB"
    interpolation: str = "bilinear"
    layout: str = "NCHW"
    version: int = PREPROCESS_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if self.version != PREPROCESS_VERSION:
            raise InputError(f"image preprocessing version {self.version!r} is not supported; allowed: "
                             f"{PREPROCESS_VERSION}")
        for name, allowed in (("channels", CHANNELS), ("interpolation", INTERPOLATIONS), ("layout", LAYOUTS)):
            if getattr(self, name) not in allowed:
                raise InputError(f"image preprocessing {name} {getattr(self, name)!r} is not allowed; allowed: "
                                 f"{', '.join(allowed)}")
        if not (isinstance(self.resize, int) and isinstance(self.crop, int) and 1 <= self.crop <= self.resize):
            raise InputError(f"image preprocessing needs integers 1 <= crop <= resize; got crop {self.crop!r}, "
                             f"resize {self.resize!r}")
        c = self.num_channels
        if len(self.mean) != c or len(self.std) != c or min(self.std) <= 0:
            raise InputError(f"image preprocessing for {self.channels} needs {c} mean and {c} positive std values; "
                             f"got mean {list(self.mean)}, std {list(self.std)}")

    @property
    def num_channels(self) -> int:
        return 3 if self.channels == "RGB" else 1

    @property
    def input_shape(self) -> list[int]:
        """[C, H, W] of one preprocessed image."""
        return [self.num_channels, self.crop, self.crop]

    def to_dict(self) -> dict:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ImagePreprocessConfig":
        if not isinstance(d, dict):
            raise InputError(f"image preprocessing must be a mapping, not {type(d).__name__}")
        unknown = sorted(set(d) - {f for f in cls.__dataclass_fields__})
        if unknown:
            raise InputError(f"image preprocessing has unknown field(s) {', '.join(unknown)}; allowed: "
                             f"{', '.join(cls.__dataclass_fields__)}")
        try:
            return cls(**d)
        except TypeError as exc:
            raise InputError(f"bad image preprocessing: {exc}") from None

    def apply_one(self, image) -> np.ndarray:
        """One PIL image -> float32 [C, H, W]."""
        from PIL import Image

        resample = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
                    "nearest": Image.Resampling.NEAREST}[self.interpolation]
        im = image.convert(self.channels)
        w, h = im.size
        scale = self.resize / min(w, h)
        nw, nh = max(self.crop, round(w * scale)), max(self.crop, round(h * scale))
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), resample)
        left, top = (nw - self.crop) // 2, (nh - self.crop) // 2
        im = im.crop((left, top, left + self.crop, top + self.crop))
        x = np.asarray(im, dtype=np.float32).reshape(self.crop, self.crop, self.num_channels) / 255.0
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(2, 0, 1))

    def apply(self, images: Sequence | np.ndarray) -> np.ndarray:
        """PIL images, paths to images, or a uint8 array [N, H, W] (grey) / [N, H, W, 3] (the built-in data sets)
        -> float32 [N, C, H, W]."""
        if len(images) == 0:
            return np.zeros([0, *self.input_shape], np.float32)
        if isinstance(images, np.ndarray):
            return self._apply_array(images)
        return np.stack([self.apply_one(open_image(im) if isinstance(im, (str, os.PathLike)) else im)
                         for im in images])

    def _apply_array(self, pixels: np.ndarray) -> np.ndarray:
        if pixels.dtype != np.uint8 or pixels.ndim not in (3, 4) or (pixels.ndim == 4 and pixels.shape[3] != 3):
            raise InputError(f"image arrays must be uint8 [N, H, W] or [N, H, W, 3]; got {pixels.dtype} "
                             f"{list(pixels.shape)}")
        grey = pixels.ndim == 3
        if tuple(pixels.shape[1:3]) != (self.crop, self.crop) or self.resize != self.crop or \
                grey != (self.channels == "L"):
            from PIL import Image  # resize, crop or channel change: the same per-image path as photos

            return np.stack([self.apply_one(Image.fromarray(im)) for im in pixels])
        # already the input size and channels (fashion-mnist on a 28 x 28 model): the same arithmetic, batched
        x = pixels.astype(np.float32) / 255.0
        x = x[..., None] if grey else x
        x = (x - np.asarray(self.mean, np.float32)) / np.asarray(self.std, np.float32)
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32)


#: the manifest key an artifact's preprocessing is recorded under
MANIFEST_KEY = "preprocess"


def manifest_preprocess(extra: dict, where: str = "artifact") -> ImagePreprocessConfig:
    """The preprocessing an image artifact records (``manifest.extra.preprocess``). Artifacts written by the ViT
    path before the two image paths shared this spec recorded ``extra.preprocessing`` (size, channels, mean, std,
    rescale 1/255); those are read into the same spec."""
    if MANIFEST_KEY in extra:
        return ImagePreprocessConfig.from_dict(extra[MANIFEST_KEY])
    old = extra.get("preprocessing")
    if not isinstance(old, dict):
        raise InputError(f"{where} records no image preprocessing (manifest extra.{MANIFEST_KEY})")
    try:
        size, channels = int(old["size"][0]), int(old["channels"])
        if abs(float(old.get("rescale", 1 / 255)) - 1 / 255) > 1e-9:
            raise InputError(f"{where}: image preprocessing with rescale {old['rescale']} is not supported (1/255)")
        return ImagePreprocessConfig(resize=size, crop=size, mean=tuple(old["mean"]), std=tuple(old["std"]),
                                     channels="L" if channels == 1 else "RGB")
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"{where}: bad image preprocessing record ({exc})") from None


def open_image(path: str | os.PathLike):
    """A decoded PIL image; an unreadable file is one InputError naming it."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise InputError(f"cannot read image {path}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") \
            from None


@dataclass(frozen=True)
class ImageFolderData:
    """A labelled image folder: ``paths[i]`` has label ``labels[i]``, named ``label_names[labels[i]]``
    (the sub-folder names, sorted)."""

    root: str
    paths: tuple[str, ...]
    labels: tuple[int, ...]
    label_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.paths)

    def images(self) -> list:
        return [open_image(p) for p in self.paths]


def is_image_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder whose sub-folders hold image files (and no text files)."""
    p = Path(path)
    if not p.is_dir():
        return False
    for sub in p.iterdir():
        if sub.is_dir() and any(f.suffix.lower() in IMAGE_SUFFIXES for f in sub.iterdir() if f.is_file()):
            return True
    return False


def load_image_folder(path: str | os.PathLike, check: bool = True) -> ImageFolderData:
    """Read a folder with one sub-folder per class holding images (every image, sorted by name).

    Refuses (InputError) a missing or empty folder, fewer than two classes, a class without images and,
    with ``check``, any image Pillow cannot decode (named).

    >>> ds = load_image_folder("pets/")               # doctest: +SKIP
    >>> ds.label_names, len(ds)                       # doctest: +SKIP
    (('cat', 'dog'), 200)
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"image folder {root} does not exist" if not root.exists() else f"{root} is not a folder")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise InputError(f"image folder {root} has no class sub-folders; it needs one sub-folder of images per class")
    if len(classes) < 2:
        raise InputError(f"image folder {root} has one class ({classes[0]}); it needs at least two class sub-folders")
    paths, labels = [], []
    for i, c in enumerate(classes):
        files = sorted(f for f in (root / c).iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise InputError(f"class folder {root / c} holds no images ({', '.join(IMAGE_SUFFIXES)})")
        paths += [str(f) for f in files]
        labels += [i] * len(files)
    if check:
        for p in paths:
            open_image(p)
    return ImageFolderData(str(root), tuple(paths), tuple(labels), tuple(classes))


# ------------------------------------------------------------------------------------------ photo crops
#
# Where unlabelled pictures for int8 calibration and fp32-vs-int8 agreement come from, in order of preference:
# 1. ``$EDGEKIT_PHOTO_DIR``: every image in that folder (the user's own photos);
# 2. real photographs from two Debian wallpaper packages: MATE's ``nature`` set (all twelve are photos) and the
#    Plasma wallpapers listed in PLASMA_PHOTOS (looked at one by one: the photographs; the other Plasma
#    wallpapers are renders or paintings). Plasma ships each wallpaper at up to twelve sizes: one file
#    (the largest landscape one) stands for it;
# 3. Debian ``gnome-backgrounds`` (abstract renders, not photos): a fallback only, said so by
#    :func:`photo_source` and in every report that names the source.

MATE_PHOTO_DIR = "/usr/share/backgrounds/mate/nature"
PLASMA_DIR = "/usr/share/wallpapers"
PLASMA_PHOTOS = ("BytheWater", "ColdRipple", "ColorfulCups", "DarkestHour", "EveningGlow", "FallenLeaf", "Grey",
                 "Kite", "OneStandsOut", "Path", "summer_1am")
GNOME_DIR = "/usr/share/backgrounds/gnome"
PHOTO_PACKAGES = ("plasma-workspace-wallpapers", "mate-backgrounds")
MIN_PHOTOS = 4  # fewer installed photographs than this (a partial install) and the fallback is used
MIN_PHOTO_SIDE = 512  # smaller files (gnome-backgrounds' 256-pixel plain tiles) give no useful crops
WORK_SIDE = 1024  # photos are halved while their shorter side stays >= this: crops are resized to 256 anyway
#: share of the source pictures (whole pictures, chosen with SPLIT_SEED) that calibration crops come from;
#: evaluation crops come from the others, so no evaluation picture was ever seen in calibration
CALIBRATION_SHARE = 1 / 3
SPLIT_SEED = 0  # fixed: every seed's calibration pictures must stay disjoint from the one held-out set


@dataclass(frozen=True)
class PhotoSource:
    """The pictures photo crops are cut from: ``name`` (``user``, ``photos`` or ``gnome-backgrounds``), whether
    they are real photographs, and the files."""

    name: str
    photographs: bool
    files: tuple[str, ...]
    about: str

    def to_dict(self) -> dict:
        return {"name": self.name, "photographs": self.photographs, "images": len(self.files), "about": self.about}


def _image_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES) \
        if folder.is_dir() else []


def _plasma_file(name: str) -> Path | None:
    """The largest landscape file of one Plasma wallpaper (files are named WIDTHxHEIGHT.ext)."""
    sizes = []
    for f in _image_files(Path(PLASMA_DIR) / name / "contents" / "images"):
        w, _, h = f.stem.partition("x")
        if w.isdigit() and h.isdigit() and int(w) >= int(h):
            sizes.append((int(w) * int(h), f))
    return max(sizes)[1] if sizes else None


def installed_photographs() -> list[Path]:
    """The real photographs installed from the Debian wallpaper packages (possibly none)."""
    plasma = [f for f in map(_plasma_file, PLASMA_PHOTOS) if f is not None]
    mate = [f for f in _image_files(Path(MATE_PHOTO_DIR)) if f.suffix.lower() in (".jpg", ".jpeg")]
    return mate + plasma


def photo_source(folder: str | os.PathLike | None = None) -> PhotoSource:
    """Which pictures photo crops come from (see the comment above): ``folder``, else ``$EDGEKIT_PHOTO_DIR``, else
    the installed photographs, else gnome-backgrounds' renders. Nothing installed: one InputError line.

    >>> photo_source().to_dict()                       # doctest: +SKIP
    {'name': 'photos', 'photographs': True, 'images': 23, 'about': '...'}
    """
    folder = folder or os.environ.get(PHOTO_DIR_ENV) or None
    if folder is not None:
        files = _image_files(Path(folder))
        if not files:
            raise InputError(f"no images in {folder} ({PHOTO_DIR_ENV} or folder): it needs image files "
                             f"({', '.join(IMAGE_SUFFIXES)})")
        return PhotoSource("user", True, tuple(map(str, files)), f"images in {folder}")
    photos = installed_photographs()
    if len(photos) >= MIN_PHOTOS:
        return PhotoSource("photos", True, tuple(map(str, photos)),
                           f"{len(photos)} photographs from Debian {' and '.join(PHOTO_PACKAGES)}")
    gnome = [f for f in _image_files(Path(GNOME_DIR)) if f.suffix.lower() != ".svg"]
    if gnome:
        return PhotoSource("gnome-backgrounds", False, tuple(map(str, gnome)),
                           f"abstract renders from Debian gnome-backgrounds (not photos: install "
                           f"{' '.join(PHOTO_PACKAGES)} for real photos)")
    raise InputError(f"no photos installed: apt-get install {' '.join(PHOTO_PACKAGES)} (real photos) or "
                     f"gnome-backgrounds, or point {PHOTO_DIR_ENV} at a folder of photos")


def _group(path: str) -> str:
    """Variants of one picture (gnome's ``name-d`` / ``name-l`` dark and light pair) share a group."""
    p = Path(path)
    return str(p.parent / (p.stem[:-2] if p.stem.endswith(("-d", "-l")) else p.stem))


def split_pictures(files: Sequence[str]) -> tuple[list[str], list[str]]:
    """(calibration pictures, evaluation pictures): whole pictures (variants together), a CALIBRATION_SHARE of
    them for calibration, chosen with the fixed SPLIT_SEED. Needs two pictures at least."""
    groups = sorted({_group(f) for f in files})
    if len(groups) < 2:
        raise InputError(f"photo crops need at least two different pictures (calibration and evaluation never "
                         f"share one); found {len(groups)}")
    random.Random(SPLIT_SEED).shuffle(groups)
    n_cal = min(len(groups) - 1, max(1, round(len(groups) * CALIBRATION_SHARE)))
    cal_groups = set(groups[:n_cal])
    return [f for f in files if _group(f) in cal_groups], [f for f in files if _group(f) not in cal_groups]


@functools.lru_cache(maxsize=4)
def _decoded(files: tuple[str, ...]) -> tuple:
    """The pictures decoded once per process (the 4096-pixel WebP files take seconds each), RGB, halved while
    their shorter side stays >= WORK_SIDE; pictures under MIN_PHOTO_SIDE are left out."""
    photos = []
    for f in files:
        im = open_image(f).convert("RGB")
        while min(im.size) >= 2 * WORK_SIDE:
            im = im.reduce(2)
        if min(im.size) >= MIN_PHOTO_SIDE:
            photos.append(im)
    return tuple(photos)


def _cut(rng: random.Random, photos: tuple, n: int, size: int, side: str) -> list:
    from PIL import Image

    if n and not photos:
        raise InputError(f"no {side} picture is at least {MIN_PHOTO_SIDE} pixels on its shorter side")
    out = []
    for i in range(n):
        im = photos[i % len(photos)]
        w, h = im.size
        s = int(round(min(w, h) * rng.uniform(0.25, 1.0)))
        x, y = rng.randint(0, w - s), rng.randint(0, h - s)
        crop = im.crop((x, y, x + s, y + s)).resize((size, size), Image.Resampling.BILINEAR)
        out.append(crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if rng.random() < 0.5 else crop)
    return out


@functools.lru_cache(maxsize=4)
def _crops(files: tuple[str, ...], n_calibration: int, n_eval: int, size: int, seed: int) -> tuple[tuple, tuple]:
    cal_files, eval_files = split_pictures(files)
    cal = _cut(random.Random(seed), _decoded(tuple(cal_files)), n_calibration, size, "calibration")
    held = _cut(random.Random(seed + 1), _decoded(tuple(eval_files)), n_eval, size, "evaluation")
    return tuple(cal), tuple(held)


def photo_crops(n_calibration: int = 300, n_eval: int = 600, size: int = 256, seed: int = 0,
                folder: str | os.PathLike | None = None) -> tuple[list, list]:
    """Square RGB crops (PIL, ``size`` pixels) of the pictures :func:`photo_source` picks (real photographs
    when installed): ``n_calibration`` for calibration and ``n_eval`` held out for evaluation. Deterministic
    for a seed.

    The pictures are split once (fixed seed, whole pictures): a third for calibration, the rest for
    evaluation, so no evaluation crop shares a picture with any calibration crop, whatever ``seed``. Crops
    of random size (a quarter to all of the shorter side) and position, half of them mirrored, taken from
    each side's pictures in turn; ``seed`` moves the crops only.

    >>> cal, held_out = photo_crops()                   # doctest: +SKIP
    >>> len(cal), len(held_out), held_out[0].size       # doctest: +SKIP
    (300, 600, (256, 256))
    """
    if n_calibration < 0 or n_eval < 0 or size < 8:
        raise InputError(f"photo crops need counts >= 0 and size >= 8; got {n_calibration}, {n_eval}, {size}")
    cal, held = _crops(photo_source(folder).files, n_calibration, n_eval, size, seed)
    return list(cal), list(held)
