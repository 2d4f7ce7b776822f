"""The served model: one artifact's session and tokenizer, turning texts into token rows and rows into outputs.

Requests are tokenised one by one into unpadded rows (1-D int64 token ids); the batcher gathers rows
from many requests and :meth:`ServedModel.run` pads them to the longest row of that batch, not to a
fixed length, so a batch of short texts costs what short texts cost.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from edgekit.errors import InputError

from .config import ServeConfig, pick_runtime
from .schemas import ServeError

log = logging.getLogger("edgekit.serve")

TASKS = ("feature-extraction", "text-classification")  #: what the routes know how to answer


@dataclass
class ServedModel:
    """Everything a route needs to know about the model. Only the batcher's worker thread calls :meth:`run`."""

    session: Any
    tokenizer: Any
    name: str
    task: str
    runtime: str
    precision: str
    max_length: int  #: tokens per input, special tokens included
    labels: list[str] | None  #: class names (classifiers only)
    dim: int  #: embedding size or number of classes
    pad_id: int
    vocab_size: int | None

    @classmethod
    def load(cls, cfg: ServeConfig) -> "ServedModel":
        """Verify and load ``cfg.artifact`` on its runtime, load its tokenizer, and run one warm-up input."""
        from edgekit.artifact import load_artifact
        from edgekit.runtimes import load, load_tokenizer

        art = load_artifact(cfg.artifact, verify=False)  # cheap look first: a wrong --runtime fails before hashing
        if art.task not in TASKS:
            raise InputError(f"edgekit serve runs {' and '.join(TASKS)} artifacts; {cfg.artifact} is {art.task}")
        runtime = pick_runtime(art.manifest.formats, cfg.runtime)
        art = load_artifact(cfg.artifact)
        session = load(art, runtime, cfg.threads)
        tokenizer = load_tokenizer(art)
        limit = int(getattr(session, "max_len", art.manifest.max_sequence_length))
        if cfg.max_length is not None:
            if cfg.max_length > limit:
                raise InputError(f"--max-length {cfg.max_length} is longer than the model's maximum of {limit} tokens")
            limit = cfg.max_length
        model = cls(session=session, tokenizer=tokenizer, name=cfg.model_name or art.manifest.model, task=art.task,
                    runtime=runtime, precision=str(getattr(session, "precision", "fp32")), max_length=limit,
                    labels=None, dim=0, pad_id=_pad_id(tokenizer), vocab_size=_vocab_size(tokenizer))
        out = model.run(model.encode(["warm-up"], truncate=True))
        model.dim = int(out.shape[1])
        if model.task == "text-classification":
            model.labels = _labels(art, model.dim)
        return model

    def encode(self, texts: Sequence[str], truncate: bool) -> list[np.ndarray]:
        """Token rows for ``texts`` (special tokens included, no padding).

        Without ``truncate`` a text longer than :attr:`max_length` tokens is a 413: it is tokenised one
        token past the limit, so "too long" is seen without tokenising the whole of a huge text.
        """
        from edgekit.data import tokenize

        limit = self.max_length if truncate else self.max_length + 1
        feeds = tokenize(self.tokenizer, list(texts), max_length=limit, pad_to_max=False)
        rows = [ids[mask.astype(bool)] for ids, mask in zip(feeds["input_ids"], feeds["attention_mask"])]
        if not truncate:
            self._check_lengths(rows)
        return rows

    def rows_from_ids(self, ids: Sequence[Sequence[int]], truncate: bool) -> list[np.ndarray]:
        """Token rows from token ids a client sent (OpenAI's ``input`` may be ids), checked against the vocabulary."""
        rows = [np.asarray(r, dtype=np.int64) for r in ids]
        for i, r in enumerate(rows):
            if self.vocab_size is not None and r.size and int(r.max()) >= self.vocab_size:
                raise ServeError(400, "invalid_token_id", f"input {i} has token id {int(r.max())}; this model's "
                                 f"vocabulary has ids 0..{self.vocab_size - 1}")
        if truncate:
            return [r[: self.max_length] for r in rows]
        self._check_lengths(rows)
        return rows

    def _check_lengths(self, rows: list[np.ndarray]) -> None:
        for i, r in enumerate(rows):
            if len(r) > self.max_length:
                raise ServeError(413, "input_too_long",
                                 f"input {i} is longer than the model's maximum of {self.max_length} tokens; "
                                 f"shorten it, send \"truncate\": true, or start the server with --auto-truncate")

    def run(self, rows: Sequence[np.ndarray]) -> np.ndarray:
        """Pad ``rows`` to the longest one, run the session, return float32 [len(rows), dim]."""
        seq = max(len(r) for r in rows)
        ids = np.full((len(rows), seq), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(rows), seq), dtype=np.int64)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = r
            mask[i, : len(r)] = 1
        out = np.asarray(self.session.run({"input_ids": ids, "attention_mask": mask}), dtype=np.float32)
        if out.ndim != 2 or out.shape[0] != len(rows):
            raise RuntimeError(f"{self.runtime} returned shape {out.shape} for {len(rows)} inputs")
        return out

    def info(self) -> dict:
        """What ``GET /info`` and ``GET /health`` report (TEI's field names where it has one)."""
        return {"model_id": self.name, "task": self.task, "runtime": self.runtime, "precision": self.precision,
                "max_input_length": self.max_length, "dim": self.dim, "labels": self.labels}


def _pad_id(tokenizer) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else 0


def _vocab_size(tokenizer) -> int | None:
    try:
        return int(len(tokenizer))
    except TypeError:
        size = getattr(tokenizer, "get_vocab_size", None)
        return int(size()) if size else None


def _labels(art, n: int) -> list[str]:
    """Class names: the manifest's, else ``id2label`` of the torch config, else LABEL_i."""
    names = art.manifest.labels
    if not names:
        cfg = art.root / art.manifest.formats.get("torch", "torch") / "config.json"
        try:
            id2label = json.loads(cfg.read_text()).get("id2label") or {}
            names = [id2label[str(i)] for i in range(n)]
        except (OSError, ValueError, KeyError):
            names = None
    if not names or len(names) != n:
        if names:
            log.warning("the artifact names %d labels but the model has %d classes; using LABEL_i", len(names), n)
        names = [f"LABEL_{i}" for i in range(n)]
    return list(names)
