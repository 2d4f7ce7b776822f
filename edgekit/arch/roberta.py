"""RoBERTa and XLM-RoBERTa (``model_type`` ``roberta``, ``xlm-roberta``): BERT's layers and embeddings, with
position ids that start after the padding index (``padding_idx + 1``) and count real tokens only; the sequence
classifier's head is ``out_proj(tanh(dense(h[first token])))`` (``RobertaClassificationHead``, no pooler)."""
from __future__ import annotations

from . import register
from .bert import BertAdapter


class RobertaAdapter(BertAdapter):
    arch = "roberta"
    model_types = ("roberta", "xlm-roberta")

    def position_offset(self, base) -> int:
        return int(base.embeddings.padding_idx) + 1

    def sequence_head(self, model, base):
        head = model.classifier
        return head.dense, "tanh", head.out_proj


register(RobertaAdapter())
