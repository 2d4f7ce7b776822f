"""The benchmark harness on fake sessions and a fake clock: schema, interleaving order, ratio math
under drift, budget selection, outputs. Nothing here checks real speed: benchmarks measure, tests
check correctness. Each fake run advances the fake clock by a known cost, so every number is exact.
"""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from edgekit import bench as B
from edgekit.errors import InputError

CONTRACT = {"model", "runtime", "precision", "batch", "seq", "threads", "latency_ms", "throughput_per_s", "cpu"}
FAST = dict(min_runs=20, min_time_s=0.1, warmup_runs=3, warmup_s=0.01, rounds=5)


class FakeClock:
    def __init__(self):
        self.t = 0.0
        self.slowdown = 1.0  # machine drift: multiplies every cost while it lasts

    def __call__(self) -> float:
        return self.t


class FakeSession:
    """Implements the Session Protocol; one run costs ``ms_per_item * batch`` fake milliseconds."""

    task = "feature-extraction"

    def __init__(self, name, ms_per_item, clock, log, threads=2):
        self.runtime, self.precision, self.threads = name, "fp32", threads
        self.ms, self.clock, self.log = ms_per_item, clock, log

    def run(self, feeds):
        ids = feeds["input_ids"]
        self.log.append(self.runtime)
        self.clock.t += self.ms * ids.shape[0] * self.clock.slowdown / 1e3
        return (ids[:, :8] % 97).astype(np.float32) + 1.0  # a deterministic function of the input


@pytest.fixture(scope="module")
def tok():
    from transformers import AutoTokenizer

    from edgekit.zoo import _minilm_path

    return AutoTokenizer.from_pretrained(_minilm_path())


def _contenders(clock, log, costs=(("slow", 2.0), ("fast", 0.5))):
    return {name: FakeSession(name, ms, clock, log) for name, ms in costs}


@pytest.fixture(scope="module")
def run(tok):
    clock, log = FakeClock(), []
    rows = B.bench(_contenders(clock, log), tok, batches=[1, 4], seqs=[16], budget_ms=5.0, model_name="fake",
                   progress=False, clock=clock, **FAST)
    return rows, log


def test_rows_have_contract_fields_and_are_json(run):
    from edgekit.info import cpu_info

    rows, _ = run
    assert [(r["runtime"], r["batch"]) for r in rows] == [("slow", 1), ("fast", 1), ("slow", 4), ("fast", 4)]
    for r in rows:
        assert CONTRACT <= set(r)
        assert set(r["latency_ms"]) == {"p50", "p90", "p99", "mean", "min"}
        assert r["model"] == "fake" and r["seq"] == 16 and r["threads"] == 2 and r["precision"] == "fp32"
        assert r["cpu"] == cpu_info() and set(r["cpu"]) >= {"model", "cores", "isa"}
        assert json.loads(json.dumps(r)) == r
        assert r["output_cosine_vs_reference"] == pytest.approx(1.0)


def test_latencies_are_exact_and_quota_met(run):
    rows, _ = run
    for r in rows:
        ms = {"slow": 2.0, "fast": 0.5}[r["runtime"]] * r["batch"]
        for k in ("p50", "p90", "p99", "mean", "min"):
            assert r["latency_ms"][k] == pytest.approx(ms)
        assert r["throughput_per_s"] == pytest.approx(r["batch"] * 1e3 / ms)
        assert r["runs"] >= FAST["min_runs"] and r["runs"] * ms / 1e3 >= FAST["min_time_s"] - 1e-9
        assert r["rounds"] == FAST["rounds"] and r["runs"] == r["rounds"] * r["runs_per_round"]
    # slow at batch 1: 2 ms/run, 0.1 s needs 50 runs (> 20) -> 10 per round over 5 rounds
    assert rows[0]["runs_per_round"] == 10


def test_contenders_are_interleaved_round_by_round(run):
    _, log = run
    blocks = [name for name, _ in itertools.groupby(log)]
    # per point: warm-up slow, warm-up fast, then 5 rounds of (slow, fast); 2 points
    assert blocks == ["slow", "fast"] * (1 + FAST["rounds"]) * 2


