"""Torch modules with the task's fixed signature: (input_ids, attention_mask[, token_type_ids]) -> one output.

Every runtime and exporter sees the same int64 inputs (``input_ids``, ``attention_mask``, and
``token_type_ids`` for models with a segment vocabulary: sentence pairs) and one float output:
``embeddings`` [batch, hidden] (pooled over the mask as the model's sentence-transformers folder says: mean, CLS
or max, L2-normalised when it has a ``Normalize`` module; a plain Hugging Face folder: mean + L2 norm) for
``feature-extraction``, ``logits`` [batch, classes] for ``text-classification``, ``logits`` [batch, sequence,
tags] for ``token-classification`` (one row per token; padded positions hold values nobody reads).
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

TASKS = ("feature-extraction", "text-classification", "token-classification")
INPUT_NAMES = ("input_ids", "attention_mask")
TOKEN_TYPES = "token_type_ids"  #: the optional third input (segment ids of sentence pairs)
OUTPUT_NAME = {"feature-extraction": "embeddings", "text-classification": "logits", "token-classification": "logits"}


def takes_token_types(hf_model) -> bool:
    """Whether the model has more than one segment embedding (BERT: yes; RoBERTa, DistilBERT: no), so
    ``token_type_ids`` is one of its inputs: without it a sentence pair reads as one sentence."""
    return int(getattr(getattr(hf_model, "config", None), "type_vocab_size", 0) or 0) > 1


def input_names(hf_model) -> tuple[str, ...]:
    """The inputs an exported model takes, in order."""
    return INPUT_NAMES + ((TOKEN_TYPES,) if takes_token_types(hf_model) else ())


def auto_class(task: str):
    """The ``transformers`` Auto class that loads a model folder for ``task``."""
    import transformers

    return {"text-classification": transformers.AutoModelForSequenceClassification,
            "token-classification": transformers.AutoModelForTokenClassification}.get(task, transformers.AutoModel)


def _types(token_type_ids):
    return {} if token_type_ids is None else {"token_type_ids": token_type_ids}


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens, then L2 norm (sentence-transformers' all-MiniLM-L6-v2 pooling)."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * m).sum(dim=1)
    count = m.sum(dim=1).clamp(min=1e-9)
    return nn.functional.normalize(summed / count, p=2, dim=-1)


#: sentence-transformers pooling modes edgekit runs (``1_Pooling/config.json``), by edgekit's name
ST_POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}


def pool(hidden: torch.Tensor, mask: torch.Tensor, mode: str = "mean", normalize: bool = True) -> torch.Tensor:
    """Token states [B, S, H] -> one vector per sequence as sentence-transformers pools them: ``mean`` over real
    tokens, ``cls`` (the first token) or ``max`` (per channel, over real tokens); then L2 norm if ``normalize``."""
    m = mask.unsqueeze(-1).to(hidden.dtype)
    if mode == "cls":
        out = hidden[:, 0]
    elif mode == "max":
        out = hidden.masked_fill(m == 0, -1e9).max(dim=1).values
    else:
        out = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1e-9)
    return nn.functional.normalize(out, p=2, dim=-1) if normalize else out


def sentence_pooling(folder: str | Path | None) -> tuple[str, bool]:
    """(pooling mode, normalize) of a sentence-transformers folder: the mode from its Pooling module's
    ``config.json`` (``1_Pooling/``), normalisation when ``modules.json`` lists a ``Normalize`` module. A folder
    without them (a plain Hugging Face encoder) pools as edgekit always has: ``("mean", True)``."""
    from edgekit.errors import InputError

    folder = Path(folder) if folder is not None else None
    if folder is None or not ((folder / "modules.json").is_file() or (folder / "1_Pooling" / "config.json").is_file()):
        return "mean", True
    try:
        modules = json.loads((folder / "modules.json").read_text()) if (folder / "modules.json").is_file() else []
        types = [str(m.get("type", "")) for m in modules]
        pool_dir = next((m.get("path", "") for m in modules if str(m.get("type", "")).endswith("Pooling")), "1_Pooling")
        cfg = json.loads((folder / pool_dir / "config.json").read_text())
    except (OSError, ValueError, AttributeError) as exc:
        raise InputError(f"{folder}: unreadable sentence-transformers modules.json or pooling config ({exc})") from None
    modes = [cfg["pooling_mode"]] if isinstance(cfg.get("pooling_mode"), str) else [
        k for k, v in cfg.items() if k.startswith("pooling_mode_") and v is True]
    names = {"mean": "mean", "cls": "cls", "max": "max", **ST_POOLING}
    if len(modes) != 1 or modes[0] not in names:
        raise InputError(f"{folder / pool_dir / 'config.json'}: pooling {modes or 'none'} is not supported; "
                         f"supported: exactly one of {', '.join(ST_POOLING)}")
    return names[modes[0]], any(t.endswith("Normalize") for t in types)


def write_sentence_pooling(folder: Path, mode: str, normalize: bool, width: int) -> None:
    """Write ``modules.json`` and ``1_Pooling/config.json`` into a saved encoder's folder (what
    :func:`sentence_pooling` reads back), so the folder pools as the model it came from."""
    modules = [{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
               {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]
    if normalize:
        modules.append({"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"})
    (folder / "1_Pooling").mkdir(parents=True, exist_ok=True)
    cfg = {"word_embedding_dimension": width, **{k: v == mode for k, v in ST_POOLING.items()},
           "pooling_mode_mean_sqrt_len_tokens": False}
    (folder / "1_Pooling" / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    (folder / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")


class SentenceEncoder(nn.Module):
    """A Hugging Face encoder (``AutoModel``) that returns sentence embeddings, pooled by ``pooling`` (mean, cls
    or max) and L2-normalised if ``normalize``."""

    task = "feature-extraction"

    def __init__(self, encoder: nn.Module, pooling: str = "mean", normalize: bool = True):
        super().__init__()
        self.encoder = encoder
        self.pooling, self.normalize = pooling, normalize

    def pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """This model's embedding of last hidden states [B, S, H]."""
        return pool(hidden, mask, self.pooling, self.normalize)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **_types(token_type_ids))
        return self.pool(out.last_hidden_state, attention_mask)


class SequenceClassifier(nn.Module):
    """An ``AutoModelForSequenceClassification`` that returns logits only."""

    task = "text-classification"

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def encoder(self) -> nn.Module:
        return self.model.base_model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask, **_types(token_type_ids)).logits


class TokenClassifier(SequenceClassifier):
    """An ``AutoModelForTokenClassification`` that returns per-token logits [batch, sequence, tags]."""

    task = "token-classification"


def wrap(hf_model: nn.Module, task: str, folder: str | Path | None = None) -> nn.Module:
    """The task wrapper around a loaded Hugging Face model; a sentence embedder pools as its ``folder`` (the one
    it was loaded from) says (:func:`sentence_pooling`)."""
    if task == "token-classification":
        return TokenClassifier(hf_model)
    if task == "text-classification":
        return SequenceClassifier(hf_model)
    return SentenceEncoder(hf_model, *sentence_pooling(folder))


def hf_model_of(wrapper: nn.Module) -> nn.Module:
    """The Hugging Face model inside a task wrapper (what ``save_pretrained`` is called on); a model that is no
    task wrapper is returned as it is."""
    if isinstance(wrapper, SequenceClassifier) or getattr(wrapper, "task", None) == "image-classification":
        return wrapper.model
    return wrapper.encoder if isinstance(wrapper, SentenceEncoder) else wrapper
