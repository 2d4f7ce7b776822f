"""Trust checks through the CLI in-process (``main(argv)``): compress checks before it trains, errors name the
file with the documented exit code, and arguments are checked against the manifest before any runtime loads."""
from __future__ import annotations

import json
import shutil
import threading
import time
from pathlib import Path

import pytest

from edgekit.cli import main


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert err.startswith("edgekit: error: "), err
    return err


@pytest.fixture()
def no_training(monkeypatch):
    """Fail the test if the compression pipeline (or any runtime) is reached: the check must come first."""
    import edgekit.compress
    import edgekit.runtimes

    def boom(*a, **k):
        raise AssertionError("the pipeline ran although the input should have been refused first")

    monkeypatch.setattr(edgekit.compress, "compress", boom)
    monkeypatch.setattr(edgekit.runtimes, "load", boom)


@pytest.fixture()
def record_compress(monkeypatch):
    """Replace the pipeline by a recorder (for checks that pass)."""
    import edgekit.compress

    calls = []
    monkeypatch.setattr(edgekit.compress, "compress", lambda *a, **k: calls.append((a, k)) or None)
    return calls


# ----------------------------------------------------------------------------------------- compress -o
def test_compress_into_existing_artifact_is_refused_before_work(capsys, standin_artifact, no_training):
    before = (standin_artifact / "manifest.json").read_text()
    assert main(["compress", "tiny-bert", "-o", str(standin_artifact), "--recipe", "quick"]) == 2
    assert "already holds an edgekit artifact; pass --overwrite to replace it" in _one_line_error(capsys)
    assert (standin_artifact / "manifest.json").read_text() == before


def test_compress_overwrite_replaces_an_artifact(capsys, standin_artifact, record_compress):
    assert main(["compress", "tiny-bert", "-o", str(standin_artifact), "--recipe", "quick", "--overwrite"]) == 0
    assert len(record_compress) == 1
    assert "edgekit: compressing tiny-bert (feature-extraction) with recipe quick" in capsys.readouterr().err


def test_compress_into_foreign_folder_is_refused_before_work(capsys, tmp_path, no_training):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    for extra in ([], ["--overwrite"]):  # never: a mistyped -o must not delete someone's files
        assert main(["compress", "tiny-bert", "-o", str(out), *extra]) == 2
        assert "is not empty and is not an edgekit artifact; choose another -o" in _one_line_error(capsys)
    assert (out / "thesis.tex").read_text() == "precious"
    assert not (tmp_path / "mine.ckpt").exists()


def test_compress_output_that_is_a_file_is_refused(capsys, tmp_path, no_training):
    (tmp_path / "f").write_text("x")
    assert main(["compress", "tiny-bert", "-o", str(tmp_path / "f")]) == 2
    assert f"Directory '{tmp_path / 'f'}' is a file" in _one_line_error(capsys)


def _checkpoint(out: Path, stage: str = "prune", step: int = 50) -> Path:
    ckpt = out.with_name(out.name + ".ckpt")
    ckpt.mkdir(parents=True)
    (ckpt / "state.json").write_text(json.dumps({"stage": stage, "step": step}))
    return ckpt


def test_existing_checkpoint_is_not_deleted_silently(capsys, tmp_path, no_training):
    out = tmp_path / "out"
    ckpt = _checkpoint(out)
    assert main(["compress", "tiny-bert", "-o", str(out), "--recipe", "quick"]) == 2
    err = _one_line_error(capsys)
    assert f"{ckpt} holds the checkpoint of an interrupted run (stage prune, step 50)" in err
    assert "rerun with --resume to continue it, or with --overwrite to start over" in err
    assert (ckpt / "state.json").is_file()


def test_overwrite_discards_the_checkpoint_and_says_so(capsys, tmp_path, record_compress):
    out = tmp_path / "out"
    ckpt = _checkpoint(out)
    assert main(["compress", "tiny-bert", "-o", str(out), "--recipe", "quick", "--overwrite"]) == 0
    assert f"--overwrite: discarding the checkpoint in {ckpt}" in capsys.readouterr().err
    assert record_compress[0][1]["resume"] is False


def test_resume_passes_the_checks_and_says_from_where(capsys, tmp_path, record_compress):
    out = tmp_path / "out"
    _checkpoint(out, "qat", 20)
    assert main(["compress", "tiny-bert", "-o", str(out), "--recipe", "quick", "--resume"]) == 0
    assert "resuming from" in capsys.readouterr().err and record_compress[0][1]["resume"] is True


def test_resume_without_checkpoint_is_refused_before_work(capsys, tmp_path, no_training):
    assert main(["compress", "tiny-bert", "-o", str(tmp_path / "out"), "--resume"]) == 2
    assert "--resume: no checkpoint in" in _one_line_error(capsys)


