#!/usr/bin/env python
"""Load test of `edgekit serve`: N requests, C at a time, against calling the session directly one request at a time.

Starts the server on a free loopback port in a subprocess (or uses --url), sends --requests single-text
requests with --concurrency in flight (httpx, asyncio), and reports requests/s, latency p50/p90/p99 and
errors; then the same texts through the same session in this process, one request at a time
(tokenise + run). The batching gain is served req/s divided by direct req/s. Texts are bbc-news test
sentences cut to a random length between --words LO,HI. Measures and never asserts: the load generator
shares the CPU with the server, so run it on a quiet machine and read the figures with that in mind.

    python bench/serve_load.py out/minilm --requests 2000 --concurrency 16 \\
        --json out/serve_load.jsonl --markdown out/serve_load.md
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_texts(n: int, words: tuple[int, int], seed: int = 0) -> list[str]:
    from edgekit.data import load_dataset

    arts = load_dataset("bbc-news", "test").texts
    rng = random.Random(seed)
    out = []
    for i in range(n):
        w = arts[i % len(arts)].split()
        k = rng.randint(*words)
        start = rng.randint(0, max(0, len(w) - k))
        out.append(" ".join(w[start : start + k]))
    return out


def summary(latencies_s: list[float], wall_s: float, n: int, errors: int) -> dict:
    from edgekit.bench import percentiles

    ms = [t * 1e3 for t in latencies_s] or [float("nan")]
    lat = percentiles(ms)
    lat["max"] = float(np.max(ms))
    return {"requests": n, "errors": errors, "seconds": wall_s, "req_per_s": (n - errors) / wall_s,
            "latency_ms": lat}


def direct(args, texts: list[str]) -> tuple[dict, dict]:
    """The same session, in this process, one request at a time: what a server without batching could do at best."""
    from edgekit.serve import ServeConfig
    from edgekit.serve.model import ServedModel

    cfg = ServeConfig.create(artifact=args.artifact, runtime=args.runtime, threads=args.threads, port=0,
                             auto_truncate=True, max_length=args.max_length)
    model = ServedModel.load(cfg)
    for t in texts[:20]:  # warm-up, as the served run gets
        model.run(model.encode([t], truncate=True))
    lat, errors = [], 0
    t0 = time.perf_counter()
    for t in texts:
        s = time.perf_counter()
        try:
            model.run(model.encode([t], truncate=True))
        except Exception:  # noqa: BLE001 - counted, never fatal
            errors += 1
        lat.append(time.perf_counter() - s)
    wall = time.perf_counter() - t0
    meta = {"model": model.name, "task": model.task, "runtime": model.runtime, "precision": model.precision,
            "threads": getattr(model.session, "threads", args.threads)}
    return summary(lat, wall, len(texts), errors), meta


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args) -> tuple[subprocess.Popen, str]:
    import httpx

    port = free_port()
    cmd = [sys.executable, "-m", "edgekit", "serve", str(args.artifact), "--port", str(port), "--auto-truncate",
           "--max-batch", str(args.max_batch), "--max-wait-ms", str(args.max_wait_ms)]
    for flag, value in (("--runtime", args.runtime), ("--threads", args.threads), ("--max-length", args.max_length)):
        if value is not None:
            cmd += [flag, str(value)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited: {proc.stderr.read().strip().splitlines()[-1:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("the server did not become healthy within 180 s")


def batch_stats(url: str) -> tuple[float, float]:
    """(session runs, inputs) so far, from the server's batch-size histogram."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    vals = {s.name: s.value for f in text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
            if f.name == "edgekit_batch_size" for s in f.samples}
    return vals.get("edgekit_batch_size_count", 0.0), vals.get("edgekit_batch_size_sum", 0.0)


