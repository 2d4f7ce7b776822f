"""Token classification end to end on a small IOB set derived from BBC sentences (tests/derived_data.py says how):
data, word-piece alignment, per-token distillation, export with per-token logits, `edgekit eval` on every runtime,
the compress report, and bad input."""
from __future__ import annotations

import json

import numpy as np
import pytest

from derived_data import name_tags, tiny_model, write_tokens_jsonl
from edgekit.cli import main


@pytest.fixture(scope="module")
def ner(tmp_path_factory):
    return write_tokens_jsonl(tmp_path_factory.mktemp("data") / "names.jsonl", 240, "names")


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return write_tokens_jsonl(tmp_path_factory.mktemp("data") / "shapes.jsonl", 160, "shapes")


@pytest.fixture(scope="module")
def tagger(tmp_path_factory, ner):
    from edgekit.data import load_token_dataset

    n = len(load_token_dataset(str(ner), "train").label_names)
    return tiny_model(tmp_path_factory.mktemp("model") / "tiny-ner", n)


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, tagger, ner):
    out = tmp_path_factory.mktemp("c") / "ner"
    assert main(["compress", str(tagger), "--recipe", "quick", "--max-steps", "2", "--data", str(ner),
                 "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tagger):
    from edgekit.export import export

    return export(str(tagger), tmp_path_factory.mktemp("e") / "ner", formats="onnx,openvino", progress=False)


def _eval(model, runtime, data, capsys) -> dict:
    capsys.readouterr()
    assert main(["eval", str(model), "--runtime", runtime, "--data", str(data), "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_derived_tags_are_iob2():
    words = ["Shares", "in", "Yukos", "Oil", "fell", "£2bn", "on", "Monday", "."]
    assert name_tags(words) == ["O", "O", "B-NAME", "I-NAME", "O", "B-NUM", "O", "B-NAME", "O"]


def test_token_scores_entity_f1_and_accuracy():
    from edgekit.tasks import token_scores

    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-ORG"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["O", "B-LOC"]]  # 1 of 3 gold entities found, 1 of 2 predicted right
    s = token_scores(pred, gold, iob=True)
    assert s["token_accuracy"] == pytest.approx(4 / 6)
    assert s["entity_precision"] == pytest.approx(1 / 2) and s["entity_recall"] == pytest.approx(1 / 3)
    assert s["entity_f1"] == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))
    assert s["entities"] == 3 and s["words"] == 6
    assert "entity_f1" not in token_scores(pred, gold, iob=False)


def test_per_token_distillation_ignores_padding_and_untagged_positions():
    import torch

    from edgekit.compress.distill import token_logit_losses
    from edgekit.compress.stages.distill import DistillConfig

    cfg = DistillConfig(logits_weight=1.0, label_weight=1.0, temperature=2.0)
    g = torch.Generator().manual_seed(0)
    t = torch.randn(2, 5, 3, generator=g)
    s = torch.randn(2, 5, 3, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    labels = torch.tensor([[-100, 0, 2, -100, -100], [-100, 1, -100, -100, -100]])
    base = token_logit_losses(s, t, mask, labels, cfg)
    assert float(token_logit_losses(t, t, mask, None, cfg)["logits"]) == pytest.approx(0.0, abs=1e-6)
    s2 = s.clone()
    s2[1, 3:] = 100.0  # padding: read by nobody
    moved = token_logit_losses(s2, t, mask, labels, cfg)
    assert float(moved["logits"]) == pytest.approx(float(base["logits"]))
    assert float(moved["labels"]) == pytest.approx(float(base["labels"]))
    s3 = s.clone()
    s3[0, 0] = 100.0  # [CLS]: a real token (distilled) without a tag (no cross-entropy)
    other = token_logit_losses(s3, t, mask, labels, cfg)
    assert float(other["labels"]) == pytest.approx(float(base["labels"]))
    assert float(other["logits"]) != pytest.approx(float(base["logits"]))


def test_export_writes_per_token_logits(exported, ner):
    from edgekit.data import load_token_dataset, tokenize_words
    from edgekit.runtimes import load, load_tokenizer

    m = exported.manifest
    names = load_token_dataset(str(ner), "train").label_names
    assert m.task == "token-classification"
    assert m.outputs[0].name == "logits" and m.outputs[0].shape == ["batch", "sequence", len(names)]
    tok = load_tokenizer(exported)
    feeds, labels = tokenize_words(tok, load_token_dataset(str(ner), "test").tokens[:6], max_length=48)
    keep = labels >= 0  # the positions anyone reads; padding and later sub-tokens are not compared
    ref = load(exported, "torch", threads=1).run(feeds)
    assert ref.shape == feeds["input_ids"].shape + (len(names),)
    for rt in ("onnxruntime", "openvino"):
        out = load(exported, rt, threads=1).run(feeds)
        assert out.shape == ref.shape
        np.testing.assert_allclose(out[keep], ref[keep], atol=1e-4)
    # padding does not change the words' logits: each row alone, unpadded, gives the same values
    for r in range(len(labels)):
        n = int(feeds["attention_mask"][r].sum())
        alone = load(exported, "onnxruntime", threads=1).run({k: v[r : r + 1, :n] for k, v in feeds.items()})
        np.testing.assert_allclose(alone[0][keep[r, :n]], ref[r][keep[r]], atol=1e-4)


def test_compress_report_and_artifact(compressed, ner):
    from edgekit.data import load_token_dataset

    report = json.loads((compressed / "report.json").read_text())
    names = list(load_token_dataset(str(ner), "train").label_names)
    assert report["task"] == "token-classification" and report["precision"] == "int8"
    for part in ("baseline", "compressed"):
        assert 0.0 <= report[part]["accuracy"] <= 1.0 and 0.0 <= report[part]["entity_f1"] <= 1.0
    assert 0.0 <= report["compressed"]["agreement_with_teacher"] <= 1.0
    assert report["sparsity"]["total"] > 0.5
    assert set(report["runtimes"]) == {"torch", "onnxruntime", "openvino", "native"}  # native: head token
    manifest = json.loads((compressed / "manifest.json").read_text())
    assert manifest["labels"] == names
    cfg = json.loads((compressed / "torch" / "config.json").read_text())
    assert cfg["id2label"] == {str(i): n for i, n in enumerate(names)}
    assert "Entity-level F1" in (compressed / "report.md").read_text()


@pytest.mark.parametrize("runtime", ["onnxruntime", "openvino"])
def test_eval_runtimes_agree_with_torch(compressed, ner, runtime, capsys):
    ref = _eval(compressed, "torch", ner, capsys)
    res = _eval(compressed, runtime, ner, capsys)
    assert ref["task"] == res["task"] == "token-classification"
    assert res["metric"] == "entity_f1" and res["n"] == ref["n"] and res["words"] == ref["words"] > 500
    assert abs(res["token_accuracy"] - ref["token_accuracy"]) <= 0.02
    assert abs(res["entity_f1"] - ref["entity_f1"]) <= 0.02
    report = json.loads((compressed / "report.json").read_text())
    assert report["runtimes"][runtime]["accuracy"] == pytest.approx(res["token_accuracy"], abs=0.02)


def test_eval_native_agrees_with_torch(compressed, ner, capsys):
    assert json.loads((compressed / "native" / "config.json").read_text())["head"] == "token"
    ref = _eval(compressed, "torch", ner, capsys)
    res = _eval(compressed, "native", ner, capsys)
    assert res["metric"] == "entity_f1" and res["n"] == ref["n"] and res["words"] == ref["words"] > 500
    assert abs(res["token_accuracy"] - ref["token_accuracy"]) <= 0.02
    assert abs(res["entity_f1"] - ref["entity_f1"]) <= 0.02


def test_native_per_token_logits_agree_with_torch(compressed, ner):
    """The int8 artifact's per-token logits on the native engine against torch (fake-quant) on the positions scored:
    the parity targets of tests/arch (cosine >= 0.999, the same tag on >= 99% of words); zeros at padding."""
    from edgekit.data import load_token_dataset, tokenize_words
    from edgekit.runtimes import load, load_tokenizer

    feeds, labels = tokenize_words(load_tokenizer(compressed), load_token_dataset(str(ner), "test").tokens[:24],
                                   max_length=48)
    keep = labels >= 0
    ref = load(compressed, "torch", threads=1).run(feeds)
    out = load(compressed, "native", threads=1).run(feeds)
    assert out.shape == ref.shape == feeds["input_ids"].shape + (ref.shape[-1],)
    assert (out[feeds["attention_mask"] == 0] == 0).all()
    a, b = out[keep], ref[keep]
    cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    assert cos.mean() >= 0.999, (cos.min(), cos.mean())
    assert np.mean(a.argmax(1) == b.argmax(1)) >= 0.99


def test_tags_without_iob_prefixes_score_token_accuracy(tmp_path, shapes, capsys):
    from edgekit.export import export

    model = tiny_model(tmp_path / "tiny-shapes", 4, seed=1)
    art = export(str(model), tmp_path / "art", formats="onnx", progress=False)
    assert art.manifest.labels == ["LABEL_0", "LABEL_1", "LABEL_2", "LABEL_3"]
    ref = _eval(art.root, "torch", shapes, capsys)
    res = _eval(art.root, "onnxruntime", shapes, capsys)
    assert ref["metric"] == res["metric"] == "token_accuracy" and "entity_f1" not in res
    assert res["value"] == pytest.approx(ref["value"], abs=0.02)


@pytest.mark.parametrize("rows, want", [
    ([{"tokens": ["a", "b"], "tags": ["O", "B-X"]}, {"tokens": ["c", "d"], "tags": ["O"]}],
     ["row 2 has 2 tokens but 1 tags", "every token needs one tag"]),
    ([{"tokens": ["a", "b"], "tags": ["O", "B-X"]}, {"tokens": [], "tags": []}],
     ["row 2", "must be a non-empty list"]),
    ([{"words": ["a", "b"], "tags": ["O", "B-X"]}], ["no column 'tokens'", "its columns: words, tags"]),
])
def test_bad_token_data_exits_2_with_one_line_and_writes_nothing(tmp_path, tagger, capsys, rows, want):
    path = tmp_path / "bad.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows * 10), encoding="utf-8")
    out = tmp_path / "out"
    for argv in (["compress", str(tagger), "--recipe", "quick", "--data", str(path), "-o", str(out)],
                 ["eval", str(tagger), "--data", str(path)]):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and str(path) in err[0], err
        for w in want:
            assert w in err[0]
        assert not out.exists() and not (tmp_path / "out.ckpt").exists()
