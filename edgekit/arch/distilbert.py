"""DistilBERT (``model_type`` ``distilbert``): post-LayerNorm layers (``sa_layer_norm`` after attention,
``output_layer_norm`` after the feed-forward), word + position embeddings only (no token types), the activation
from ``config.activation``; the sequence classifier's head is ``classifier(relu(pre_classifier(h[first token])))``."""
from __future__ import annotations

from . import register
from .base import Encoder, Layer, activation_of, run_head, task_head
from .bert import additive_mask


class DistilBertAdapter:
    arch = "distilbert"
    model_types = ("distilbert",)

    def describe(self, model, base, classifier: bool) -> Encoder:
        cfg, emb = base.config, base.embeddings
        layers = tuple(Layer(
            block=layer,
            linears={"q": layer.attention.q_lin, "k": layer.attention.k_lin, "v": layer.attention.v_lin,
                     "o": layer.attention.out_lin, "ffn_in": layer.ffn.lin1, "ffn_out": layer.ffn.lin2},
            attn_ln=layer.sa_layer_norm, ffn_ln=layer.output_layer_norm) for layer in base.transformer.layer)
        kind = task_head(model) if classifier else "none"
        pooler = model.pre_classifier if kind == "sequence" else None
        return Encoder(
            arch=self.arch, adapter=self, base=base, hidden=cfg.dim, heads=cfg.n_heads, intermediate=cfg.hidden_dim,
            vocab_size=cfg.vocab_size, max_position=cfg.max_position_embeddings, type_vocab_size=0,
            layer_norm_eps=float(emb.LayerNorm.eps), activation=activation_of(cfg.activation), norm="post",
            position_offset=0, pooling={"sequence": "cls", "token": "none"}.get(kind, "mean"),
            normalize=kind == "none", head_activation="relu" if pooler is not None else None, embeddings=emb,
            word=emb.word_embeddings, position=emb.position_embeddings, token_type=None, embed_ln=emb.LayerNorm,
            layers=layers, pooler=pooler, classifier=model.classifier if kind != "none" else None)

    def set_layers(self, enc: Encoder, model, blocks: list) -> None:
        from torch import nn

        base = enc.base
        base.transformer.layer = nn.ModuleList(blocks)
        base.transformer.n_layers = len(blocks)
        base.config.n_layers = len(blocks)
        if model.config is not base.config:
            model.config.n_layers = len(blocks)

    def run_layer(self, block, hidden, mask):
        out = block(hidden, attention_mask=additive_mask(mask))
        return out[0] if isinstance(out, tuple) else out

    def embed(self, enc: Encoder, ids):
        return enc.base.embeddings(ids)

    def hidden_states(self, enc: Encoder, ids, mask) -> tuple:
        return enc.base(input_ids=ids, attention_mask=mask, output_hidden_states=True).hidden_states

    def head(self, enc: Encoder, hidden):
        return run_head(enc, hidden)


register(DistilBertAdapter())
