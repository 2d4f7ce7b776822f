"""BERT (``model_type`` ``bert``: BERT of any size, MiniLM, all-MiniLM-L6-v2): post-LayerNorm layers, absolute
position ids from 0, token type embeddings; ``...ForSequenceClassification`` has a tanh pooler on [CLS] before
its classifier, ``...ForTokenClassification`` a classifier on every token."""
from __future__ import annotations

from . import register
from .base import Encoder, Layer, activation_of, run_head, task_head


def additive_mask(mask):
    """[B, S] {0,1} attention mask -> the [B, 1, 1, S] additive float mask a BertLayer takes."""
    import torch

    return torch.zeros(mask.shape[0], 1, 1, mask.shape[1]).masked_fill(
        mask[:, None, None, :] == 0, torch.finfo(torch.float32).min)


class BertAdapter:
    arch = "bert"
    model_types = ("bert",)

    def position_offset(self, base) -> int:
        return 0

    def sequence_head(self, model, base):
        """(Linear before the classifier or None, its activation, classifier Linear) of a sequence classifier."""
        pooler = getattr(base, "pooler", None)
        return (pooler.dense, "tanh", model.classifier) if pooler is not None else (None, None, model.classifier)

    def describe(self, model, base, classifier: bool) -> Encoder:
        cfg, emb = base.config, base.embeddings
        layers = tuple(Layer(
            block=layer,
            linears={"q": layer.attention.self.query, "k": layer.attention.self.key, "v": layer.attention.self.value,
                     "o": layer.attention.output.dense, "ffn_in": layer.intermediate.dense,
                     "ffn_out": layer.output.dense},
            attn_ln=layer.attention.output.LayerNorm, ffn_ln=layer.output.LayerNorm) for layer in base.encoder.layer)
        kind = task_head(model) if classifier else "none"
        pooler, act, cls = self.sequence_head(model, base) if kind == "sequence" else (None, None, None)
        if kind == "token":
            cls = model.classifier
        token_type = getattr(emb, "token_type_embeddings", None)
        return Encoder(
            arch=self.arch, adapter=self, base=base, hidden=cfg.hidden_size, heads=cfg.num_attention_heads,
            intermediate=cfg.intermediate_size, vocab_size=cfg.vocab_size, max_position=cfg.max_position_embeddings,
            type_vocab_size=token_type.num_embeddings if token_type is not None else 0,
            layer_norm_eps=cfg.layer_norm_eps, activation=activation_of(cfg.hidden_act), norm="post",
            position_offset=self.position_offset(base),
            pooling={"sequence": "cls", "token": "none"}.get(kind, "mean"), normalize=kind == "none",
            head_activation=act, embeddings=emb, word=emb.word_embeddings, position=emb.position_embeddings,
            token_type=token_type, embed_ln=emb.LayerNorm, layers=layers, pooler=pooler, classifier=cls)

    def set_layers(self, enc: Encoder, model, blocks: list) -> None:
        from torch import nn

        base = enc.base
        base.encoder.layer = nn.ModuleList(blocks)
        for i, layer in enumerate(base.encoder.layer):  # HF uses layer_idx for caches only; keep it consistent
            for mod in layer.modules():
                if hasattr(mod, "layer_idx"):
                    mod.layer_idx = i
        base.config.num_hidden_layers = len(blocks)
        if model.config is not base.config:  # a task model usually shares its base model's config
            model.config.num_hidden_layers = len(blocks)

    def run_layer(self, block, hidden, mask):
        out = block(hidden, attention_mask=additive_mask(mask))
        return out[0] if isinstance(out, tuple) else out

    def embed(self, enc: Encoder, ids):
        return enc.base.embeddings(input_ids=ids)

    def hidden_states(self, enc: Encoder, ids, mask) -> tuple:
        return enc.base(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states

    def head(self, enc: Encoder, hidden):
        return run_head(enc, hidden)


register(BertAdapter())
