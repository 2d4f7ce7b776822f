"""Knowledge distillation losses (teacher = the original model, eval mode, no gradients).

- logits: KL(softmax(t/T) || softmax(s/T)) * T^2 (Hinton et al. 2015), plus cross-entropy on labels; for token
  classification per token, averaged over real (unpadded) tokens, and the cross-entropy over the tokens that carry
  a tag (each word's first sub-token, label -100 elsewhere);
- embeddings (feature extraction): 1 - cosine between sentence embeddings;
- hidden states: MSE through a layer map (student layer i <- teacher layer map[i]; with layer dropping,
  ``DistillConfig.student_layers``: the student is the teacher with only those layers, see
  :func:`edgekit.arch.drop_layers`);
- relations (MiniLM v2 / TinyMIM): per head, KL between teacher and student softmax(QK^T/sqrt d) and
  softmax(VV^T/sqrt d), taken from one teacher layer (the last, or an intermediate one when the
  student is shallower) and the student's last layer. Padded keys are masked.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from edgekit.arch import encoder, num_layers
from edgekit.errors import InputError
from edgekit.models import SequenceClassifier, hf_model_of, mean_pool


def forward_all(wrapper: nn.Module, ids: torch.Tensor, mask: torch.Tensor, relation_layer: int | None,
                types: torch.Tensor | None = None):
    """Run once; return (output, hidden_states tuple, (q, k, v) of ``relation_layer`` or None). ``types``: the
    segment ids of sentence pairs (None: one segment)."""
    captured: dict[str, torch.Tensor] = {}
    hooks = []
    if relation_layer is not None:
        linears = encoder(wrapper).layers[relation_layer].linears
        for part, kind in (("query", "q"), ("key", "k"), ("value", "v")):
            hooks.append(linears[kind].register_forward_hook(
                lambda _m, _i, out, part=part: captured.__setitem__(part, out)))
    try:
        extra = {} if types is None else {"token_type_ids": types}
        res = hf_model_of(wrapper)(input_ids=ids, attention_mask=mask, output_hidden_states=True, **extra)
    finally:
        for h in hooks:
            h.remove()
    if isinstance(wrapper, SequenceClassifier):  # TokenClassifier too: [B, S, tags]
        out = res.logits
    else:
        out = wrapper.pool(res.last_hidden_state, mask) if hasattr(wrapper, "pool") else mean_pool(res.last_hidden_state, mask)
    qkv = (captured["query"], captured["key"], captured["value"]) if relation_layer is not None else None
    return out, res.hidden_states, qkv


def relation_loss(t_qkv, s_qkv, heads: int, mask: torch.Tensor, tokens: float | None = None) -> torch.Tensor:
    """Mean over (QK, VV) of KL(teacher || student) per head, averaged over real query tokens
    (``tokens`` replaces their count as the denominator; see ``Distiller.loss``)."""
    tq, tk, tv = t_qkv
    sq, sk, sv = s_qkv
    losses = []
    for t_a, t_b, s_a, s_b in ((tq, tk, sq, sk), (tv, tv, sv, sv)):
        # softmax(A B^T): for QK use cross products, for VV self products.
        def rel(a, b):
            bsz, s, hid = a.shape
            ah = a.view(bsz, s, heads, hid // heads).transpose(1, 2)
            bh = b.view(bsz, s, heads, hid // heads).transpose(1, 2)
            sc = ah @ bh.transpose(-1, -2) / (hid // heads) ** 0.5
            return F.log_softmax(sc.masked_fill(~mask[:, None, None, :].bool(), -1e4), dim=-1)

        lt, ls = rel(t_a, t_b), rel(s_a, s_b)
        kl = (lt.exp() * (lt - ls)).sum(-1)  # [B, H, S]
        w = mask[:, None, :].float()
        losses.append((kl * w).sum() / ((w.sum() if tokens is None else tokens) * heads))
    return sum(losses) / len(losses)


def default_relation_layer(teacher_layers: int, student_layers: int) -> int:
    """Last teacher layer when depths match; otherwise an intermediate one (TinyMIM found a middle-upper
    teacher layer a better target for a shallower student)."""
    if student_layers >= teacher_layers:
        return teacher_layers - 1
    return max(0, (teacher_layers * 2) // 3 - 1) if teacher_layers > 2 else teacher_layers - 1


def token_logit_losses(s_out: torch.Tensor, t_out: torch.Tensor, mask: torch.Tensor, labels, cfg,
                       tokens: float | None = None) -> dict[str, torch.Tensor]:
    """Per-token distillation of a token classifier: KL(teacher || student) at temperature T on every real token
    (padding masked out, mean over real tokens or over ``tokens``), and cross-entropy on the tagged positions
    (label -100 elsewhere: later sub-tokens, specials, padding)."""
    parts: dict[str, torch.Tensor] = {}
    if cfg.logits_weight > 0:
        T = cfg.temperature
        lt, ls = F.log_softmax(t_out / T, -1), F.log_softmax(s_out / T, -1)
        kl = (lt.exp() * (lt - ls)).sum(-1)  # [B, S]
        w = mask.to(kl.dtype)
        parts["logits"] = cfg.logits_weight * (kl * w).sum() / (w.sum() if tokens is None else tokens) * T * T
    if cfg.label_weight > 0 and labels is not None and bool((labels >= 0).any()):
        parts["labels"] = cfg.label_weight * F.cross_entropy(s_out.reshape(-1, s_out.shape[-1]), labels.reshape(-1),
                                                             ignore_index=-100)
    return parts


class Distiller:
    """Computes the weighted distillation loss of a student against a frozen teacher."""

    def __init__(self, teacher: nn.Module, student: nn.Module, cfg, task: str, layer_map: list[int] | None = None):
        self.teacher, self.student, self.cfg, self.task = teacher.eval(), student, cfg, task
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        t_layers, s_layers = num_layers(teacher), num_layers(student)
        # student layer i <- teacher layer layer_map[i]; a layer-dropped student starts as those layers
        self.layer_map = layer_map or cfg.student_layers or list(range(t_layers))[:s_layers]
        if len(self.layer_map) != s_layers:
            raise ValueError(f"layer map has {len(self.layer_map)} entries for a {s_layers}-layer student")
        self.heads = encoder(student).heads
        self.t_rel = cfg.relation_teacher_layer if cfg.relation_teacher_layer is not None else \
            default_relation_layer(t_layers, s_layers)
        self.s_rel = s_layers - 1
        self.tail_layers = self._tail_layers(cfg, s_layers)
        if self.tail_layers and task == "token-classification":
            raise InputError("distill.tail_weight is not available for token classification (its head reads every "
                             "token, not a pooled one); set tail_weight: 0")
        if self.tail_layers and task == "text-classification" and encoder(teacher).classifier is None:
            raise InputError("distill.tail_weight: this classifier has no BERT-style head (pooler, then classifier) "
                             "for the teacher's tail to end in; set tail_weight: 0")
        self.step = 0  # the training loop sets it; picks this step's tail layer

    @staticmethod
    def _tail_layers(cfg, s_layers: int) -> list[int]:
        if not cfg.tail_weight:
            return []
        layers = list(range(s_layers - 1)) if cfg.tail_layers is None else list(cfg.tail_layers)
        bad = [i for i in layers if not 0 <= i < s_layers - 1]
        if bad or not layers:
            raise InputError(f"distill.tail_layers must name student layers 0..{s_layers - 2} (the last layer's "
                             f"tail is the output itself); got {cfg.tail_layers}")
        return layers

    def _tail(self, h: torch.Tensor, mask: torch.Tensor, student_layer: int) -> torch.Tensor:
        """The teacher's output (embedding or logits) computed from ``h``, the student's hidden state after
        ``student_layer``, by the teacher's layers after the one that layer maps to, then its head."""
        enc = encoder(self.teacher)
        for layer in enc.layers[self.layer_map[student_layer] + 1:]:
            h = enc.run_layer(layer.block, h, mask)
        if self.task != "text-classification":
            return self.teacher.pool(h, mask) if hasattr(self.teacher, "pool") else mean_pool(h, mask)
        return enc.head(h)  # pooler on [CLS], then the classifier (dropout off in eval)

    def loss(self, ids, mask, labels=None, tokens: float | None = None,
             types: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Weighted sum of the enabled losses and their values. ``tokens``: denominator of the token
        means (hidden, relation, per-token logits) instead of this batch's real-token count; data-parallel shards
        pass global tokens / ranks so that the average of the shard losses is the global-batch loss. ``types``:
        segment ids of sentence pairs. Token classification: ``labels`` [B, S] tag ids, -100 where none."""
        c = self.cfg
        need_rel = c.relation_weight > 0
        with torch.no_grad():
            t_out, t_hid, t_qkv = forward_all(self.teacher, ids, mask, self.t_rel if need_rel else None, types)
        s_out, s_hid, s_qkv = forward_all(self.student, ids, mask, self.s_rel if need_rel else None, types)
        parts: dict[str, torch.Tensor] = {}
        if self.task == "token-classification":
            parts.update(token_logit_losses(s_out, t_out, mask, labels, c, tokens))
        elif self.task == "text-classification":
            if c.logits_weight > 0:
                T = c.temperature
                parts["logits"] = c.logits_weight * F.kl_div(F.log_softmax(s_out / T, -1), F.softmax(t_out / T, -1),
                                                             reduction="batchmean") * T * T
            # distillation passages carry label -100 (ignored); a batch of only those has no label loss
            if c.label_weight > 0 and labels is not None and bool((labels != -100).any()):
                parts["labels"] = c.label_weight * F.cross_entropy(s_out, labels)
        elif c.embedding_weight > 0:
            parts["embedding"] = c.embedding_weight * (1 - F.cosine_similarity(s_out, t_out, dim=-1)).mean()
        if c.hidden_weight > 0:
            m = mask[..., None].float()
            pairs = [(0, 0)] + [(i + 1, t + 1) for i, t in enumerate(self.layer_map)]
            n_tok = m.sum() if tokens is None else tokens
            mse = sum(((s_hid[i] - t_hid[j]) ** 2 * m).sum() / (n_tok * s_hid[i].shape[-1]) for i, j in pairs)
            parts["hidden"] = c.hidden_weight * mse / len(pairs)
        if self.tail_layers:
            li = self.tail_layers[self.step % len(self.tail_layers)]
            tail = self._tail(s_hid[li + 1], mask, li)
            if self.task == "text-classification":
                T = c.temperature
                parts["tail"] = c.tail_weight * F.kl_div(F.log_softmax(tail / T, -1), F.softmax(t_out / T, -1),
                                                         reduction="batchmean") * T * T
            else:
                parts["tail"] = c.tail_weight * (1 - F.cosine_similarity(tail, t_out, dim=-1)).mean()
        if need_rel:
            parts["relation"] = c.relation_weight * relation_loss(t_qkv, s_qkv, self.heads, mask, tokens)
        total = sum(parts.values())
        return total, {k: float(v.detach()) for k, v in parts.items()}
