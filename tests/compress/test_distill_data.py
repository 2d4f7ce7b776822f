"""Distillation text beyond the training split (recipe ``distill_data`` / ``--distill-data``): settings, the
passages read, the training rows they become, calibration and the whole pipeline on a tiny model."""
from __future__ import annotations

import json

import pytest
import torch

from edgekit.compress.config import DistillDataConfig, load_recipe, recipe_from_dict
from edgekit.compress.extra_text import calibration_mix, distill_settings, load_distill_texts
from edgekit.data import DataSpec, load_dataset
from edgekit.errors import InputError

PROSE = ("The river rose through the night and by morning the lower fields were under water, so the farmers "
         "moved their animals to the hill and waited for the rain to stop. ")


@pytest.mark.parametrize("section, match", [
    ({"use": "both"}, "distill_data.use: Input should be 'add' or 'replace'"),
    ({"min_words": 50, "max_words": 20}, "max_words \\(20\\) must be >= min_words \\(50\\)"),
    ({"passages": 0}, "distill_data.passages: Input should be greater than or equal to 1"),
    ({"source": []}, "source must name a text source"),
    ({"bogus": 1}, "distill_data.bogus: unknown field"),
])
def test_distill_data_section_is_validated(section, match):
    with pytest.raises(InputError, match=match):
        recipe_from_dict({"distill_data": section, "stages": []})


def test_option_replaces_the_recipe_source_and_keeps_its_settings():
    rec = recipe_from_dict({"distill_data": {"source": "english-mix", "passages": 10, "min_words": 30},
                            "stages": []})
    cfg = distill_settings(rec, "notes.txt")
    assert (cfg.source, cfg.passages, cfg.min_words) == ("notes.txt", 10, 30)
    assert distill_settings(rec, None) is rec.distill_data
    bare = recipe_from_dict({"stages": []})
    assert distill_settings(bare, None) is None
    assert distill_settings(bare, "x.txt") == DistillDataConfig(source="x.txt")


def test_builtin_feature_extraction_recipe_distils_on_english_mix():
    dd = load_recipe("feature-extraction").distill_data
    assert dd.source == "english-mix" and dd.passages >= 1000 and dd.min_words >= 32 and dd.use == "add"


def test_passages_never_hold_validation_or_test_text(tmp_path, capsys):
    test_text = load_dataset("bbc-news", "test").texts[0]
    val_text = load_dataset("bbc-news", "validation").texts[0]
    train_text = load_dataset("bbc-news", "train").texts[0]
    notes = tmp_path / "notes.txt"
    notes.write_text("\n\n".join([test_text, val_text, train_text, PROSE * 3]), encoding="utf-8")
    cfg = DistillDataConfig(source=str(notes), max_words=5000)
    texts = load_distill_texts(cfg, DataSpec("bbc-news"), seed=0)
    flat = {" ".join(t.split()) for t in texts}
    assert " ".join(test_text.split()) not in flat and " ".join(val_text.split()) not in flat
    assert " ".join(train_text.split()) in flat and len(texts) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("edgekit: distillation text: 2 passages") and "with the bbc-news training split" in line
    # min_words drops the short piece; passages draws a seeded subset
    assert len(load_distill_texts(cfg.model_copy(update={"passages": 1}), DataSpec("bbc-news"), seed=0)) == 1
    with pytest.raises(InputError, match="no text in|no passage of at least"):
        load_distill_texts(cfg.model_copy(update={"min_words": 4000, "max_words": 5000}), DataSpec("bbc-news"))


def test_calibration_mix_takes_half_from_the_passages():
    train = [f"t{i}" for i in range(10)]
    extra = [f"e{i}" for i in range(50)]
    mixed = calibration_mix(train, extra, 8, seed=0)
    assert mixed[:4] == train[:4] and len(mixed) == 8 and all(x.startswith("e") for x in mixed[4:])
    assert calibration_mix(train, extra, 8, seed=0) == mixed  # seeded
    assert calibration_mix(train, None, 8, seed=0) == train[:8]


def _run(extra, use):
    from edgekit.compress import training
    from edgekit.compress.stages.distill import make_student, objective
    from edgekit.zoo import load_torch, resolve

    teacher, tok = load_torch(resolve("tiny-bert-cls"))
    rec = recipe_from_dict({"batch": 4, "max_length": 32, "stages": [{"type": "distill"}]})
    goal = objective(rec)
    return training.Run(rec, goal, teacher, make_student(teacher, goal), tok, "text-classification",
                        DataSpec("bbc-news"), 1, None, False, extra=extra, extra_use=use, extra_calibration=True)


def test_run_adds_unlabelled_rows_and_the_label_loss_skips_them():
    extra = [PROSE + str(i) for i in range(6)]
    run = _run(extra, "add")
    n_train = len(load_dataset("bbc-news", "train"))
    assert len(run.ids) == n_train + 6 == len(run.mask) == len(run.labels)
    assert run.labelled_rows == n_train and (run.labels[n_train:] == -100).all()
    assert run.calibration_texts(4)[2:] != load_dataset("bbc-news", "train").texts[:2]
    with torch.no_grad():  # a student that differs from its teacher, so the teacher's targets cost something
        for p in run.student.parameters():
            p.add_(0.05 * torch.randn_like(p))
    ids, mask = run.ids[n_train:n_train + 4], run.mask[n_train:n_train + 4]
    loss, parts = run.distiller.loss(ids, mask, run.labels[n_train:n_train + 4])
    assert torch.isfinite(loss) and "labels" not in parts and parts["logits"] > 0
    only = _run(extra, "replace")
    assert len(only.ids) == 6 and only.labelled_rows == 0


def test_compress_trains_on_recipe_distill_data(tmp_path):
    from edgekit.cli import main

    notes = tmp_path / "notes.txt"
    notes.write_text("\n\n".join(PROSE + f"Day {i}." for i in range(12)), encoding="utf-8")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"batch: 4\nmax_length: 32\ndistill_data: {{source: {json.dumps(str(notes))}, min_words: 8, "
                      f"use: replace}}\nstages:\n  - type: distill\n  - type: prune\n    steps: 2\n"
                      f"  - type: quantize\n    calibration_samples: 4\n    qat_steps: 1\n")
    out = tmp_path / "out"
    assert main(["compress", "tiny-bert", "--recipe", str(recipe), "-o", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["distill_data"]["texts"] == 12 and report["distill_data"]["use"] == "replace"
