"""Tiny random-weight BERT, DistilBERT and RoBERTa models (classifiers, token classifiers, sentence embedders
with sentence-transformers pooling) built in-process and saved as Hugging Face folders with minilm-l6's
tokenizer, for the architecture tests (imported by name: conftest.py files shadow each other)."""
from __future__ import annotations

import torch

HEADS = {"none": "", "sequence": "ForSequenceClassification", "token": "ForTokenClassification"}
MODEL_CLASS = {"bert": "Bert", "distilbert": "DistilBert", "roberta": "Roberta", "xlm-roberta": "XLMRoberta"}


def _tokenizer():
    from transformers import AutoTokenizer

    from edgekit.zoo import _minilm_path

    return AutoTokenizer.from_pretrained(_minilm_path())


def hf_config(arch: str, *, hidden=64, heads=4, layers=2, ffn=96, act=None, num_labels=3, max_len=128):
    """A Hugging Face config of ``arch`` for minilm-l6's tokenizer (vocabulary, pad id)."""
    import transformers

    tok = _tokenizer()
    common = dict(vocab_size=tok.vocab_size, pad_token_id=tok.pad_token_id, num_labels=num_labels)
    if arch == "distilbert":
        return transformers.DistilBertConfig(dim=hidden, n_heads=heads, n_layers=layers, hidden_dim=ffn,
                                             activation=act or "gelu", max_position_embeddings=max_len, **common)
    if arch in ("roberta", "xlm-roberta"):
        cls = transformers.RobertaConfig if arch == "roberta" else transformers.XLMRobertaConfig
        # positions start at pad + 1: the table holds max_len tokens after the offset; one token type
        return cls(hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=layers, intermediate_size=ffn,
                   hidden_act=act or "gelu", max_position_embeddings=max_len + tok.pad_token_id + 1,
                   type_vocab_size=1, bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id, **common)
    return transformers.BertConfig(hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=layers,
                                   intermediate_size=ffn, hidden_act=act or "gelu", max_position_embeddings=max_len,
                                   **common)


def build(arch: str, head: str = "sequence", seed: int = 0, **kw):
    """A random model of ``arch`` with task head ``head`` (none, sequence, token). Weights are drawn wider than
    Hugging Face's init (std 0.02) so that every layer changes its input visibly (attention rows not uniform,
    logits well apart), which makes the parity tests sensitive to a wrong step."""
    import transformers

    torch.manual_seed(seed)
    cfg = hf_config(arch, **kw)
    model = getattr(transformers, MODEL_CLASS[arch] + (HEADS[head] or "Model"))(cfg).eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name.lower() and name.endswith("weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 2 and "embeddings" in name:
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif p.dim() == 2:  # sd 1.5/sqrt(in): peaked attention, inputs that move each layer's output
                p.copy_(1.5 / p.shape[1] ** 0.5 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
    return model


def save(model, folder, pooling: tuple[str, bool] | None = None):
    """``model`` and minilm-l6's tokenizer into ``folder``; ``pooling`` (mode, normalize) writes the
    sentence-transformers modules.json and 1_Pooling/config.json."""
    from edgekit.models import write_sentence_pooling

    model.save_pretrained(folder, safe_serialization=True)
    _tokenizer().save_pretrained(folder)
    if pooling is not None:
        write_sentence_pooling(folder, pooling[0], pooling[1], model.config.hidden_size)
    return folder


def feeds(n=8, seq=24, seed=0, pad_id=0, vocab=30522):
    """(input_ids, attention_mask) int64 [n, seq]: random ids (no pad id among them), rows of varied lengths
    padded with ``pad_id`` (row 0 full length, one row a single token)."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1000, vocab, (n, seq), generator=g)
    lens = torch.randint(2, seq + 1, (n,), generator=g)
    lens[0], lens[-1] = seq, 1
    mask = (torch.arange(seq)[None] < lens[:, None]).long()
    ids = ids.masked_fill(mask == 0, pad_id)
    return ids, mask
