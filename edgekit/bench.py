"""The benchmark harness (BENCHMARKING.md): fixed threads, warm-up, contenders interleaved round by
round in one process, per-round ratios and their median, latency-constrained throughput.

>>> rows = bench({"onnxruntime": s1, "openvino": s2}, tokenizer, batches=[1, 8], seqs=[128])  # doctest: +SKIP
>>> print(format_table(rows))                                                                 # doctest: +SKIP
"""
from __future__ import annotations

import json
import statistics
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from edgekit.data import load_dataset, tokenize

ROUND_SECONDS = 0.25  #: time per contender per round; short rounds track drift closely


def make_feeds(tokenizer, batch: int, seq: int, data: str = "bbc-news") -> dict[str, np.ndarray]:
    """``batch`` real test articles truncated to ``seq`` tokens (all real tokens: BBC articles are long)."""
    texts = list(load_dataset(data, "test").texts)
    texts = (texts * (batch // len(texts) + 1))[:batch]
    return tokenize(tokenizer, texts, max_length=seq, pad_to_max=True)


def _percentiles(ms: Sequence[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {"p50": float(np.percentile(a, 50)), "p90": float(np.percentile(a, 90)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "min": float(a.min())}


def _warm_up(session, feeds, min_runs: int, min_s: float) -> float:
    """Run until at least ``min_runs`` runs and ``min_s`` seconds; return the last-run latency (s)."""
    start, n, last = time.perf_counter(), 0, 0.0
    while n < min_runs or time.perf_counter() - start < min_s:
        t = time.perf_counter()
        session.run(feeds)
        last = time.perf_counter() - t
        n += 1
        if n >= 200:  # very fast sessions: 200 runs is warm enough
            break
    return last


def measure_point(sessions: Mapping[str, object], feeds, min_runs: int = 50, min_time_s: float = 2.0,
                  warmup_runs: int = 10, warmup_s: float = 1.0, progress=None) -> dict[str, dict]:
    """Time every session on the same feeds, interleaved (A B C A B C ...).

    Returns per runtime: ``{"times_ms": [...], "rounds_p50": [...]}``; round r of every runtime ran
    back to back, so ratios of ``rounds_p50[r]`` cancel machine drift."""
    est = {name: max(_warm_up(s, feeds, warmup_runs, warmup_s), 1e-5) for name, s in sessions.items()}
    per_round = {name: max(1, int(ROUND_SECONDS / e)) for name, e in est.items()}
    out = {name: {"times_ms": [], "rounds_p50": []} for name in sessions}
    spent = {name: 0.0 for name in sessions}
    while any(len(out[n]["times_ms"]) < min_runs or spent[n] < min_time_s for n in sessions):
        for name, s in sessions.items():
            times = []
            for _ in range(per_round[name]):
                t = time.perf_counter()
                s.run(feeds)
                times.append((time.perf_counter() - t) * 1e3)
            out[name]["times_ms"] += times
            out[name]["rounds_p50"].append(statistics.median(times))
            spent[name] += sum(times) / 1e3
        if progress is not None:
            progress.update(1)
    return out


def bench(sessions: Mapping[str, object], tokenizer, batches: Sequence[int] = (1, 8), seqs: Sequence[int] = (128,),
          threads: int | None = None, budget_ms: float = 10.0, min_time_s: float = 2.0, min_runs: int = 50,
          model_name: str = "", progress: bool = True, data: str = "bbc-news") -> list[dict]:
    """Benchmark ``sessions`` (runtime name -> Session) on every batch x seq point.

    Each row has the CONTRACT fields plus ``speedup_vs`` ({other runtime: median over rounds of
    other_p50 / this_p50}, >1 = this one is faster), ``rounds`` and ``lct_per_s`` (latency-constrained
    throughput: best items/s over the batch sizes whose p90 <= ``budget_ms``, per runtime and seq).
    """
    from tqdm.auto import tqdm

    from edgekit.info import cpu_info
    from edgekit.runtimes import versions

    cpu, vers = cpu_info(), versions()
    rows: list[dict] = []
    bar = tqdm(desc="bench", disable=not progress, unit="round")
    for seq in seqs:
        for batch in batches:
            feeds = make_feeds(tokenizer, batch, seq, data)
            bar.set_postfix_str(f"batch {batch} seq {seq}")
            res = measure_point(sessions, feeds, min_runs=min_runs, min_time_s=min_time_s, progress=bar)
            for name, s in sessions.items():
                mine = np.asarray(res[name]["rounds_p50"])
                speedup = {o: float(np.median(np.asarray(res[o]["rounds_p50"]) / mine)) for o in sessions if o != name}
                lat = _percentiles(res[name]["times_ms"])
                rows.append({
                    "model": model_name, "runtime": name, "precision": s.precision, "batch": batch, "seq": seq,
                    "threads": s.threads, "latency_ms": lat, "throughput_per_s": batch * 1e3 / lat["p50"],
                    "speedup_vs": speedup, "rounds": len(mine), "runs": len(res[name]["times_ms"]),
                    "runtime_version": vers.get(name), "cpu": cpu, "budget_ms": budget_ms,
                })
    bar.close()
    for name in sessions:
        for seq in seqs:
            mine = [r for r in rows if r["runtime"] == name and r["seq"] == seq]
            ok = [r["throughput_per_s"] for r in mine if r["latency_ms"]["p90"] <= budget_ms]
            for r in mine:
                r["lct_per_s"] = max(ok) if ok else None
    return rows


def write_jsonl(rows: Sequence[dict], path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _reference(rows: Sequence[dict]) -> str | None:
    names = list(dict.fromkeys(r["runtime"] for r in rows))
    return "torch" if "torch" in names else (names[-1] if len(names) > 1 else None)


def _table(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    ref = _reference(rows)
    head = ["runtime", "precision", "batch", "seq", "p50 ms", "p90 ms", "p99 ms", "mean ms", "min ms", "items/s",
            f"x vs {ref}" if ref else "x", "lct/s"]
    body = []
    for r in rows:
        lat = r["latency_ms"]
        x = 1.0 if r["runtime"] == ref else r["speedup_vs"].get(ref)
        body.append([r["runtime"], r["precision"], str(r["batch"]), str(r["seq"]),
                     *(f"{lat[k]:.2f}" for k in ("p50", "p90", "p99", "mean", "min")),
                     f"{r['throughput_per_s']:.1f}", f"{x:.2f}" if x is not None else "-",
                     f"{r['lct_per_s']:.1f}" if r.get("lct_per_s") else "-"])
    return head, body


def _pairs(rows: Sequence[dict]) -> list[str]:
    """"A vs B" lines for the first runtime against each other one, per point."""
    names = list(dict.fromkeys(r["runtime"] for r in rows))
    if len(names) < 2:
        return []
    first = names[0]
    out = []
    for r in rows:
        if r["runtime"] == first:
            parts = ", ".join(f"{v:.2f}x vs {o}" for o, v in r["speedup_vs"].items())
            out.append(f"{first} batch {r['batch']} seq {r['seq']}: {parts} (median of {r['rounds']} interleaved rounds)")
    return out


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table plus the per-round ratio summary."""
    head, body = _table(rows)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.rjust(w) if i > 1 else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    cpu = rows[0]["cpu"] if rows else {}
    lines = [f"{rows[0]['model']} | {cpu.get('model')} | {rows[0]['threads']} threads | "
             f"lct = best items/s with p90 <= {rows[0]['budget_ms']:g} ms" if rows else "", line(head),
             line(["-" * w for w in widths])]
    lines += [line(b) for b in body]
    lines += [""] + _pairs(rows)
    return "\n".join(lines)


def markdown_table(rows: Sequence[dict]) -> str:
    head, body = _table(rows)
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(out + [""] + [f"- {p}" for p in _pairs(rows)]) + "\n"