def test_ratio_vs_reference_is_the_median_of_per_round_ratios(run):
    rows, _ = run
    for r in rows:
        rv = r["ratio_vs"]
        assert rv["reference"] == "slow" and len(rv["rounds"]) == r["rounds"]
        want = 1.0 if r["runtime"] == "slow" else 4.0
        assert rv["median"] == pytest.approx(want) and rv["rounds"] == pytest.approx([want] * r["rounds"])
        other = "fast" if r["runtime"] == "slow" else "slow"
        assert r["speedup_vs"] == {other: pytest.approx(0.25 if r["runtime"] == "slow" else 4.0)}


def test_interleaving_cancels_drift():
    """The machine slows down by a different factor in every round: pooled latencies spread 4x,
    but each round's ratio (and so the median) stays exactly the true 3x."""
    clock, log = FakeClock(), []
    sessions = _contenders(clock, log, costs=(("a", 3.0), ("b", 1.0)))
    feeds = {"input_ids": np.ones((1, 8), np.int64), "attention_mask": np.ones((1, 8), np.int64)}
    drift = [1.0, 4.0, 2.0, 1.5, 3.0, 1.0, 1.0]

    def on_round(r):
        clock.slowdown = drift[r]

    res = B.measure_point(sessions, feeds, clock=clock, on_round=on_round, **FAST)
    ratios = B.round_ratios(res["a"]["rounds_ms"], res["b"]["rounds_ms"])
    assert ratios == pytest.approx([3.0] * len(ratios))
    pooled = B.percentiles(res["b"]["times_ms"])
    assert pooled["p99"] / pooled["min"] == pytest.approx(4.0)


def test_latency_constrained_throughput_respects_budget(run):
    rows, _ = run
    by = {(r["runtime"], r["batch"]): r for r in rows}
    # budget 5 ms: slow fits only at batch 1 (2 ms; batch 4 = 8 ms); fast fits at both with the same
    # 2000 items/s (linear cost), and a tie goes to the smaller batch (lower latency)
    assert by["slow", 4]["lct_per_s"] == pytest.approx(500.0) and by["slow", 4]["lct_batch"] == 1
    assert by["fast", 4]["lct_per_s"] == pytest.approx(2000.0) and by["fast", 4]["lct_batch"] == 1

    def row(rt, batch, p90, tput, seq=128):
        return {"runtime": rt, "batch": batch, "seq": seq, "latency_ms": {"p90": p90}, "throughput_per_s": tput}

    synthetic = [row("a", 1, 3.0, 333.0), row("a", 8, 9.9, 808.0), row("a", 32, 30.0, 1066.0),
                 row("a", 8, 12.0, 666.0, seq=256), row("b", 1, 11.0, 90.0)]
    lct = B.latency_constrained_throughput(synthetic, budget_ms=10.0)
    assert lct == {("a", 128): {"throughput_per_s": 808.0, "batch": 8},
                   ("a", 256): {"throughput_per_s": None, "batch": None},
                   ("b", 128): {"throughput_per_s": None, "batch": None}}


def test_reference_loaders_and_thread_checks(tok):
    clock, log = FakeClock(), []
    sessions = _contenders(clock, log)
    lazy = {name: (lambda s=s: s) for name, s in sessions.items()}  # loaders are accepted
    rows = B.bench(lazy, tok, batches=[2], seqs=[8], reference="fast", progress=False, clock=clock, **FAST)
    assert {r["runtime"]: r["ratio_vs"]["median"] for r in rows} == pytest.approx({"slow": 0.25, "fast": 1.0})
    with pytest.raises(InputError, match="reference"):
        B.bench(sessions, tok, batches=[1], seqs=[8], reference="openvino", progress=False, clock=clock, **FAST)
    sessions["fast"].threads = 1
    with pytest.raises(InputError, match="same threads"):
        B.bench(sessions, tok, batches=[1], seqs=[8], progress=False, clock=clock, **FAST)
    with pytest.raises(InputError, match="same threads"):
        B.bench({"slow": sessions["slow"]}, tok, threads=4, batches=[1], seqs=[8], progress=False, clock=clock)
    with pytest.raises(InputError):
        B.bench({}, tok, progress=False)


