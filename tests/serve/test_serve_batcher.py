"""The batcher alone, with a fake model: grouping, ordering, isolation of a failing request, draining on close."""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from edgekit.serve.batcher import Batcher, BatcherClosed
from edgekit.serve.metrics import Metrics


class Recorder:
    """run_fn that returns each row's value and its batch size, records the batch sizes, fails on a negative row."""

    def __init__(self, gate: threading.Event | None = None):
        self.sizes: list[int] = []
        self.gate = gate

    def __call__(self, rows):
        if self.gate is not None:
            self.gate.wait(5)
        if any(r < 0 for r in rows):
            raise ValueError("negative row")
        self.sizes.append(len(rows))
        return np.array([[r, len(rows)] for r in rows], dtype=np.float32)


def test_concurrent_submits_share_runs_and_get_their_own_rows():
    rec = Recorder()
    b = Batcher(rec, max_batch=8, max_wait_ms=100)
    b.start()

    async def go():
        return await asyncio.gather(*(b.submit([i]) for i in range(20)))

    outs = asyncio.run(go())
    b.close()
    assert [int(o[0, 0]) for o in outs] == list(range(20))
    assert sum(rec.sizes) == 20 and max(rec.sizes) <= 8 and len(rec.sizes) < 20


def test_a_request_larger_than_max_batch_is_split_and_reassembled_in_order():
    rec = Recorder()
    b = Batcher(rec, max_batch=4, max_wait_ms=0)
    b.start()
    out = asyncio.run(b.submit(list(range(10))))
    b.close()
    assert out[:, 0].tolist() == list(range(10))
    assert max(rec.sizes) <= 4


def test_a_failing_request_does_not_fail_its_batch_neighbours():
    gate = threading.Event()  # hold the worker until all three jobs are queued, so they share one batch
    rec = Recorder(gate)
    b = Batcher(rec, max_batch=8, max_wait_ms=200)
    b.start()

    async def go():
        tasks = [asyncio.ensure_future(b.submit(rows)) for rows in ([1], [-1], [2, 3])]
        await asyncio.sleep(0.05)
        gate.set()
        return await asyncio.gather(*tasks, return_exceptions=True)

    good, bad, good2 = asyncio.run(go())
    b.close()
    assert isinstance(bad, ValueError)
    assert good[:, 0].tolist() == [1] and good2[:, 0].tolist() == [2, 3]


def test_close_finishes_queued_work_then_refuses_more():
    gate = threading.Event()
    rec = Recorder(gate)
    metrics = Metrics()
    b = Batcher(rec, max_batch=2, max_wait_ms=0, metrics=metrics)
    b.start()

    async def go():
        tasks = [asyncio.ensure_future(b.submit([i])) for i in range(6)]
        await asyncio.sleep(0.05)
        assert metrics.queue_depth._value.get() >= 4  # the worker holds one batch, the rest wait
        closing = asyncio.ensure_future(asyncio.to_thread(b.close))
        await asyncio.sleep(0.05)
        with pytest.raises(BatcherClosed):
            await b.submit([99])
        gate.set()
        await closing
        return await asyncio.gather(*tasks)

    outs = asyncio.run(go())
    assert [int(o[0, 0]) for o in outs] == list(range(6))
    assert metrics.queue_depth._value.get() == 0
