"""``prune.scope: search``: the Pareto front, the choice at a latency target, the measured tables (kernel
latency on this CPU, per-Linear sensitivity) and the search on tiny random models, embedder and classifier."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch

from edgekit.compress.config import recipe_from_dict
from edgekit.compress.search import choose, pareto_front, search_allocation
from edgekit.errors import InputError


def _dominated(p, points) -> bool:
    return bool(np.any(np.all(points <= p, axis=1) & np.any(points < p, axis=1)))


def test_pareto_front_is_exactly_the_non_dominated_points():
    rng = np.random.default_rng(1)
    pts = rng.random((300, 2))
    front = pareto_front(pts)
    assert all(not _dominated(pts[i], pts) for i in front)
    rest = sorted(set(range(len(pts))) - set(front.tolist()))
    assert all(_dominated(pts[i], pts) for i in rest)
    assert list(pts[front, 0]) == sorted(pts[front, 0])  # by latency, cost falling along it
    assert all(np.diff(pts[front, 1]) < 0)


def test_choice_is_the_cheapest_front_point_within_the_target_else_the_fastest():
    pts = np.array([[0.2, 5.0], [0.3, 3.0], [0.5, 1.0], [0.9, 0.5], [0.4, 4.0]])
    front = pareto_front(pts)
    assert front.tolist() == [0, 1, 2, 3]
    assert choose(pts, front, 0.35) == (1, True)
    assert choose(pts, front, 0.1) == (0, False)


def _synthetic(n_linears=8, seed=0):
    rng = np.random.default_rng(seed)
    grid = [0.5, 0.7, 0.8, 0.9, 0.95]
    names = [f"layers.{i // 4}.{k}" for i, k in zip(range(n_linears), ["q", "k", "ffn_in", "ffn_out"] * 4)]
    shape_of = {n: ("64x64" if n.endswith(("q", "k")) else "256x64") for n in names}
    latency = {s: {"0.0": base, **{str(g): base * (1 - 0.9 * g) for g in grid}}
               for s, base in (("64x64", 10.0), ("256x64", 40.0))}
    cost = {n: {str(g): float(rng.uniform(0.1, 1.0)) * g ** 3 for g in grid} for n in names}
    return names, shape_of, latency, cost, grid


def test_search_meets_the_target_with_a_point_of_the_front():
    names, shape_of, latency, cost, grid = _synthetic()
    alloc, rec = search_allocation(names, shape_of, latency, cost, grid, target=0.3, trials=300, seed=0)
    dense = sum(latency[shape_of[n]]["0.0"] for n in names)
    lat = sum(latency[shape_of[n]][str(alloc[n])] for n in names) / dense
    qual = sum(cost[n][str(alloc[n])] for n in names)
    assert rec["met"] and lat <= 0.3 + 1e-9
    assert [round(lat, 5), round(qual, 6)] in rec["front"]
    assert rec["chosen"]["latency"] == pytest.approx(lat) and rec["chosen"]["cost"] == pytest.approx(qual)
    # no front point within the target costs less
    assert all(c >= qual - 1e-6 for x, c in rec["front"] if x <= 0.3)
    # better than the uniform allocation that meets the target at the least sparsity (the search must pay)
    uniform = [g for g in grid if sum(latency[shape_of[n]][str(g)] for n in names) / dense <= 0.3]
    assert qual <= sum(cost[n][str(min(uniform))] for n in names) + 1e-9
    again, _ = search_allocation(names, shape_of, latency, cost, grid, target=0.3, trials=300, seed=0)
    assert again == alloc  # seeded


@pytest.mark.parametrize("stage, match", [
    ({"scope": "search"}, "needs exactly one of latency_target"),
    ({"scope": "search", "latency_target": 0.3, "target_speedup": 3.0}, "needs exactly one of latency_target"),
    ({"scope": "search", "latency_target": 0.3, "pattern": "unstructured"}, "pattern must be 4x1 or 4x4"),
    ({"scope": "search", "latency_target": 0.3, "openvino_speedup": 3.0}, "needs exactly one of latency_target"),
    ({"latency_target": 0.3}, "latency_target applies with scope 'search' only"),
    ({"openvino_speedup": 3.0}, "openvino_speedup applies with scope 'search' only"),
    ({"scope": "search", "openvino_speedup": 1.0}, "openvino_speedup: Input should be greater than 1"),
    ({"scope": "search", "latency_target": 1.5}, "latency_target: Input should be less than or equal to 1"),
    ({"scope": "search", "latency_target": 0.3, "search_grid": [0.5, 1.0]}, "1.0 is not a sparsity in"),
])
def test_search_settings_are_validated(stage, match):
    with pytest.raises(InputError, match=match):
        recipe_from_dict({"stages": [{"type": "prune", **stage}]})


def _tiny_run(name: str, task: str):
    from edgekit.compress.stages.distill import make_student, objective
    from edgekit.data import load_dataset, tokenize
    from edgekit.zoo import load_torch, resolve

    teacher, tok = load_torch(resolve(name))
    rec = recipe_from_dict({"stages": [{"type": "distill"}]})
    feeds = tokenize(tok, load_dataset("bbc-news", "train").texts[:16], max_length=32)
    return types.SimpleNamespace(student=make_student(teacher, objective(rec)), task=task, progress=False,
                                 ids=torch.from_numpy(feeds["input_ids"]), mask=torch.from_numpy(feeds["attention_mask"]),
                                 allocation_record=None)


@pytest.mark.parametrize("name, task", [("tiny-bert", "feature-extraction"), ("tiny-bert-cls", "text-classification")])
def test_search_on_a_tiny_model_uses_measured_latency_and_sensitivity(name, task, monkeypatch, tmp_path):
    from edgekit import kernels as K
    from edgekit.arch import encoder_linears
    from edgekit.compress.allocation import allocate

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    calls = {"n": 0}
    real = K.gemm_u8s8

    def counting(*a, **k):
        calls["n"] += 1
        return real(*a, **k)

    monkeypatch.setattr(K, "gemm_u8s8", counting)
    from edgekit.compress.allocation import latency_table

    run = _tiny_run(name, task)
    lin = encoder_linears(run.student)
    grid = [0.5, 0.7, 0.8, 0.9, 0.95]
    table = latency_table({tuple(m.weight.shape) for m in lin.values()}, 8, levels=grid)
    assert calls["n"] > 0 and list(tmp_path.glob("latency-*.json"))  # timed here, on this CPU
    assert all(v > 0 for row in table.values() for v in row.values())
    shape = {n: f"{m.weight.shape[0]}x{m.weight.shape[1]}" for n, m in lin.items()}
    dense = sum(table[shape[n]]["0.0"] for n in lin)
    uniform = [sum(table[shape[n]][str(g)] for n in lin) / dense for g in grid]
    # a target the measured kernels can meet (uniform allocations are among the trials): halfway between the
    # fastest and the slowest uniform one (on tiny layers, or a busy host, sparse can time slower than dense);
    # a target is at most dense, so where every sparsity times slower than dense none is met: say so
    target = min(1.0, (min(uniform) + max(uniform)) / 2)
    if min(uniform) > target:
        pytest.skip(f"every 4x1 sparsity timed slower than dense on this host's tiny layers ({min(uniform):.2f}x)")
    rec = recipe_from_dict({"stages": [{"type": "prune", "scope": "search", "latency_target": target,
                                        "search_grid": grid, "search_trials": 60, "search_samples": 16}]})
    cfg = rec.stage("prune")
    before = {n: m.weight.detach().clone() for n, m in lin.items()}
    calls["n"] = 0
    alloc = allocate(lin, cfg, 2, rec, run)
    assert calls["n"] == 0  # the table is cached per CPU: the search timed nothing again
    record = run.allocation_record
    assert record["latency_table"] == {k: table[k] for k in sorted(set(shape.values()))}
    assert all(torch.equal(before[n], m.weight) for n, m in lin.items())  # the measurement restores weights
    assert set(alloc) == set(lin) and set(alloc.values()) <= set(grid)
    sens = record["sensitivity"]
    assert set(sens) == set(lin) and all(sens[n]["0.95"] >= 0 for n in lin)
    assert any(sens[n]["0.95"] > sens[n]["0.5"] for n in lin)  # pruning more costs more somewhere
    lat = sum(table[shape[n]][str(alloc[n])] for n in lin) / dense
    assert lat == pytest.approx(record["chosen"]["latency"])
    assert record["met"] and lat <= target + 1e-9
    assert [round(lat, 5), round(record["chosen"]["cost"], 6)] in record["front"]
    cost = sum(sens[n][str(alloc[n])] for n in lin)
    assert all(c >= cost - 1e-5 for x, c in record["front"] if x <= target)  # the best the front offers


def test_search_outside_compress_is_refused():
    from edgekit.arch import encoder_linears
    from edgekit.compress.allocation import allocate

    rec = recipe_from_dict({"stages": [{"type": "prune", "scope": "search", "latency_target": 0.5}]})
    run = _tiny_run("tiny-bert", "feature-extraction")
    with pytest.raises(InputError, match="runs inside compress"):
        allocate(encoder_linears(run.student), rec.stage("prune"), 2, rec)


def test_openvino_target_times_both_runtimes_on_a_probe(tmp_path):
    """prune.openvino_speedup: a probe copy of the student (80% 4x1, int8) runs on OpenVINO int8 and the native
    engine; the target is the Linear-time fraction that leaves room for the engine's measured overhead."""
    import types

    import numpy as np

    from edgekit.arch import encoder_linears
    from edgekit.compress.allocation import latency_table
    from edgekit.compress.speed_target import PROBE_LOW, PROBE_SPARSITY, openvino_target
    from edgekit.data import tokenize
    from edgekit.zoo import load_torch, resolve

    model, tok = load_torch(resolve("tiny-bert"))
    before = {n: m.weight.detach().clone() for n, m in encoder_linears(model).items()}
    texts = [f"the {w} market moved again on {d}" for w in ("stock", "bond", "oil", "gold") for d in range(8)]
    run = types.SimpleNamespace(student=model, tok=tok, task="feature-extraction", progress=False,
                                calibration_feeds=lambda n: tokenize(tok, texts[:n], 32))
    linears = encoder_linears(model)
    shape_of = {n: f"{m.weight.shape[0]}x{m.weight.shape[1]}" for n, m in linears.items()}
    table = latency_table({tuple(m.weight.shape) for m in linears.values()}, 8, levels=(PROBE_SPARSITY, PROBE_LOW))
    rec = openvino_target(run, table, shape_of, 3.0, 8, dense_probe=True)
    assert rec["openvino_ms"] > 0 and rec["native_probe_ms"] > 0 and rec["native_probe_low_ms"] > 0
    assert rec["native_probe_dense_ms"] > 0
    assert rec["overhead_ms"] >= 0 and rec["probe_sparsity"] == [PROBE_SPARSITY, PROBE_LOW]
    dense = sum(table[s]["0.0"] for s in shape_of.values()) / 1e3
    assert rec["dense_linear_ms"] == pytest.approx(dense, rel=1e-4)
    pred = {lv: sum(table[s][str(lv)] for s in shape_of.values()) / 1e3 for lv in (PROBE_SPARSITY, PROBE_LOW)}
    # the engine's time = overhead + scale x predicted Linear time, fitted through both probes (or scale 1)
    scale = rec["scale"]
    if rec["scale_fitted"]:
        assert 0.2 <= scale <= 5.0
        assert scale == pytest.approx((rec["native_probe_low_ms"] - rec["native_probe_ms"])
                                      / (pred[PROBE_LOW] - pred[PROBE_SPARSITY]), rel=1e-3)
    else:
        assert scale == 1.0
    assert rec["overhead_ms"] == pytest.approx(max(rec["native_probe_ms"] - scale * pred[PROBE_SPARSITY], 0.0), abs=1e-4)
    # dense Linears in a 4x1 model: the third probe (all dense but the first Linear, at 50%) rescales the dense column
    first = next(iter(shape_of))
    rest = dense - table[shape_of[first]]["0.0"] / 1e3
    factor = rec["dense_factor"]
    if rec["dense_factor_fitted"]:
        assert 0.2 <= factor <= 5.0
        assert rec["native_probe_dense_ms"] == pytest.approx(
            rec["overhead_ms"] + scale * (table[shape_of[first]][str(PROBE_LOW)] / 1e3 + factor * rest), rel=1e-3)
    else:
        assert factor == 1.0
    assert rec["target"] == pytest.approx((rec["openvino_ms"] / 3.0 - rec["overhead_ms"]) / (scale * dense * factor),
                                          rel=1e-3, abs=1e-4)
    # the student itself is left as it was (the probe is a copy)
    assert all(np.array_equal(before[n], m.weight.detach()) for n, m in encoder_linears(model).items())
    assert not any("FakeQuant" in type(m).__name__ for m in model.modules())


