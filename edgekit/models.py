"""Torch modules with the task's fixed signature: (input_ids, attention_mask) -> one output.

Every runtime and exporter sees the same int64 inputs (``input_ids``, ``attention_mask``, and
``token_type_ids`` for models with a segment vocabulary: sentence pairs) and one float output:
``embeddings`` [batch, hidden] (mean-pooled over the mask, L2-normalised) for ``feature-extraction``,
``logits`` [batch, classes] for ``text-classification``, ``logits`` [batch, sequence, tags] for
``token-classification`` (one row per token; padded positions hold values nobody reads).
"""
from __future__ import annotations

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


class SentenceEncoder(nn.Module):
    """A Hugging Face encoder (``AutoModel``) that returns normalised sentence embeddings."""

    task = "feature-extraction"

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask, **_types(token_type_ids))
        return mean_pool(out.last_hidden_state, attention_mask)


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


def wrap(hf_model: nn.Module, task: str) -> nn.Module:
    """The task wrapper around a loaded Hugging Face model."""
    if task == "token-classification":
        return TokenClassifier(hf_model)
    return SequenceClassifier(hf_model) if task == "text-classification" else SentenceEncoder(hf_model)


def hf_model_of(wrapper: nn.Module) -> nn.Module:
    """The Hugging Face model inside a task wrapper (what ``save_pretrained`` is called on); a model that is no
    task wrapper is returned as it is."""
    if isinstance(wrapper, SequenceClassifier):
        return wrapper.model
    return wrapper.encoder if isinstance(wrapper, SentenceEncoder) else wrapper
