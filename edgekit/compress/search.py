"""``prune.scope: search``: per-layer, per-Linear-kind sparsity chosen by a multi-objective search.

Two objectives, both cheap to evaluate once two tables are measured:

- **latency**: the predicted time of the encoder Linears, the sum over Linears of the int8 GEMM time of that
  shape at that 4x1 sparsity (:func:`edgekit.compress.allocation.latency_table`: edgekit's own kernels timed on
  this CPU at M = 128 tokens, cached per CPU model, kernel ISA and weight bits), as a fraction of the same sum
  with every Linear dense;
- **quality cost**: the sum over Linears of a measured sensitivity, the divergence of the model's output (1 -
  cosine of embeddings; KL of class probabilities for classifiers) from the unpruned model's when only that Linear
  is pruned to that sparsity (|W| x input RMS, the one-shot criterion, 4x1 blocks), on ``search_samples``
  training windows. Summing assumes the layers' errors add up; it ranks allocations, it does not predict the
  final cosine (distillation recovers much of it).

optuna's NSGA-II sampler searches the grid (``search_grid`` per Linear) for ``search_trials`` trials, seeded with
the uniform allocations so the front spans the extremes, and with the solutions of the Lagrangian relaxation
(:func:`lagrangian_allocations`: each Linear alone minimises cost + lambda x latency, for a sweep of lambda), which
are exact points of the front's convex hull because both objectives are sums over Linears. NSGA-II alone, with 36
Linears x 7 levels and 2,000 trials, stopped far from that hull: on MiniLM-L6 it chose a quality cost of 0.33
where the relaxation had 0.11 at the same latency. The non-dominated trials form the Pareto front, and the
allocation used is the front point with the least quality cost whose latency meets ``latency_target`` (the
fastest point when none does; the record says so). The record (table, front, chosen point) goes to the prune
stage's report and report.png draws the front.

>>> alloc, record = search_allocation(linears, cfg, measure=sensitivity_table(model, linears, batches, ...))  # doctest: +SKIP
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np
import torch

from edgekit.errors import InputError
from edgekit.status import say

from .prune import mask_for
from .speed_target import PROBE_LOW, PROBE_SPARSITY, openvino_target

#: trials drawn at random from the record for the plot (the front is always kept whole)
PLOT_POINTS = 400


# ------------------------------------------------------------------------------------ quality side
def divergence(out: torch.Tensor, ref: torch.Tensor, task: str) -> float:
    """How far ``out`` is from ``ref`` (rows are examples): 1 - mean cosine for embeddings, mean KL(ref || out) of
    the class probabilities for classifiers."""
    out, ref = out.double(), ref.double()
    if task == "text-classification":
        lp, lq = torch.log_softmax(ref, -1), torch.log_softmax(out, -1)
        return float((lp.exp() * (lp - lq)).sum(-1).mean())
    return float(1 - torch.nn.functional.cosine_similarity(out, ref, dim=-1).mean())


def _input_rms(model, linears: dict, batches) -> dict[str, torch.Tensor]:
    """Per Linear, the RMS of each input feature over the real tokens of ``batches`` (one pass, hooks)."""
    sums = {n: torch.zeros(m.weight.shape[1], dtype=torch.float64) for n, m in linears.items()}
    count = {"tokens": 0}
    cur: dict[str, torch.Tensor] = {}
    hooks = []
    for n, m in linears.items():
        def hook(_m, inp, n=n):
            x = inp[0].detach()
            x = x[cur["mask"].bool()] if x.dim() == 3 else x
            sums[n].add_((x.double() ** 2).sum(0))
        hooks.append(m.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            for ids, mask in batches:
                cur["mask"] = mask
                count["tokens"] += int(mask.sum())
                model(ids, mask)
    finally:
        for h in hooks:
            h.remove()
    return {n: (s / max(count["tokens"], 1)).sqrt().float() for n, s in sums.items()}


def sensitivity_table(model, linears: dict, batches, grid, task: str, pattern: str = "4x1",
                      progress: Callable[[str], None] | None = None) -> dict[str, dict[str, float]]:
    """{linear name: {str(sparsity): divergence}}: the model's output with only that Linear pruned to that
    sparsity, against the unpruned model's, on ``batches`` ((ids, mask) pairs). Weights are restored after each
    measurement; the model is left as found. 0.0 (dense) costs 0 by definition."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = torch.cat([model(ids, mask).float() for ids, mask in batches])
            rms = _input_rms(model, linears, batches)
            table: dict[str, dict[str, float]] = {}
            for name, lin in linears.items():
                w = lin.weight.detach().clone()
                row = {}
                for s in grid:
                    if s == 0:
                        row[str(float(s))] = 0.0
                        continue
                    lin.weight.copy_(w * mask_for(w.abs() * rms[name][None, :], s, pattern))
                    out = torch.cat([model(ids, mask).float() for ids, mask in batches])
                    row[str(float(s))] = max(divergence(out, ref, task), 0.0)
                lin.weight.copy_(w)
                table[name] = row
                if progress:
                    progress(name)
    finally:
        model.train(was_training)
    return table


