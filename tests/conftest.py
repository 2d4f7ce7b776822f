"""Shared fixtures: tiny random BERT artifacts built in-process (fast), real-model ones (slow)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_artifact(tmp_path_factory):
    """tiny-bert (feature extraction) exported to torch + onnx + openvino."""
    from edgekit.export import export

    return export("tiny-bert", tmp_path_factory.mktemp("art") / "tiny", formats="onnx,openvino", progress=False)


@pytest.fixture(scope="session")
def tiny_cls_artifact(tmp_path_factory):
    from edgekit.export import export

    return export("tiny-bert-cls", tmp_path_factory.mktemp("art") / "tiny-cls", formats="onnx,openvino", progress=False)


@pytest.fixture(scope="session")
def real_feeds():
    """Eight real bbc-news test articles, seq 64, with one row padded (to exercise masking)."""
    from edgekit.data import load_dataset, tokenize
    from edgekit.zoo import load_torch, resolve

    _, tok = load_torch(resolve("tiny-bert"))
    feeds = tokenize(tok, load_dataset("bbc-news", "test").texts[:8], max_length=64)
    feeds["attention_mask"][1, 40:] = 0
    feeds["input_ids"][1, 40:] = tok.pad_token_id
    return feeds


@pytest.fixture(scope="session")
def quick_cls_artifact(tmp_path_factory):
    """tiny-bert-cls compressed with the `quick` recipe: 4x1 80% + int8, every format. (dir, report)"""
    from edgekit.compress import compress

    out = tmp_path_factory.mktemp("c") / "tiny-cls"
    return out, compress("tiny-bert-cls", out, recipe="quick", progress=False)


@pytest.fixture(scope="session")
def quick_fe_artifact(tmp_path_factory):
    from edgekit.compress import compress

    out = tmp_path_factory.mktemp("c") / "tiny-fe"
    return out, compress("tiny-bert", out, recipe="quick", progress=False)


def make_standin_artifact(root):
    """A structurally complete, checksummed artifact whose files are stand-ins (no runtime can run it): for
    tests of everything that must happen before a model loads (path checks, argument checks)."""
    from edgekit.artifact import FORMAT_VERSION, Manifest, TensorSpec, finalize_manifest

    (root / "torch").mkdir(parents=True)
    (root / "torch" / "config.json").write_text("{}")
    (root / "torch" / "model.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")  # empty, valid
    (root / "onnx").mkdir()
    (root / "onnx" / "model.onnx").write_bytes(b"onnx bytes")
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "vocab.txt").write_text("[PAD]\n")
    manifest = Manifest(
        format_version=FORMAT_VERSION, edgekit_version="0", task="feature-extraction", model="stand-in",
        inputs=[TensorSpec(name="input_ids", dtype="int64", shape=["batch", "sequence"])],
        outputs=[TensorSpec(name="embeddings", dtype="float32", shape=["batch", 4])],
        formats={"torch": "torch", "onnx": "onnx/model.onnx"}, precision={"torch": "fp32", "onnx": "fp32"},
    )
    finalize_manifest(root, manifest)
    return root


@pytest.fixture(scope="session")
def make_standin():
    """:func:`make_standin_artifact` for tests that build several (a fixture: test modules cannot import from
    conftest reliably once sub-folders have their own conftest.py)."""
    return make_standin_artifact


@pytest.fixture()
def standin_artifact(tmp_path):
    return make_standin_artifact(tmp_path / "standin")