def test_search_prices_dense_linears_as_the_engine_runs_them(monkeypatch, tmp_path):
    """With 0 (dense) in the grid the search asks for the third probe and prices every dense Linear at
    dense_factor x its kernel time; the record keeps the timed table."""
    from edgekit.arch import encoder_linears
    from edgekit.compress import search as S
    from edgekit.compress.allocation import allocate, latency_table

    monkeypatch.setenv("EDGEKIT_CACHE", str(tmp_path))
    run = _tiny_run("tiny-bert", "feature-extraction")
    lin = encoder_linears(run.student)
    grid = [0.0, 0.5, 0.8]
    seen = {}

    def fake_target(run_, table, shape_of, speedup, bits, dense_probe=False):
        seen["dense_probe"] = dense_probe
        return {"target": 0.9, "dense_factor": 2.0, "overhead_ms": 0.1, "scale": 1.0, "scale_fitted": False,
                "openvino_ms": 1.0, "native_probe_ms": 0.5, "native_probe_low_ms": 0.6, "native_probe_dense_ms": 0.9,
                "speedup": speedup}

    monkeypatch.setattr(S, "openvino_target", fake_target)
    rec = recipe_from_dict({"stages": [{"type": "prune", "scope": "search", "openvino_speedup": 3.0,
                                        "search_grid": grid, "search_trials": 40, "search_samples": 16}]})
    alloc = allocate(lin, rec.stage("prune"), 2, rec, run)
    assert seen["dense_probe"] is True
    record = run.allocation_record
    shape = {n: f"{m.weight.shape[0]}x{m.weight.shape[1]}" for n, m in lin.items()}
    timed = latency_table(set(tuple(m.weight.shape) for m in lin.values()), 8,
                          levels=grid + [S.PROBE_SPARSITY, S.PROBE_LOW])
    assert record["latency_table"] == {k: timed[k] for k in sorted(set(shape.values()))}  # as timed
    priced = {n: {lv: timed[shape[n]][lv] * (2.0 if lv == "0.0" else 1.0) for lv in timed[shape[n]]} for n in lin}
    dense = sum(priced[n]["0.0"] for n in lin)
    assert record["dense_us"] == pytest.approx(dense, rel=1e-4)
    assert record["chosen"]["latency"] == pytest.approx(sum(priced[n][str(alloc[n])] for n in lin) / dense)