def test_jsonl_tables_and_plot(run, tmp_path):
    from edgekit.plots import plot_latency

    rows, _ = run
    path = B.write_jsonl(rows, tmp_path / "sub" / "b.jsonl")
    assert [json.loads(x) for x in path.read_text().splitlines()] == rows
    text = B.format_table(rows)
    lines = text.splitlines()
    assert "2 threads" in lines[0] and "x faster than slow [IQR]" in lines[1]
    assert any(line.startswith("fast") and "4.00 [4.00-4.00]" in line for line in lines)
    assert "0.25" not in text  # the notes never print the inverse of the table's ratio
    assert "below 1 = slower than slow" in text and "p90 <= 5 ms" in text
    md = B.markdown_table(rows)
    assert "| runtime | precision |" in md and md.count("\n| fast ") == 2
    png = plot_latency(rows, tmp_path / "b.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_feeds_are_real_tokens(tok):
    f = B.make_feeds(tok, 3, 128)
    assert f["input_ids"].shape == (3, 128) and f["attention_mask"].all()
    assert all(len(set(row.tolist())) > 50 for row in f["input_ids"])  # real text, not padding
    big = B.make_feeds(tok, 2, 512)  # few articles are this long: the longest come first
    assert big["attention_mask"].sum(1).min() > 400
    with pytest.raises(InputError):
        B.make_feeds(tok, 0, 128)


def test_cli_bench_writes_contract_jsonl(tiny_artifact, tmp_path, monkeypatch):
    """The real runtimes through the CLI, with the protocol's quotas lowered to keep it quick."""
    from edgekit.cli import main

    for name, value in dict(MIN_RUNS=5, WARMUP_RUNS=2, WARMUP_S=0.0, ROUNDS=2).items():
        monkeypatch.setattr(B, name, value)
    out = tmp_path / "b.jsonl"
    assert main(["bench", str(tiny_artifact.root), "--batch", "1", "--seq", "16", "--min-time", "0.02",
                 "--json", str(out)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["runtime"] for r in rows] == ["torch", "onnxruntime", "openvino"]
    assert all(CONTRACT <= set(r) for r in rows)
    assert all(r["output_cosine_vs_reference"] > 0.999 for r in rows)  # same model on every runtime


def test_extra_rounds_when_a_contender_speeds_up_after_warm_up(tok):
    """Warm-up said 1 ms a run, then runs take 0.5 ms: the planned runs fall short of the time
    quota, so extra rounds follow (with the progress bar on, whose total grows with them)."""
    clock, log = FakeClock(), []
    sess = FakeSession("a", 1.0, clock, log)
    real_run = sess.run

    def run(feeds):
        out = real_run(feeds)
        if len(log) > 3:  # past the 3 warm-up runs: twice as fast
            clock.t -= 0.5e-3
        return out

    sess.run = run
    (r,) = B.bench({"a": sess}, tok, batches=[1], seqs=[8], progress=True, clock=clock,
                   **(FAST | {"warmup_runs": 3, "warmup_s": 0.0}))
    assert r["latency_ms"]["p50"] == pytest.approx(0.5)
    assert r["rounds"] == 2 * FAST["rounds"] and r["runs"] * 0.5e-3 >= FAST["min_time_s"] - 1e-9


# ---- the scripts in bench/: each answers --help, runs on a tiny compressed model, writes JSON Lines + Markdown

def _bench_script(name: str):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_every_bench_script_has_help(capsys):
    from pathlib import Path

    names = sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "bench").glob("*.py"))
    assert names == ["busy_machine", "distilbert_base", "engine_breakdown", "install_size", "kernels", "native_ab", "serve_load"]
    for name in names:
        with pytest.raises(SystemExit) as exc:
            _bench_script(name).main(["--help"])
        assert exc.value.code == 0
        assert "usage:" in capsys.readouterr().out


