"""Distillation text beyond the task's training split: the recipe's ``distill_data`` and ``--distill-data``.

Both feed one path. :func:`distill_settings` merges them (the option replaces the recipe's source);
:func:`load_distill_texts` reads the passages (the evaluated data's validation and test texts excluded) and says
in one status line what it used. The training loop (:class:`edgekit.compress.training.Run`) tokenises them into
extra rows without a label; the teacher labels every batch as it trains (its outputs, hidden states and attention
relations are the targets of the distillation losses), so these rows train every loss but the label loss.

>>> cfg = distill_settings(load_recipe("feature-extraction"), None)        # doctest: +SKIP
>>> texts = load_distill_texts(cfg, DataSpec("bbc-news"), seed=0)          # doctest: +SKIP
"""
from __future__ import annotations

import random

from edgekit.data import DataSpec, load_dataset
from edgekit.errors import InputError
from edgekit.status import say

from .config import DistillDataConfig, Recipe


def distill_settings(recipe: Recipe, source=None) -> DistillDataConfig | None:
    """The recipe's ``distill_data`` with ``source`` (``--distill-data``) in place of its own; the defaults
    of :class:`DistillDataConfig` when only ``source`` is given; None when neither."""
    if source is None:
        return recipe.distill_data
    base = recipe.distill_data or DistillDataConfig()
    return base.model_copy(update={"source": str(source)})


def load_distill_texts(cfg: DistillDataConfig, data: DataSpec, seed: int = 0, progress: bool = True,
                       task: str | None = None) -> list[str]:
    """The passages of ``cfg`` (tables read with ``data``'s text column), never one of ``data``'s validation or
    test texts (token classification: its sentences, words joined by spaces); one :class:`InputError` line when
    unreadable or empty."""
    from edgekit.data import load_token_dataset
    from edgekit.data.corpora import distill_passages

    if task == "token-classification":
        exclude = [" ".join(w) for split in ("validation", "test") for w in load_token_dataset(data, split, seed).tokens]
    else:
        exclude = list(load_dataset(data, "validation", seed).texts) + list(load_dataset(data, "test", seed).texts)
    specs = [DataSpec(s, text_column=data.text_column) for s in cfg.sources()]
    texts = distill_passages(specs, cfg.passages, seed=seed, min_words=cfg.min_words, max_words=cfg.max_words,
                             exclude=exclude)
    if not texts:
        raise InputError(f"distill_data {', '.join(cfg.sources())}: no passage of at least {cfg.min_words} words; "
                         f"lower min_words or give more text")
    words = sum(len(t.split()) for t in texts)
    role = "with the" if cfg.use == "add" else "instead of the"
    say(f"distillation text: {len(texts):,} passages ({words:,} words) of {', '.join(cfg.sources())}, "
        f"{role} {data} training split", progress)
    return texts


def calibration_mix(train_texts: list[str], extra: list[str] | None, n: int, seed: int) -> list[str]:
    """``n`` calibration texts: the first half from ``train_texts`` (already a seeded draw), the rest drawn
    (seeded) from ``extra``; ``train_texts[:n]`` alone without extra text."""
    if not extra:
        return train_texts[:n]
    k = min(len(extra), n - n // 2)
    rng = random.Random(seed + 2)
    return train_texts[: n - k] + rng.sample(extra, k)


def report_entry(cfg: DistillDataConfig, texts: list[str]) -> dict:
    """What report.json records under ``distill_data``."""
    return {"source": cfg.source, "texts": len(texts), "words": sum(len(t.split()) for t in texts), "use": cfg.use,
            "min_words": cfg.min_words, "max_words": cfg.max_words, "calibration": cfg.calibration}