def test_compress_bad_recipe_is_refused_before_the_model_loads(capsys, tmp_path, no_training):
    assert main(["compress", "tiny-bert", "-o", str(tmp_path / "out"), "--recipe", "quik"]) == 2
    assert "unknown recipe 'quik' (did you mean 'quick'?); built-in: fast-distilbert, feature-extraction," \
        in _one_line_error(capsys)


# ----------------------------------------------------------------------------------------- Ctrl-C
class _InterruptAfter:
    """Raise KeyboardInterrupt from the n-th optimiser step (as Ctrl-C in the middle of training would)."""

    def __init__(self, monkeypatch, n: int):
        import torch

        self.n, self.calls, real = n, 0, torch.optim.AdamW.step

        def step(opt, *a, **k):
            self.calls += 1
            if self.calls >= self.n:
                raise KeyboardInterrupt
            return real(opt, *a, **k)

        monkeypatch.setattr(torch.optim.AdamW, "step", step)


def test_ctrl_c_before_the_first_checkpoint_says_nothing_was_kept(capsys, tmp_path, monkeypatch):
    from edgekit import zoo

    def load_torch(*a, **k):  # Ctrl-C while the model loads
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo, "load_torch", load_torch)
    out = tmp_path / "out"
    assert main(["compress", "tiny-bert-cls", "-o", str(out), "--recipe", "quick"]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1] == ("edgekit: interrupted before the first checkpoint; nothing was kept (a run "
                                            "interrupted after its first checkpoint continues with --resume)")
    assert "edgekit: loading tiny-bert-cls and tokenizing the bbc-news training texts" in err
    assert not out.exists()


@pytest.fixture()
def interrupted_run(capsys, tmp_path, monkeypatch):
    """tiny-bert-cls with the quick recipe (a checkpoint every 5 steps), interrupted at its 7th step."""
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _InterruptAfter(m, 7)
        code = main(["compress", "tiny-bert-cls", "-o", str(out), "--recipe", "quick"])
    return out, code, capsys.readouterr().err


def test_ctrl_c_names_resume_and_keeps_the_checkpoint(interrupted_run, capsys):
    out, code, err = interrupted_run
    ckpt = out.with_name("out.ckpt")
    assert code == 130
    assert err.strip().splitlines()[-1] == (f"edgekit: interrupted; the progress so far is in {ckpt}: rerun the "
                                            "same command with --resume to continue")
    assert (ckpt / "state.json").is_file() and not out.exists()
    # what it did during the quiet start, before the first progress bar
    lines = err.splitlines()
    for said in ("edgekit: compressing tiny-bert-cls (text-classification) with recipe quick",
                 "edgekit: loading tiny-bert-cls and tokenizing the bbc-news training texts",
                 "edgekit: scoring the original model on the bbc-news test split; training starts after that"):
        assert any(line.startswith(said) for line in lines), said
    # the same command again, without --resume: refused, checkpoint kept
    assert main(["compress", "tiny-bert-cls", "-o", str(out), "--recipe", "quick"]) == 2
    assert "holds the checkpoint of an interrupted run (stage prune, step 5); rerun with --resume to continue it" \
        in _one_line_error(capsys)
    assert (ckpt / "state.json").is_file()


@pytest.mark.slow
def test_resume_after_ctrl_c_finishes_the_artifact(interrupted_run, capsys):
    out, code, _ = interrupted_run
    assert code == 130
    assert main(["compress", "tiny-bert-cls", "-o", str(out), "--recipe", "quick", "--resume"]) == 0
    assert (out / "report.json").is_file() and not out.with_name("out.ckpt").exists()