# ------------------------------------------------------------------------------------ the search
def pareto_front(points: np.ndarray) -> np.ndarray:
    """Indices of the non-dominated rows of ``points`` (both columns minimised), sorted by the first column.

    >>> pareto_front(np.array([[1.0, 3.0], [2.0, 2.0], [2.0, 4.0], [3.0, 1.0]])).tolist()
    [0, 1, 3]
    """
    idx = []
    for i, p in enumerate(points):
        dominated = np.any(np.all(points <= p, axis=1) & np.any(points < p, axis=1))
        if not dominated:
            idx.append(i)
    idx = sorted(set(idx), key=lambda i: (points[i, 0], points[i, 1]))
    # exact duplicates: keep one of each
    out, seen = [], set()
    for i in idx:
        key = tuple(points[i])
        if key not in seen:
            seen.add(key)
            out.append(i)
    return np.array(out, dtype=int)


def choose(points: np.ndarray, front: np.ndarray, target: float) -> tuple[int, bool]:
    """(index into ``points``, met): the front point with the least cost whose latency is <= ``target``, else the
    front's fastest point (met False)."""
    ok = [i for i in front if points[i, 0] <= target + 1e-12]
    if ok:
        return min(ok, key=lambda i: (points[i, 1], points[i, 0])), True
    return min(front, key=lambda i: (points[i, 0], points[i, 1])), False


def lagrangian_allocations(names: list[str], lat: dict[str, dict[str, float]], cost: dict[str, dict[str, float]],
                           levels: list[str], sweep: int = 1500) -> list[dict[str, str]]:
    """The distinct allocations that minimise ``cost + lambda x latency`` for ``sweep`` values of lambda (log-spaced
    wide enough to reach both the cheapest and the fastest one). With both objectives summed over Linears each
    Linear picks its own level, and every such allocation is Pareto-optimal (a vertex of the front's convex hull).

    >>> lagrangian_allocations(["a"], {"a": {"0.0": 1.0, "0.5": 0.5}}, {"a": {"0.0": 0.0, "0.5": 0.1}}, ["0.0", "0.5"])
    [{'a': '0.0'}, {'a': '0.5'}]
    """
    out, seen = [], set()
    for lam in np.geomspace(1e-5, 1e5, sweep):
        pick = {n: min(levels, key=lambda lv, n=n: (cost[n][lv] + lam * lat[n][lv], lat[n][lv])) for n in names}
        key = tuple(pick[n] for n in names)
        if key not in seen:
            seen.add(key)
            out.append(pick)
    return out


def search_allocation(names: list[str], shape_of: dict[str, str], latency: dict[str, dict[str, float]],
                      cost: dict[str, dict[str, float]], grid, target: float, trials: int, seed: int = 0,
                      population: int = 64) -> tuple[dict[str, float], dict]:
    """NSGA-II over one categorical sparsity per Linear (``names``). ``latency[shape][str(s)]`` (µs, "0.0" =
    dense), ``cost[name][str(s)]``; ``target``: wanted latency as a fraction of dense. Returns (allocation,
    record)."""
    import optuna

    levels = [str(float(s)) for s in grid]
    dense = sum(latency[shape_of[n]]["0.0"] for n in names)
    lat = {n: {lv: latency[shape_of[n]][lv] / dense for lv in levels} for n in names}

    def objectives(choice: dict[str, str]) -> tuple[float, float]:
        return sum(lat[n][choice[n]] for n in names), sum(cost[n][choice[n]] for n in names)

    def objective(trial) -> tuple[float, float]:
        return objectives({n: trial.suggest_categorical(n, levels) for n in names})

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    sampler = optuna.samplers.NSGAIISampler(population_size=min(population, max(4, trials)), seed=seed)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    for lv in levels:  # the uniform allocations: the front then reaches both ends of the grid
        study.enqueue_trial({n: lv for n in names})
    hull = lagrangian_allocations(names, lat, cost, levels)
    for pick in hull:  # exact points of the front's convex hull; NSGA-II fills in between them
        study.enqueue_trial(pick)
    study.optimize(objective, n_trials=max(trials, len(levels) + len(hull)))
    done = [t for t in study.trials if t.values is not None]
    points = np.array([t.values for t in done])
    front = pareto_front(points)
    best, met = choose(points, front, target)
    alloc = {n: float(done[best].params[n]) for n in names}
    rng = np.random.default_rng(seed)
    sample = rng.choice(len(points), size=min(PLOT_POINTS, len(points)), replace=False)
    record = {"objectives": ["latency (fraction of dense int8)", "quality cost (sum of per-Linear divergence)"],
              "trials": len(done), "grid": [float(s) for s in grid], "target": target, "met": met,
              "dense_us": round(dense, 2), "predicted_us": round(points[best, 0] * dense, 2),
              "chosen": {"latency": float(points[best, 0]), "cost": float(points[best, 1]), "trial": int(best)},
              "front": [[round(float(points[i, 0]), 5), round(float(points[i, 1]), 6)] for i in front],
              "points": [[round(float(points[i, 0]), 5), round(float(points[i, 1]), 6)] for i in sorted(sample)]}
    return alloc, record


