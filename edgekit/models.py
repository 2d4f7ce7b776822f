"""Torch modules with the task's fixed signature: (input_ids, attention_mask) -> one output.

Every runtime and exporter sees the same two int64 inputs and one float output:
``embeddings`` [batch, hidden] (mean-pooled over the mask, L2-normalised) for ``feature-extraction``,
``logits`` [batch, classes] for ``text-classification``.
"""
from __future__ import annotations

import torch
from torch import nn

TASKS = ("feature-extraction", "text-classification")
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = {"feature-extraction": "embeddings", "text-classification": "logits"}


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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        out = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
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

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, attention_mask=attention_mask).logits


def wrap(hf_model: nn.Module, task: str) -> nn.Module:
    """The task wrapper around a loaded Hugging Face model."""
    return SequenceClassifier(hf_model) if task == "text-classification" else SentenceEncoder(hf_model)


def hf_model_of(wrapper: nn.Module) -> nn.Module:
    """The Hugging Face model inside a task wrapper (what ``save_pretrained`` is called on); a model that is no
    task wrapper is returned as it is."""
    if isinstance(wrapper, SequenceClassifier) or getattr(wrapper, "task", None) == "image-classification":
        return wrapper.model
    return wrapper.encoder if isinstance(wrapper, SentenceEncoder) else wrapper