# ----------------------------------------------------------------------------------------- zoo lock
def test_waiting_on_the_model_cache_lock_is_said(capsys, tmp_path, monkeypatch):
    import fcntl

    from edgekit import zoo

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    (tmp_path / "models").mkdir()
    built = []

    def build(dest: Path) -> None:
        (dest / "config.json").write_text("{}")
        built.append(dest)

    with open(tmp_path / "models" / ".demo-model.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # "another process" (another open file description) holds it
        t = threading.Thread(target=zoo._build_cached, args=("demo-model", build, "a test build, instant"))
        t.start()
        time.sleep(1.0)
        assert t.is_alive() and not built  # waiting, not building
        fcntl.flock(held, fcntl.LOCK_UN)
    t.join(30)
    err = capsys.readouterr().err
    lock = tmp_path / "models" / ".demo-model.lock"
    assert f"edgekit: waiting for another process building demo-model (it holds {lock})" in err
    assert "edgekit: building demo-model on first use: a test build, instant" in err
    assert (tmp_path / "models" / "demo-model" / "config.json").is_file()


# ----------------------------------------------------------------------------------------- errors naming the file
def test_non_utf8_recipe_is_exit_2_and_names_the_file(capsys, tmp_path, no_training):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert main(["compress", "tiny-bert", "-o", str(tmp_path / "out"), "--recipe", str(bad)]) == 2
    assert f"recipe {bad} is not UTF-8 text (byte 0xe9 at offset 9)" in _one_line_error(capsys)


def test_non_utf8_recipe_with_print_recipe_is_exit_2(capsys, tmp_path):
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert main(["compress", "tiny-bert", "--print-recipe", "--recipe", str(bad)]) == 2
    assert f"recipe {bad} is not UTF-8 text" in _one_line_error(capsys)


@pytest.fixture()
def hf_copy(tmp_path):
    """A copy of the tiny-bert Hugging Face folder from the zoo cache."""
    from edgekit.zoo import resolve

    dest = tmp_path / "hf"
    shutil.copytree(resolve("tiny-bert").path, dest)
    return dest


@pytest.mark.parametrize("damage, why", [
    (lambda b: b"", "it is empty"),
    (lambda b: b[:5], "it has only 5 bytes"),
    (lambda b: b[: len(b) // 2], "lies outside the file (truncated?)"),
    (lambda b: b"\xff" * 8 + b[8:], "its header claims"),
    (lambda b: b[:8] + b"!" * (len(b) - 8), "its header is not JSON"),
])
@pytest.mark.parametrize("command", ["export", "compress"])
def test_damaged_safetensors_is_exit_2_and_names_the_file(capsys, hf_copy, tmp_path, no_training, damage, why,
                                                          command):
    weights = hf_copy / "model.safetensors"
    weights.write_bytes(damage(weights.read_bytes()))
    assert main([command, str(hf_copy), "-o", str(tmp_path / "out")]) == 2
    err = _one_line_error(capsys)
    assert f"{weights} is not a valid safetensors file: " in err and why in err


def test_empty_file_as_model_says_it_is_not_a_folder(capsys, tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"")
    for argv in (["eval", str(f)], ["bench", str(f)], ["export", str(f), "-o", str(tmp_path / "o")],
                 ["compress", str(f), "-o", str(tmp_path / "o")]):
        assert main(argv) == 2, argv
        err = _one_line_error(capsys)
        assert f"model '{f}' is a file, not a folder" in err and "no such" not in err


def test_newer_artifact_says_so_and_names_the_writer(capsys, standin_artifact):
    m = json.loads((standin_artifact / "manifest.json").read_text())
    m.update(format_version=999, edgekit_version="7.2.0")
    (standin_artifact / "manifest.json").write_text(json.dumps(m))
    assert main(["eval", str(standin_artifact)]) == 2
    err = _one_line_error(capsys)
    assert "is newer than this edgekit: format version 999, written by edgekit 7.2.0" in err
    assert "upgrade edgekit" in err and "re-export" not in err


def test_native_on_an_exported_artifact_suggests_compress(capsys, standin_artifact, no_training):
    assert main(["eval", str(standin_artifact), "--runtime", "native"]) == 2
    err = _one_line_error(capsys)
    assert "has no 'native' format; it has: onnx, torch" in err
    assert "written by `edgekit compress MODEL -o DIR`" in err and "--format native" not in err


def test_openvino_on_an_artifact_without_it_suggests_export(capsys, standin_artifact, no_training):
    assert main(["bench", str(standin_artifact), "-r", "onnxruntime,openvino"]) == 2
    assert "re-export with `edgekit export MODEL -o DIR --format openvino`" in _one_line_error(capsys)


def test_bench_seq_is_checked_against_the_manifest_before_any_runtime_loads(capsys, standin_artifact, no_training):
    t = time.perf_counter()
    assert main(["bench", str(standin_artifact), "-r", "onnxruntime", "--seq", "128,10000"]) == 2
    err = _one_line_error(capsys)
    assert "--seq 10000 is longer than the model's maximum sequence length 512" in err and "allowed: 2..512" in err
    assert time.perf_counter() - t < 30  # generous on a loaded machine; the old path took 19 s of runtime loading


def test_typo_in_a_choice_gets_a_suggestion(capsys, standin_artifact):
    assert main(["eval", str(standin_artifact), "-r", "onxruntime"]) == 2
    assert "unknown runtime 'onxruntime' (did you mean 'onnxruntime'?); allowed: torch, onnxruntime, openvino, native" \
        in _one_line_error(capsys)
    assert main(["bench", str(standin_artifact), "-r", "onnxruntime,openvno"]) == 2
    assert "unknown runtime 'openvno' (did you mean 'openvino'?); allowed: torch, onnxruntime, openvino, native" \
        in _one_line_error(capsys)
    assert main(["bench", str(standin_artifact), "--native-precision", "int4"]) == 2
    assert "unknown native precision 'int4' (did you mean 'int8'?); allowed: fp32, bf16, int8" \
        in _one_line_error(capsys)
    assert main(["export", "tiny-bert", "-o", "x", "--format", "onnx,openvion"]) == 2
    assert "unknown format 'openvion' (did you mean 'openvino'?)" in _one_line_error(capsys)


def test_short_flags_reach_the_api(monkeypatch, capsys):
    from edgekit import api

    seen = {}
    monkeypatch.setattr(api, "bench", lambda model, **k: seen.update(k, model=model) or ([], "table"))
    assert main(["bench", "m", "-r", "onnxruntime,openvino", "-b", "1,8", "-s", "16", "-t", "2"]) == 0
    assert (seen["runtimes"], seen["batches"], seen["seqs"], seen["threads"]) == (["onnxruntime", "openvino"],
                                                                                 [1, 8], [16], 2)
    monkeypatch.setattr(api, "evaluate", lambda model, **k: seen.update(k) or
                        {"metric": "accuracy", "value": 1.0, "data": "d", "n": 1, "runtime": k["runtime"]})
    assert main(["eval", "m", "-r", "native", "-t", "1", "--native-precision", "int8"]) == 0
    assert (seen["runtime"], seen["threads"], seen["native_precision"]) == ("native", 1, "int8")


@pytest.mark.parametrize("argv, match", [
    (["eval", "m", "-r", "onnxruntime", "--native-precision", "int8"],
     "'--native-precision': applies to the native runtime only"),
    (["bench", "m", "-r", "native", "--precision", "bf16"], "'--precision': applies to the openvino runtime only"),
    (["bench", "m", "-r", "native,onnxruntime", "--reference", "torch"], "'torch' is not among the contenders"),
])
def test_hints_that_cannot_apply_are_refused(capsys, argv, match):
    assert main(argv) == 2
    assert match in _one_line_error(capsys)


@pytest.mark.slow
@pytest.mark.ci
def test_resume_after_the_last_stage_writes_the_uninterrupted_int8_artifact(tmp_path, monkeypatch, capsys):
    """Stopped after quantize finished (during the export): the resumed run skips every stage, so it must
    restore their fake-quant modules and masks itself. It once exported the fp32 student instead."""
    from edgekit.compress import pipeline

    whole, out = tmp_path / "whole", tmp_path / "out"
    assert main(["compress", "tiny-bert-cls", "-o", str(whole), "--recipe", "quick"]) == 0

    def stop(*a, **k):
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(pipeline, "_export", stop)
        assert main(["compress", "tiny-bert-cls", "-o", str(out), "--recipe", "quick"]) == 130
    assert json.loads((tmp_path / "out.ckpt" / "state.json").read_text())["stage"] == "quantize-done"
    assert main(["compress", "tiny-bert-cls", "-o", str(out), "--recipe", "quick", "--resume"]) == 0
    capsys.readouterr()
    a, b = (json.loads((d / "report.json").read_text()) for d in (whole, out))
    assert b["runtimes"]["native"]["precision"] == "int8-sparse" and b["sparsity"]["total"] > 0.75, b
    assert (b["runtimes"], b["sparsity"], b["precision"]) == (a["runtimes"], a["sparsity"], a["precision"])
    fa, fb = (json.loads((d / "manifest.json").read_text())["files"] for d in (whole, out))
    native = {k: v for k, v in fa.items() if k.startswith("native/")}
    assert native and {k: fb.get(k) for k in native} == native  # the same int8 weights, byte for byte


def test_a_cached_build_of_another_version_is_rebuilt(capsys, tmp_path, monkeypatch):
    """vit-fmnist's schedule changed (version 2): an older cached build must not be served as the new one."""
    from edgekit import zoo

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    old = tmp_path / "models" / "demo-model"
    old.mkdir(parents=True)
    (old / "config.json").write_text('{"built": "old"}')

    def build(dest: Path) -> None:
        (dest / "config.json").write_text('{"built": "new"}')

    def current(dest: Path) -> bool:
        return json.loads((dest / "config.json").read_text())["built"] == "new"

    assert zoo._build_cached("demo-model", build, current=current) == old
    assert json.loads((old / "config.json").read_text()) == {"built": "new"}
    assert f"edgekit: demo-model in {old} was built by an older edgekit; rebuilding it" in capsys.readouterr().err
    assert sorted(p.name for p in old.parent.iterdir() if p.name.startswith(".demo-model")) == [".demo-model.lock"]
    calls = []
    assert zoo._build_cached("demo-model", lambda d: calls.append(d), current=current) == old and calls == []
