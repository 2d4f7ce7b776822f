"""A user's own data and model end to end through the CLI (in-process): a CSV with string labels and a text
column not called ``text``, a tiny random classifier folder with as many labels as the data has classes."""
from __future__ import annotations

import csv
import json

import pytest

from edgekit.cli import main

TOPICS = {
    "billing": "invoice charge refund payment card",
    "login": "password account sign locked reset",
    "shipping": "parcel delivery courier tracking late",
}


def _rows(n_per_class: int = 20) -> list[dict]:
    rows = []
    for k in range(n_per_class):
        for topic, words in TOPICS.items():
            w = words.split()
            rows.append({"id": f"{topic}-{k}", "topic": topic,
                         "body": f"ticket {k}: my {w[k % 5]} and {w[(k + 2) % 5]} problem number {k} about {topic}"})
    return rows


def _write_csv(path, rows) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


@pytest.fixture(scope="module")
def tickets(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tickets.csv"
    _write_csv(path, _rows())
    return path


@pytest.fixture(scope="module")
def classifier(tmp_path_factory):
    """A 3-class tiny random BERT classifier folder (what a user brings: a fine-tuned HF folder)."""
    from edgekit.zoo import _tiny_bert

    dest = tmp_path_factory.mktemp("model") / "tiny-3"
    _tiny_bert(len(TOPICS))(dest)
    return dest


@pytest.fixture(scope="module")
def compressed(tmp_path_factory, tickets, classifier):
    out = tmp_path_factory.mktemp("c") / "out"
    notes = tmp_path_factory.mktemp("notes") / "notes.txt"
    notes.write_text("my parcel never arrived and the courier is late\n\nplease reset my locked account\n",
                     encoding="utf-8")
    code = main(["compress", str(classifier), "--recipe", "quick", "--max-steps", "2", "--data", str(tickets),
                 "--text-column", "body", "--label-column", "topic", "--distill-data", str(notes), "-o", str(out)])
    assert code == 0
    return out


def test_compress_on_a_csv_records_the_data_and_label_names(compressed, tickets):
    report = json.loads((compressed / "report.json").read_text())
    assert report["data"] == str(tickets)
    assert report["task"] == "text-classification"
    assert report["distill_data"]["texts"] == 2
    manifest = json.loads((compressed / "manifest.json").read_text())
    assert manifest["labels"] == sorted(TOPICS)
    cfg = json.loads((compressed / "torch" / "config.json").read_text())
    assert cfg["id2label"] == {str(i): n for i, n in enumerate(sorted(TOPICS))}


def test_eval_on_the_csv_uses_its_test_split(compressed, tickets, capsys):
    from edgekit.data import DataSpec, load_dataset

    capsys.readouterr()
    code = main(["eval", str(compressed), "--runtime", "onnxruntime", "--data", str(tickets),
                 "--text-column", "body", "--label-column", "topic", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    n_test = len(load_dataset(DataSpec(str(tickets), text_column="body", label_column="topic"), "test"))
    assert res["n"] == n_test == 12  # 20% of 60 rows
    assert res["data"] == str(tickets) and res["metric"] == "accuracy" and 0.0 <= res["value"] <= 1.0


def _fails_cleanly(argv, out, capsys, *words) -> str:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("edgekit: error:")
    for w in words:
        assert w in err
    assert not out.exists()
    return err


def test_bad_data_exits_2_with_one_line_before_any_output(tmp_path, tickets, classifier, capsys):
    out = tmp_path / "out"
    base = ["compress", str(classifier), "--recipe", "quick", "--max-steps", "2", "-o", str(out)]
    _fails_cleanly(base + ["--data", str(tickets), "--text-column", "body", "--label-column", "queue"],
                   out, capsys, "queue")
    _fails_cleanly(base + ["--data", str(tickets), "--label-column", "topic"], out, capsys, "text")
    one = tmp_path / "one.csv"
    _write_csv(one, [r for r in _rows() if r["topic"] == "login"])
    _fails_cleanly(base + ["--data", str(one), "--text-column", "body", "--label-column", "topic"], out, capsys)
    _fails_cleanly(base + ["--data", str(tmp_path / "missing.csv")], out, capsys, "missing.csv")
    # the model's head must fit the data: tiny-bert-cls has 5 classes, the tickets 3
    _fails_cleanly(["compress", "tiny-bert-cls", "--recipe", "quick", "-o", str(out), "--data", str(tickets),
                    "--text-column", "body", "--label-column", "topic"], out, capsys, "5 classes", "3")
    _fails_cleanly(base + ["--data", str(tickets), "--text-column", "body", "--text-pair-column", "answer",
                           "--label-column", "topic"], out, capsys, "--text-pair-column", "'answer'")
    _fails_cleanly(base + ["--data", str(tickets), "--text-column", "body", "--label-column", "topic",
                           "--distill-data", str(tmp_path / "nothing.txt")], out, capsys, "nothing.txt")
    # eval refuses the same data before loading anything
    capsys.readouterr()
    assert main(["eval", "tiny-bert-cls", "--data", str(one), "--text-column", "body", "--label-column", "topic"]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_eval_feature_extraction_on_jsonl(tmp_path, capsys):
    path = tmp_path / "tickets.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _rows()), encoding="utf-8")
    capsys.readouterr()
    code = main(["eval", "tiny-bert", "--runtime", "onnxruntime", "--data", str(path), "--text-column", "body",
                 "--label-column", "topic", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["task"] == "feature-extraction" and res["metric"] == "linear_probe_accuracy"
    assert res["n"] == 12 and res["data"] == str(path) and 0.0 <= res["value"] <= 1.0


def test_eval_text_pairs(tmp_path, capsys, monkeypatch):
    """Sentence pairs reach the model as pairs: a 5-class head on 5-class pair data."""
    import edgekit.evaluate as E

    seen = []
    real = E.tokenize
    monkeypatch.setattr(E, "tokenize", lambda tok, texts, **k: seen.append(k.get("pairs")) or real(tok, texts, **k))
    path = tmp_path / "pairs.jsonl"
    rows = [{"q": f"question {i} about item {i % 7}", "a": f"answer {i} says {i % 3}", "y": i % 5} for i in range(50)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    capsys.readouterr()
    code = main(["eval", "tiny-bert-cls", "--data", str(path), "--text-column", "q", "--text-pair-column", "a",
                 "--label-column", "y", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 10 and res["metric"] == "accuracy"
    assert seen and all(p is not None and p[0].startswith("answer ") for p in seen)
