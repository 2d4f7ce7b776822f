"""Several native sessions in one process, run from several Python threads at once (the serve app and user code
do this): every output must equal the same session's output for the same input run alone. The sessions share the
library's one thread pool (with different thread counts) and a session's runs take turns, so outputs are
bit-identical, not merely close. The soak (slow) checks that 10,000 runs leave the resident memory flat."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edgekit.runtimes import load


def _inputs(seed=0):
    """Four inputs of different shapes, one with padding (the engine drops padded tokens per row)."""
    rng = np.random.default_rng(seed)
    out = []
    for batch, seq in ((1, 16), (2, 33), (3, 64), (1, 128)):
        ids = rng.integers(1000, 5000, (batch, seq), dtype=np.int64)
        ids[:, 0] = 101
        mask = np.ones_like(ids)
        if batch > 1:
            mask[1, seq // 2:] = 0
        out.append({"input_ids": ids, "attention_mask": mask})
    return out


def test_sessions_run_from_many_threads(quick_fe_artifact, quick_cls_artifact):
    # two sessions with different thread counts: the shared pool is resized between their runs
    sessions = [load(quick_fe_artifact[0], "native", threads=2), load(quick_cls_artifact[0], "native", threads=1)]
    feeds = _inputs()
    expected = [[s.run(f) for f in feeds] for s in sessions]

    def job(worker: int) -> int:
        checked = 0
        for i in range(25):
            si, fi = (worker + i) % len(sessions), (worker * 7 + i) % len(feeds)
            got = sessions[si].run(feeds[fi])
            np.testing.assert_array_equal(got, expected[si][fi], err_msg=f"session {si}, input {fi}, run {i}")
            checked += 1
        return checked

    with ThreadPoolExecutor(max_workers=4) as ex:
        assert sum(ex.map(job, range(4))) == 100


def test_one_session_from_many_threads(quick_fe_artifact):
    """The same session from four threads at once: its runs must not see each other's inputs."""
    sess = load(quick_fe_artifact[0], "native", threads=2)
    feeds = _inputs(seed=1)
    expected = [sess.run(f) for f in feeds]

    def job(worker: int) -> None:
        for i in range(25):
            fi = (worker + i) % len(feeds)
            np.testing.assert_array_equal(sess.run(feeds[fi]), expected[fi], err_msg=f"input {fi}, run {i}")

    with ThreadPoolExecutor(max_workers=4) as ex:
        list(ex.map(job, range(4)))


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_soak_memory_stays_flat(quick_cls_artifact, capsys):
    """10,000 runs after a warm-up: resident memory grows by less than 5% (a leak of even a few hundred bytes a run
    would show; allocator noise stays well inside)."""
    sess = load(quick_cls_artifact[0], "native", threads=2)
    feeds = _inputs(seed=2)
    for i in range(500):  # warm-up: buffers grown to the largest input, allocator arenas settled
        sess.run(feeds[i % len(feeds)])
    before = _rss_bytes()
    for i in range(10_000):
        sess.run(feeds[i % len(feeds)])
    after = _rss_bytes()
    growth = (after - before) / before
    with capsys.disabled():
        print(f"\nsoak: RSS {before / 2**20:.1f} MiB -> {after / 2**20:.1f} MiB after 10,000 runs ({growth:+.2%})")
    assert growth < 0.05


def _spin(seconds: float) -> None:
    import time

    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_outputs_stay_bit_identical_while_other_processes_hold_the_cores(quick_fe_artifact):
    """With a spinning process on every CPU the pool's workers get descheduled mid-job and the pool switches to
    running jobs on the caller alone for a while (edgekit._kernels.pool_solo_jobs counts them); either way every
    run must give the quiet run's output exactly."""
    import multiprocessing as mp

    sess = load(quick_fe_artifact[0], "native", threads=2)
    feeds = _inputs(seed=2)
    expected = [sess.run(f) for f in feeds]
    ctx = mp.get_context("spawn")
    spinners = [ctx.Process(target=_spin, args=(30.0,), daemon=True) for _ in range(os.cpu_count() or 2)]
    for p in spinners:
        p.start()
    try:
        for i in range(300):
            np.testing.assert_array_equal(sess.run(feeds[i % len(feeds)]), expected[i % len(feeds)], err_msg=f"run {i}")
    finally:
        for p in spinners:
            p.terminate()
            p.join()
