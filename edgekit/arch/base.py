"""The internal description of a transformer encoder that every compression step and writer reads.

An adapter (one per architecture family, :mod:`edgekit.arch.bert`, ...) builds an :class:`Encoder` from a
Hugging Face model: which modules hold the embeddings, each layer's six Linears and two LayerNorms, how the
layer is normalised, where position ids start and how the output is pooled. The description holds the live
modules (no copies), so pruning a Linear it names prunes the model.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

#: the six Linears of an encoder layer, by their internal (native-format) names, in forward order
LINEAR_KINDS = ("q", "k", "v", "o", "ffn_in", "ffn_out")

#: the feed-forward activations the native engine runs, by edgekit's name
ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
#: Hugging Face activation names (``hidden_act``, DistilBERT's ``activation``) -> edgekit's
HF_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu_fast": "gelu_tanh",
                  "relu": "relu"}
#: how token states become one vector: mean over real tokens, the first token, the per-channel max over real
#: tokens, or none (per-token output: token classification)
POOLINGS = ("mean", "cls", "max", "none")


def activation_of(name: str) -> str:
    """edgekit's name for a Hugging Face activation name; one line naming the supported ones if there is none."""
    from edgekit.errors import InputError

    if name not in HF_ACTIVATIONS:
        raise InputError(f"unsupported activation {name!r}; supported: {', '.join(sorted(HF_ACTIVATIONS))}")
    return HF_ACTIVATIONS[name]


@dataclass(frozen=True)
class Layer:
    """One encoder layer. ``linears`` maps each of :data:`LINEAR_KINDS` to the module in that place: an
    ``nn.Linear``, or whatever wraps it at the moment (a fake-quant module during QAT)."""

    block: Any
    linears: dict[str, Any]
    attn_ln: Any  # LayerNorm of the attention sublayer
    ffn_ln: Any  # LayerNorm of the feed-forward sublayer


@dataclass(frozen=True)
class Encoder:
    """A Hugging Face encoder seen through its adapter.

    ``norm`` is ``"post"`` (LayerNorm after each residual add, as BERT) or ``"pre"``; ``position_offset`` is the
    first position id (0 for BERT; RoBERTa: padding index + 1, and positions then count real tokens only);
    ``activation`` one of :data:`ACTIVATIONS`; ``type_vocab_size`` 0 when there are no token type embeddings
    (DistilBERT). ``pooling`` (one of :data:`POOLINGS`) says what the output reads: sentence embeddings and
    sequence classifiers a pooled vector (classifiers: ``cls``), token classifiers every token (``none``);
    ``normalize``: L2-normalised embeddings. Classifiers: ``pooler`` is the Linear on the pooled vector before
    the classifier, followed by ``head_activation`` (BERT and RoBERTa: ``tanh``, DistilBERT: ``relu``), or
    None (token classifiers: the classifier reads each token's state)."""

    arch: str
    adapter: "Adapter"
    base: Any  # the encoder model without task head (embeddings + layers + pooler)
    hidden: int
    heads: int
    intermediate: int
    vocab_size: int
    max_position: int
    type_vocab_size: int
    layer_norm_eps: float
    activation: str
    norm: str
    position_offset: int
    pooling: str
    normalize: bool
    head_activation: str | None
    embeddings: Any  # the module holding every embedding parameter
    word: Any
    position: Any
    token_type: Any | None
    embed_ln: Any
    layers: tuple[Layer, ...]
    pooler: Any | None  # the Linear on the pooled vector before the classifier (sequence classifiers)
    classifier: Any | None  # the classification Linear (classifiers)
    # vision encoders (ViT / DeiT, ``norm="pre"``, ``pooling="cls"``): the LayerNorm after the last layer, and
    # {image_size: (h, w), patch_size: (h, w), num_channels, prefix_tokens}; ``word`` is then the patch Conv2d
    final_ln: Any | None = None
    image: dict | None = None

    @property
    def token_level(self) -> bool:
        """Per-token output (token classification)."""
        return self.pooling == "none"

    def run_layer(self, block, hidden, mask):
        """``block`` (one of ``layers[i].block``) on hidden states [B, S, H] with a {0,1} attention mask [B, S]."""
        return self.adapter.run_layer(block, hidden, mask)

    def embed(self, ids):
        """The embedding layer's output for token ids [B, S]: what layer 0 reads."""
        return self.adapter.embed(self, ids)

    def hidden_states(self, ids, mask) -> tuple:
        """(embedding output, output of layer 0, ..., output of the last layer)."""
        return self.adapter.hidden_states(self, ids, mask)

    def head(self, hidden):
        """A classifier's logits from its last hidden states: [B, labels], or [B, S, labels] per token."""
        return self.adapter.head(self, hidden)


class Adapter(Protocol):
    """Maps one architecture family to :class:`Encoder` and runs its pieces."""

    arch: str
    model_types: tuple[str, ...]  # Hugging Face ``config.model_type`` values it handles

    def describe(self, model, base, classifier: bool) -> Encoder:
        """``model``: the Hugging Face model (task head included); ``base``: its encoder."""

    def set_layers(self, enc: Encoder, model, blocks: list) -> None:
        """Make ``blocks`` the encoder's layers (layer dropping); ``model``: the Hugging Face model."""

    def run_layer(self, block, hidden, mask): ...

    def embed(self, enc: Encoder, ids): ...

    def hidden_states(self, enc: Encoder, ids, mask) -> tuple: ...

    def head(self, enc: Encoder, hidden): ...


def task_head(model) -> str:
    """What a Hugging Face model's task head is: ``sequence`` (one label per text), ``token`` (one label per
    token) or ``none`` (a bare encoder)."""
    name = type(model).__name__
    if name.endswith("ForTokenClassification"):
        return "token"
    return "sequence" if name.endswith("ForSequenceClassification") else "none"


def run_head(enc: Encoder, hidden):
    """The logits of a classifier described by ``enc`` from its last hidden states [B, S, H]: the classifier on
    every token (token classifiers), else on the first token's state after ``pooler`` and ``head_activation``
    (dropout is off in eval mode, so it is left out)."""
    import torch

    if enc.token_level:
        return enc.classifier(hidden)
    x = hidden[:, 0]
    if enc.pooler is not None:
        x = enc.pooler(x)
        x = torch.tanh(x) if enc.head_activation == "tanh" else torch.relu(x)
    return enc.classifier(x)
