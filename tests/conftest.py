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
