"""The native engine on the real default model (slow: builds minilm-l6-bbc on first use)."""
from __future__ import annotations

import numpy as np
import pytest

PTQ = """
name: ptq
batch: 16
max_length: 128
stages:
  - type: quantize
    calibration_samples: 64
    qat_steps: 0
"""


@pytest.mark.slow
def test_real_minilm_native_matches_torch_fake_quant(tmp_path_factory):
    """The parity bar on real text and a real, accurate model: MiniLM-L6 fine-tuned on bbc-news, int8 by
    calibration only (a few-step pruning run would leave a model that predicts one class, which says little
    about parity; the 80% sparse default artifact is checked in the README: 426/426 same predictions, logits
    cosine 0.99999). Native and torch fake-quant of the same artifact must agree on the whole test split."""
    from edgekit import _engine
    from edgekit.artifact import load_artifact
    from edgekit.compress import compress
    from edgekit.data import load_dataset
    from edgekit.evaluate import run_batched
    from edgekit.runtimes import load, load_tokenizer

    root = tmp_path_factory.mktemp("real")
    (root / "ptq.yaml").write_text(PTQ)
    compress("minilm-l6-bbc", root / "bbc", recipe=root / "ptq.yaml", progress=False)
    art = load_artifact(root / "bbc")
    tok = load_tokenizer(art)
    test = load_dataset("bbc-news", "test")
    y = np.asarray(test.labels)
    ref = run_batched(load(art, "torch", threads=2), tok, list(test.texts), progress=False)
    assert (ref.argmax(1) == y).mean() >= 0.9  # a real model, not a degenerate one
    for prec in ("fp32", "bf16") if _engine.has_bf16() else ("fp32",):
        sess = load(art, "native", threads=2, precision=prec)
        assert sess.precision.startswith("int8")
        nat = run_batched(sess, tok, list(test.texts), progress=False)
        cos = (ref * nat).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(nat, axis=1))
        assert cos.mean() >= 0.999, (prec, cos.mean())
        assert (ref.argmax(1) == nat.argmax(1)).mean() >= 0.995, prec
        # "within 0.2 point" is finer than one article of 426 (0.23 points): at most one article may differ.
        # Measured 2026-11-25: one article flips on this PTQ model (99.77% agreement); none on the sparse default.
        assert abs(int((nat.argmax(1) == y).sum()) - int((ref.argmax(1) == y).sum())) <= 1, prec
