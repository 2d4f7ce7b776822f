"""The benchmark harness on fake sessions: schema, interleaving, ratio math, budget selection.
Nothing here checks speed; benchmarks measure, tests check correctness."""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from edgekit import bench as B

CONTRACT = {"model", "runtime", "precision", "batch", "seq", "threads", "latency_ms", "throughput_per_s", "cpu"}


class FakeSession:
    """Sleeps a fixed time per item, and logs every call so the test can see the order."""

    task = "feature-extraction"
    threads = 2

    def __init__(self, name, ms_per_item, log):
        self.runtime, self.precision, self.ms, self.log = name, "fp32", ms_per_item, log

    def run(self, feeds):
        b = feeds["input_ids"].shape[0]
        self.log.append(self.runtime)
        time.sleep(self.ms * b / 1e3)
        return np.zeros((b, 4), np.float32)


@pytest.fixture(scope="module")
def rows_and_log():
    from edgekit.zoo import load_torch, resolve

    _, tok = load_torch(resolve("tiny-bert"))
    log: list[str] = []
    sessions = {"slow": FakeSession("slow", 4.0, log), "fast": FakeSession("fast", 1.0, log)}
    rows = B.bench(sessions, tok, batches=[1, 4], seqs=[16], min_time_s=0.2, min_runs=10, budget_ms=6.0,
                   model_name="fake", progress=False)
    return rows, log


def test_rows_have_contract_fields(rows_and_log):
    rows, _ = rows_and_log
    assert len(rows) == 4
    for r in rows:
        assert CONTRACT <= set(r)
        assert set(r["latency_ms"]) == {"p50", "p90", "p99", "mean", "min"}
        assert r["runs"] >= 10 and r["cpu"]["cores"] >= 1
        lat = r["latency_ms"]
        assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"]
        assert r["throughput_per_s"] == pytest.approx(r["batch"] * 1e3 / lat["p50"])


def test_contenders_are_interleaved(rows_and_log):
    _, log = rows_and_log
    # After warm-up the log alternates in blocks: slow..., fast..., slow..., fast...
    switches = sum(1 for a, b in zip(log, log[1:]) if a != b)
    assert switches >= 2 * 3  # at least three rounds of each, back to back


def test_ratio_is_median_of_rounds(rows_and_log):
    rows, _ = rows_and_log
    fast = next(r for r in rows if r["runtime"] == "fast" and r["batch"] == 4)
    slow = next(r for r in rows if r["runtime"] == "slow" and r["batch"] == 4)
    # sleep() overshoots by a roughly constant amount, so the ratio sits between 2.5 and 4.
    assert 2.5 < fast["speedup_vs"]["slow"] < 4.5
    assert fast["speedup_vs"]["slow"] == pytest.approx(1 / slow["speedup_vs"]["fast"], rel=0.2)


def test_latency_constrained_throughput_respects_budget(rows_and_log):
    rows, _ = rows_and_log
    fast = [r for r in rows if r["runtime"] == "fast"]
    slow = [r for r in rows if r["runtime"] == "slow"]
    # fast: batch 4 takes ~4 ms (< 6 ms budget) -> its throughput; slow: only batch 1 (~4 ms) fits.
    assert fast[0]["lct_per_s"] == pytest.approx(max(r["throughput_per_s"] for r in fast))
    assert slow[0]["lct_per_s"] == pytest.approx(next(r["throughput_per_s"] for r in slow if r["batch"] == 1))


def test_outputs_jsonl_table_markdown_plot(rows_and_log, tmp_path):
    from edgekit.plots import plot_latency

    rows, _ = rows_and_log
    B.write_jsonl(rows, tmp_path / "b.jsonl")
    lines = (tmp_path / "b.jsonl").read_text().splitlines()
    assert [json.loads(x)["runtime"] for x in lines] == [r["runtime"] for r in rows]
    text = B.format_table(rows)
    assert "x vs fast" in text and "interleaved rounds" in text
    assert B.markdown_table(rows).startswith("| runtime |")
    png = plot_latency(rows, tmp_path / "b.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_feeds_are_real_tokens():
    from edgekit.zoo import load_torch, resolve

    _, tok = load_torch(resolve("tiny-bert"))
    f = B.make_feeds(tok, 3, 128)
    assert f["input_ids"].shape == (3, 128) and f["attention_mask"].all()
    assert len(set(f["input_ids"][0].tolist())) > 50  # real text, not padding


def test_cli_bench_writes_contract_jsonl(tiny_artifact, tmp_path):
    from edgekit.cli import main

    out = tmp_path / "b.jsonl"
    assert main(["bench", str(tiny_artifact.root), "--batch", "1", "--seq", "16", "--min-time", "0.05",
                 "--json", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["runtime"] for r in rows] == ["torch", "onnxruntime", "openvino"]
    assert all(CONTRACT <= set(r) for r in rows)