def run_search(linears: dict, cfg, run, recipe) -> dict[str, float]:
    """The ``search`` scope: measure both tables for this model and CPU, search, and leave the record on
    ``run.allocation_record`` (the prune stage reports it). Under torchrun rank 0's allocation is used."""
    from .allocation import latency_table
    from .stages.quantize import resolve_weight_bits
    from .training import broadcast, current

    if run is None:
        raise InputError("prune.scope 'search' measures the model on training text; it runs inside compress")
    t0 = time.perf_counter()
    qcfg = recipe.stage("quantize")  # time the kernels the quantized model will run on
    bits = resolve_weight_bits(qcfg.weight_bits) if qcfg is not None else 8
    grid = sorted(set(float(s) for s in cfg.search_grid))
    shape_of = {n: f"{m.weight.shape[0]}x{m.weight.shape[1]}" for n, m in linears.items()}
    levels = grid + ([PROBE_SPARSITY, PROBE_LOW] if cfg.openvino_speedup is not None else [])
    try:
        table = latency_table({tuple(m.weight.shape) for m in linears.values()}, bits, levels=levels)
    except ImportError as exc:
        raise InputError(f"prune.scope 'search' times edgekit's kernels, which are not built here ({exc})") from None
    speed = None  # openvino_speedup: the target from OpenVINO int8 and the native engine timed on this CPU
    if cfg.openvino_speedup is not None and current().is_main:  # other ranks take rank 0's allocation
        speed = openvino_target(run, table, shape_of, cfg.openvino_speedup, bits, dense_probe=0.0 in grid)
        target = speed["target"]
    elif cfg.openvino_speedup is not None:
        target = 1.0
    else:
        target = cfg.latency_target if cfg.latency_target is not None else 1.0 / cfg.target_speedup
    n = min(cfg.search_samples, len(run.ids))
    batches = [(run.ids[i:i + 16], run.mask[i:i + 16]) for i in range(0, n, 16)]
    say(f"search: measuring the sensitivity of {len(linears)} Linears at {len(grid)} sparsities on {n} windows",
        run.progress)
    t1 = time.perf_counter()
    cost = sensitivity_table(run.student, linears, batches, grid, run.task, cfg.pattern)
    t2 = time.perf_counter()
    trials = run.steps(cfg.search_trials) if hasattr(run, "steps") else cfg.search_trials  # --max-steps caps it
    timed = table
    if speed is not None and speed["dense_factor"] != 1.0:  # dense Linears as the engine runs them in a 4x1 model
        table = {shape: {**row, "0.0": row["0.0"] * speed["dense_factor"]} for shape, row in table.items()}
    alloc, record = search_allocation(list(linears), shape_of, table, cost, grid, target, trials, seed=recipe.seed)
    if speed is not None:
        record["openvino"] = speed
    record.update(latency_table={k: timed[k] for k in sorted(set(shape_of.values()))}, sensitivity=cost,
                  weight_bits=bits, samples=n, seconds={"latency": round(t1 - t0, 1), "sensitivity": round(t2 - t1, 1),
                                                        "search": round(time.perf_counter() - t2, 1)})
    if speed is not None:
        pred = speed["overhead_ms"] + speed["scale"] * record["chosen"]["latency"] * record["dense_us"] / 1e3
        say(f"search: OpenVINO int8 {speed['openvino_ms']:.1f} ms, native at 80% / 50% 4x1 {speed['native_probe_ms']:.1f} / "
            f"{speed['native_probe_low_ms']:.1f} ms ({speed['overhead_ms']:.1f} ms outside the Linears, kernel-time "
            f"scale {speed['scale']:.2f}{'' if speed['scale_fitted'] else ' (not fitted)'}"
            + (f"; mostly dense {speed['native_probe_dense_ms']:.1f} ms: a dense Linear costs {speed['dense_factor']:.2f}x "
               f"its kernel time" if "native_probe_dense_ms" in speed else "")
            + f"); chosen allocation predicted {pred:.1f} ms = "
            f"{speed['openvino_ms'] / max(pred, 1e-9):.1f}x OpenVINO int8 (wanted {speed['speedup']:g}x)", run.progress)
    if not record["met"]:
        say(f"search: no allocation reaches latency {target:.3f} of dense (fastest {record['chosen']['latency']:.3f}); "
            f"using the fastest", run.progress)
    else:
        say(f"search: predicted Linear latency {record['chosen']['latency']:.3f} of dense int8 "
            f"(target {target:.3f}), {record['trials']} trials, {len(record['front'])} points on the front", run.progress)
    dist = current()
    if dist.active:
        alloc, record = broadcast((alloc, record), dist)
    run.allocation_record = record
    return alloc