async def load(url: str, route: str, texts: list[str], concurrency: int) -> dict:
    import httpx

    body = (lambda t: {"input": t, "model": "m"}) if route == "/v1/embeddings" else (lambda t: {"inputs": t})
    lat: list[float] = []
    errors = 0
    nxt = iter(range(len(texts)))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def worker():
            nonlocal errors
            for i in nxt:
                s = time.perf_counter()
                try:
                    r = await client.post(route, json=body(texts[i]))
                    errors += r.status_code != 200
                except httpx.HTTPError:
                    errors += 1
                lat.append(time.perf_counter() - s)

        for t in texts[:20]:  # warm-up
            await client.post(route, json=body(t))
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        wall = time.perf_counter() - t0
    return summary(lat, wall, len(texts), errors)


def markdown(rows: list[dict]) -> str:
    r0 = rows[0]
    cpu = r0.get("cpu") or {}
    out = [f"_{r0['model']} | {r0['runtime']} {r0['precision']} | {r0['threads']} threads | {cpu.get('model', '?')} "
           f"({cpu.get('cores', '?')} cores) | {r0['requests']} requests, texts of {r0['words'][0]}-{r0['words'][1]} "
           f"words_", "",
           "| mode | concurrency | req/s | p50 ms | p90 ms | p99 ms | errors | mean batch | gain |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lat = r["latency_ms"]
        mb = f"{r['mean_batch']:.1f}" if r.get("mean_batch") else "-"
        gain = f"{r['batching_gain']:.2f}x" if r.get("batching_gain") else "-"
        out.append(f"| {r['mode']} | {r['concurrency']} | {r['req_per_s']:.1f} | {lat['p50']:.2f} | {lat['p90']:.2f} | "
                   f"{lat['p99']:.2f} | {r['errors']} | {mb} | {gain} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--runtime", default=None, help="as for edgekit serve (default: the artifact's fastest format)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--requests", type=int, default=2000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--max-wait-ms", type=float, default=2.0)
    ap.add_argument("--max-length", type=int, default=128, help="tokens per input (longer texts are truncated)")
    ap.add_argument("--words", default="8,64", help="text length range in words, LO,HI")
    ap.add_argument("--url", default=None, help="load an already running server instead of starting one")
    ap.add_argument("--json", dest="json_path", type=Path, default=None, help="append nothing: write JSON Lines here")
    ap.add_argument("--markdown", dest="md_path", type=Path, default=None)
    args = ap.parse_args(argv)
    lo, hi = (int(v) for v in args.words.split(","))
    texts = make_texts(args.requests, (lo, hi))

    from edgekit.bench import write_jsonl
    from edgekit.info import cpu_info

    base, meta = direct(args, texts)
    route = "/predict" if meta["task"] == "text-classification" else "/embed"
    proc = None
    try:
        if args.url:
            url = args.url.rstrip("/")
        else:
            proc, url = start_server(args)
        runs0, inputs0 = batch_stats(url)
        served = asyncio.run(load(url, route, texts, args.concurrency))
        runs1, inputs1 = batch_stats(url)
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
    common = {"bench": "serve_load", **meta, "words": [lo, hi], "max_length": args.max_length, "cpu": cpu_info()}
    rows = [
        {**common, "mode": "direct", "route": None, "concurrency": 1, **base, "mean_batch": 1.0},
        {**common, "mode": "served", "route": route, "concurrency": args.concurrency, **served,
         "max_batch": args.max_batch, "max_wait_ms": args.max_wait_ms,
         "mean_batch": (inputs1 - inputs0) / (runs1 - runs0) if runs1 > runs0 else None,
         "batching_gain": served["req_per_s"] / base["req_per_s"] if base["req_per_s"] else None},
    ]
    text = markdown(rows)
    print(text)
    if args.json_path:
        write_jsonl(rows, args.json_path)
    if args.md_path:
        args.md_path.parent.mkdir(parents=True, exist_ok=True)
        args.md_path.write_text(text)


if __name__ == "__main__":
    main()
