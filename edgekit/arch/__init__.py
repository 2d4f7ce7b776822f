"""Model structure: one adapter per architecture family, one internal encoder description for everything else.

Pruning, distillation, quantization, the native writer and export never walk a model's attribute paths; they
ask :func:`encoder` for its :class:`~edgekit.arch.base.Encoder` (embeddings, per-layer Linears q/k/v/o/ffn_in/
ffn_out and LayerNorms, activation, LayerNorm placement, position offset, pooling). Adapters register by the
Hugging Face ``config.model_type`` they handle; a new architecture is one adapter module imported below.

>>> from edgekit.arch import encoder, encoder_linears
>>> enc = encoder(model)                          # doctest: +SKIP
>>> enc.arch, enc.hidden, len(enc.layers)         # doctest: +SKIP
('bert', 384, 6)
>>> sorted(encoder_linears(model))[:2]            # doctest: +SKIP
['layers.0.ffn_in', 'layers.0.ffn_out']
"""
from __future__ import annotations

from edgekit.errors import InputError

from .base import ACTIVATIONS, LINEAR_KINDS, POOLINGS, Adapter, Encoder, Layer

ADAPTERS: dict[str, Adapter] = {}  # Hugging Face model_type -> adapter


def register(adapter: Adapter) -> Adapter:
    for model_type in adapter.model_types:
        ADAPTERS[model_type] = adapter
    return adapter


def supported() -> list[str]:
    """Architecture families with an adapter, e.g. ``['bert', 'distilbert', 'roberta']``."""
    return sorted({a.arch for a in ADAPTERS.values()})


def _hf(model):
    from edgekit.models import hf_model_of  # torch: imported when a model is there already

    return hf_model_of(model)


def check_model_type(model_type: str | None) -> None:
    """One line naming the supported families if ``model_type`` (a Hugging Face ``config.model_type``) has
    no adapter; lets a command refuse a model from its config.json before loading any weights."""
    if model_type not in ADAPTERS:
        raise InputError(f"unsupported architecture {model_type!r}; supported: {', '.join(supported())}")


def adapter_for(model) -> Adapter:
    """The adapter for a model (task wrapper or Hugging Face model); one line naming the supported ones if none."""
    hf = _hf(model)
    model_type = getattr(getattr(hf, "config", None), "model_type", None)
    check_model_type(model_type)
    return ADAPTERS[model_type]


def encoder(model) -> Encoder:
    """The description of ``model``'s encoder (live modules: changes to them change the model). A sentence
    embedder's pooling and normalisation are those of its task wrapper (read from a sentence-transformers folder,
    see :func:`edgekit.models.sentence_pooling`)."""
    from dataclasses import replace

    hf = _hf(model)
    base = hf.base_model if hasattr(hf, "base_model") else hf
    enc = adapter_for(hf).describe(hf, base, classifier=hf is not base)
    if enc.classifier is None and getattr(model, "pooling", None) is not None:
        enc = replace(enc, pooling=model.pooling, normalize=bool(model.normalize))
    return enc


def encoder_linears(model) -> dict:
    """{``layers.{i}.{q|k|v|o|ffn_in|ffn_out}``: nn.Linear} for every encoder Linear that is a plain
    ``nn.Linear`` right now (Linears wrapped for fake-quant are left out), in forward order."""
    from torch import nn

    return {f"layers.{i}.{kind}": mod for i, layer in enumerate(encoder(model).layers)
            for kind, mod in layer.linears.items() if isinstance(mod, nn.Linear)}


def module_names(model) -> dict[str, str]:
    """{internal Linear name: its dotted module path in ``model``} (what ``named_modules`` calls it)."""
    path = {id(m): n for n, m in model.named_modules()}
    return {n: path[id(lin)] for n, lin in encoder_linears(model).items()}


def num_layers(model) -> int:
    return len(encoder(model).layers)


def drop_layers(model, keep: list[int]):
    """Keep only encoder layers ``keep`` (sorted indices), in place: the layer list and the config's layer count
    shrink, so saving, export and the native writer see a shallower model. New layer i is old layer keep[i]."""
    enc = encoder(model)
    n = len(enc.layers)
    if not keep or any(i < 0 or i >= n for i in keep) or sorted(set(keep)) != list(keep):
        raise ValueError(f"student_layers must be sorted, unique indices in 0..{n - 1}; got {keep}")
    enc.adapter.set_layers(enc, _hf(model), [enc.layers[i].block for i in keep])
    return model


def freeze_embeddings(model):
    """Stop training the embedding layer (token, position and type embeddings and their LayerNorm), in place:
    the encoder layers then see the teacher's input representation on every text, seen in training or not."""
    for p in encoder(model).embeddings.parameters():
        p.requires_grad_(False)
    return model


from . import bert, distilbert, roberta, vit  # noqa: E402,F401  (each registers its adapter)

__all__ = ["ACTIVATIONS", "ADAPTERS", "LINEAR_KINDS", "POOLINGS", "Adapter", "Encoder", "Layer", "adapter_for", "drop_layers", "encoder",
           "encoder_linears", "freeze_embeddings", "module_names", "num_layers", "register", "supported"]
