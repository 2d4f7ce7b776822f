"""ViT and DeiT (``model_type`` ``vit``, ``deit``): pre-LayerNorm layers, a patch embedding (a Conv2d whose
kernel equals its stride, i.e. a GEMM over flattened patches), a class token (DeiT: and a distillation token)
before the patches, learned position embeddings, a final LayerNorm, and under ``...ForImageClassification``
a Linear classifier on the class token.

Both module layouts transformers has used are read: ``layers[i].attention.{q,k,v,o}_proj`` and
``mlp.fc1/fc2`` (transformers 5), and ``encoder.layer[i].attention.attention.{query,key,value}``,
``attention.output.dense``, ``intermediate.dense``, ``output.dense`` (transformers 4).

Images have no padding: the ``mask`` the :class:`~edgekit.arch.base.Adapter` methods take is all ones and
ignored, and ``ids`` is ``pixel_values`` [B, C, H, W].
"""
from __future__ import annotations

from . import register
from .base import Encoder, Layer


def _layer_list(base):
    return base.layers if hasattr(base, "layers") else base.encoder.layer


def _linears(layer) -> dict:
    att = layer.attention
    if hasattr(att, "q_proj"):
        return {"q": att.q_proj, "k": att.k_proj, "v": att.v_proj, "o": att.o_proj,
                "ffn_in": layer.mlp.fc1, "ffn_out": layer.mlp.fc2}
    return {"q": att.attention.query, "k": att.attention.key, "v": att.attention.value, "o": att.output.dense,
            "ffn_in": layer.intermediate.dense, "ffn_out": layer.output.dense}


class VitAdapter:
    arch = "vit"
    model_types = ("vit", "deit")

    def describe(self, model, base, classifier: bool) -> Encoder:
        cfg, emb = base.config, base.embeddings
        layers = tuple(Layer(block=layer, linears=_linears(layer), attn_ln=layer.layernorm_before,
                             ffn_ln=layer.layernorm_after) for layer in _layer_list(base))
        prefix = 2 if getattr(emb, "distillation_token", None) is not None else 1
        patches = emb.patch_embeddings.num_patches
        head = classifier and hasattr(model, "classifier")
        return Encoder(
            arch=self.arch, adapter=self, base=base, hidden=cfg.hidden_size, heads=cfg.num_attention_heads,
            intermediate=cfg.intermediate_size, vocab_size=0, max_position=patches + prefix, type_vocab_size=0,
            layer_norm_eps=cfg.layer_norm_eps, activation=cfg.hidden_act, norm="pre", position_offset=0,
            pooling="cls" if classifier else "mean", normalize=False, head_activation=None, embeddings=emb,
            word=emb.patch_embeddings.projection,
            position=emb.position_embeddings, token_type=None, embed_ln=None, layers=layers, pooler=None,
            classifier=model.classifier if head else None, final_ln=base.layernorm,
            image=dict(image_size=_pair(cfg.image_size), patch_size=_pair(cfg.patch_size),
                       num_channels=cfg.num_channels, prefix_tokens=prefix))

    def set_layers(self, enc: Encoder, model, blocks: list) -> None:
        from torch import nn

        base = enc.base
        if hasattr(base, "layers"):
            base.layers = nn.ModuleList(blocks)
        else:
            base.encoder.layer = nn.ModuleList(blocks)
        base.config.num_hidden_layers = len(blocks)
        if model.config is not base.config:
            model.config.num_hidden_layers = len(blocks)

    def run_layer(self, block, hidden, mask=None):
        out = block(hidden)
        return out[0] if isinstance(out, tuple) else out

    def embed(self, enc: Encoder, ids):
        return enc.embeddings(ids)

    def hidden_states(self, enc: Encoder, ids, mask=None) -> tuple:
        # run the layers here: transformers 5's ViTModel collects hidden states through output hooks only
        h = self.embed(enc, ids)
        out = [h]
        for layer in enc.layers:
            h = self.run_layer(layer.block, h)
            out.append(h)
        return tuple(out)

    def head(self, enc: Encoder, hidden):
        # final LayerNorm, then the classifier on the class token (DeiT without teacher: the same)
        return enc.classifier(enc.final_ln(hidden)[:, 0])


def _pair(x) -> tuple[int, int]:
    return (int(x[0]), int(x[1])) if isinstance(x, (list, tuple)) else (int(x), int(x))


register(VitAdapter())