def test_native_ab_script_interleaves_artifacts(quick_cls_artifact, tmp_path, monkeypatch):
    import shutil

    for name, value in dict(MIN_RUNS=3, WARMUP_RUNS=2, WARMUP_S=0.0).items():
        monkeypatch.setattr(B, name, value)
    art, _ = quick_cls_artifact
    other = shutil.copytree(art, tmp_path / "other")  # a second artifact (fp32 attention runs on every CPU)
    ab = _bench_script("native_ab")
    out, md = tmp_path / "ab.jsonl", tmp_path / "ab.md"
    assert ab.main([str(art), str(other), "--precision", "fp32", "--batch", "1,2", "--seq", "16", "--min-time",
                    "0.01", "--rounds", "2", "--json", str(out), "--md", str(md)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    a, b = f"{art.name} fp32", "other fp32"
    assert [(r["runtime"], r["batch"]) for r in rows] == [(a, 1), (b, 1), (a, 2), (b, 2)]
    assert [r["artifact"] for r in rows] == [str(art), str(other)] * 2
    assert all(CONTRACT <= set(r) and r["ratio_vs"]["reference"] == a and r["rounds"] >= 2 for r in rows)
    assert all(r["output_cosine_vs_reference"] == pytest.approx(1.0) for r in rows)  # the same model twice
    assert "| other fp32 |" in md.read_text()
    assert ab.main([str(tmp_path / "missing"), "--batch", "1"]) == 2  # one line on stderr, no traceback


def test_busy_machine_script_alternates_phases(quick_cls_artifact, tmp_path, monkeypatch):
    for name, value in dict(MIN_RUNS=3, WARMUP_RUNS=2, WARMUP_S=0.0).items():
        monkeypatch.setattr(B, name, value)
    art, _ = quick_cls_artifact
    busy = _bench_script("busy_machine")
    spun = []
    real = busy.BusyCore.__enter__

    def enter(self):
        spun.append(real(self))
        assert self.proc.poll() is None  # the spinning process is alive while the phase runs
        return self

    monkeypatch.setattr(busy.BusyCore, "__enter__", enter)
    out, md = tmp_path / "busy.jsonl", tmp_path / "busy.md"
    assert busy.main([str(art), "--runtime", "native,onnxruntime", "--reference", "onnxruntime", "--seq", "16",
                      "--cycles", "2", "--rounds", "2", "--min-time", "0.01", "--json", str(out),
                      "--md", str(md)]) == 0
    assert len(spun) == 2 and all(s.proc.poll() is not None for s in spun)  # one busy phase per cycle, stopped
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["runtime"] for r in rows] == ["native", "onnxruntime"]
    for r in rows:
        assert r["cycles"] == 2 and len(r["phases"]["quiet"]) == len(r["phases"]["busy"]) == 2
        assert r["busy_over_quiet"]["median"] > 0 and r["quiet_p50_ms"] > 0 and r["busy_p50_ms"] > 0
    assert rows[1]["ratio_vs_busy"]["median"] == pytest.approx(1.0)  # the reference against itself
    assert "| native " in md.read_text()


def test_engine_breakdown_script_writes_stages(quick_cls_artifact, tmp_path):
    art, _ = quick_cls_artifact
    bd = _bench_script("engine_breakdown")
    out, md = tmp_path / "bd.jsonl", tmp_path / "bd.md"
    assert bd.main([str(art), "--seq", "16", "--runs", "4", "--min-time", "0.01", "--rounds", "2",
                    "--json", str(out), "--md", str(md)]) == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["stage"] for r in rows] == list(bd.STAGES)
    assert all(r["runs"] >= r["timed_runs"] >= 4 and r["p50_ms"] > 0 for r in rows)
    assert sum(r["ms"] for r in rows) > 0 and sum(r["share"] for r in rows) == pytest.approx(1.0)
    assert "| stage | ms |" in md.read_text()
