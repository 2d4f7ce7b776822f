"""The architecture registry (edgekit.arch): the BERT adapter's description names the model's own modules, runs
its pieces as the model does, and an architecture without an adapter is refused in one line (the DistilBERT and
RoBERTa adapters: tests/arch/test_adapters.py)."""
from __future__ import annotations

import pytest
import torch

from edgekit.arch import (LINEAR_KINDS, drop_layers, encoder, encoder_linears, freeze_embeddings, module_names,
                          num_layers, supported)
from edgekit.errors import InputError


def _tiny(name):
    from edgekit.zoo import load_torch, resolve

    return load_torch(resolve(name))


def _feeds(n=3, seq=12):
    ids = torch.randint(1000, 5000, (n, seq), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(n, seq, dtype=torch.long)
    mask[1, seq // 2:] = 0
    return ids, mask


def test_bert_description_names_the_models_modules():
    cls, _ = _tiny("tiny-bert-cls")
    enc, bert = encoder(cls), cls.model.bert
    assert (enc.arch, enc.hidden, enc.heads, enc.intermediate, len(enc.layers)) == ("bert", 64, 4, 128, 2)
    assert (enc.norm, enc.position_offset, enc.pooling, enc.activation) == ("post", 0, "cls", "gelu")
    assert (enc.head_activation, enc.normalize, enc.type_vocab_size) == ("tanh", False, 2)
    layer = bert.encoder.layer[1]
    assert enc.layers[1].linears == {"q": layer.attention.self.query, "k": layer.attention.self.key,
                                     "v": layer.attention.self.value, "o": layer.attention.output.dense,
                                     "ffn_in": layer.intermediate.dense, "ffn_out": layer.output.dense}
    assert enc.layers[1].attn_ln is layer.attention.output.LayerNorm and enc.layers[1].ffn_ln is layer.output.LayerNorm
    assert enc.word is bert.embeddings.word_embeddings and enc.embed_ln is bert.embeddings.LayerNorm
    assert enc.pooler is bert.pooler.dense and enc.classifier is cls.model.classifier
    fe, _ = _tiny("tiny-bert")
    fe_enc = encoder(fe)
    assert fe_enc.pooling == "mean" and fe_enc.normalize and fe_enc.classifier is None and fe_enc.pooler is None
    assert supported() == ["bert", "distilbert", "roberta", "vit"] and set(enc.layers[0].linears) == set(LINEAR_KINDS)


def test_encoder_linears_in_forward_order_and_without_wrapped_ones():
    from edgekit.formats.fake_quant import insert_fake_quant, remove_fake_quant

    model, _ = _tiny("tiny-bert")
    lin = encoder_linears(model)
    assert list(lin) == [f"layers.{i}.{k}" for i in range(2) for k in LINEAR_KINDS]
    assert all(isinstance(m, torch.nn.Linear) for m in lin.values())
    assert module_names(model)["layers.1.ffn_out"] == "encoder.encoder.layer.1.output.dense"
    insert_fake_quant(model, skip=("layers.0.q",))
    assert list(encoder_linears(model)) == ["layers.0.q"]  # the others are fake-quant modules now
    remove_fake_quant(model)
    assert encoder_linears(model) == lin


def test_pieces_run_as_the_model_does():
    """embed -> run_layer per layer reproduces the model's hidden states (padded keys masked); head on the last
    hidden state gives the classifier's logits."""
    model, _ = _tiny("tiny-bert-cls")
    ids, mask = _feeds()
    enc = encoder(model)
    with torch.no_grad():
        hidden = enc.hidden_states(ids, mask)
        h = enc.embed(ids)
        torch.testing.assert_close(h, hidden[0])
        for i, layer in enumerate(enc.layers):
            h = enc.run_layer(layer.block, h, mask)
            torch.testing.assert_close(h, hidden[i + 1], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(enc.head(h), model(ids, mask), rtol=1e-5, atol=1e-5)


def test_drop_layers_and_freeze_embeddings():
    model, _ = _tiny("tiny-bert-cls")
    last = encoder(model).layers[1].block
    drop_layers(model, [1])
    assert num_layers(model) == 1 and encoder(model).layers[0].block is last
    assert model.model.config.num_hidden_layers == 1
    with pytest.raises(ValueError, match="sorted, unique indices in 0..0"):
        drop_layers(model, [0, 1])
    freeze_embeddings(model)
    assert not any(p.requires_grad for p in encoder(model).embeddings.parameters())
    assert all(p.requires_grad for p in encoder(model).layers[0].block.parameters())


def _albert(path):
    """A tiny random ALBERT folder (an architecture with no adapter), with tiny-bert's tokenizer."""
    from transformers import AlbertConfig, AlbertModel, AutoTokenizer

    from edgekit.zoo import resolve

    AlbertModel(AlbertConfig(vocab_size=30522, embedding_size=16, hidden_size=32, num_hidden_layers=1,
                             num_attention_heads=2, intermediate_size=64)).save_pretrained(path)
    AutoTokenizer.from_pretrained(resolve("tiny-bert").path).save_pretrained(path)
    return path


def test_an_architecture_without_adapter_is_refused_in_one_line(tmp_path, capsys):
    from edgekit.cli import main
    from edgekit.zoo import load_torch, resolve

    path = _albert(tmp_path / "albert")
    model, _ = load_torch(resolve(str(path)))
    supported = "bert, distilbert, roberta, vit"
    with pytest.raises(InputError, match=f"^unsupported architecture 'albert'; supported: {supported}$"):
        encoder(model)
    assert main(["compress", str(path), "-o", str(tmp_path / "out"), "--recipe", "quick"]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"edgekit: error: unsupported architecture 'albert'; supported: {supported}"
    assert not (tmp_path / "out").exists()
