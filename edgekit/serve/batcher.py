"""Dynamic batching: inputs from requests that arrive together run as one session call.

One worker thread owns the session. Requests put a job (their token rows) on a queue and await a
future; the worker takes the first waiting job, then keeps taking jobs until the batch holds
``max_batch`` rows or ``max_wait_ms`` has passed since it started gathering, runs them as one call,
and hands each job its slice of the output on the event loop. A request with more rows than
``max_batch`` is cut into several jobs. If a batch fails, its jobs are retried one by one, so a
single bad request cannot fail the requests it happened to share a batch with.

>>> b = Batcher(model.run, max_batch=32, max_wait_ms=2)      # doctest: +SKIP
>>> b.start(); vectors = await b.submit(rows); b.close()    # doctest: +SKIP
"""
from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .metrics import Metrics

log = logging.getLogger("edgekit.serve")

_STOP = object()


class BatcherClosed(RuntimeError):
    """The server is shutting down and takes no new work."""


@dataclass
class _Job:
    rows: Sequence[Any]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future
    enqueued: float = field(default_factory=time.perf_counter)


def _settle(fut: asyncio.Future, result=None, error: BaseException | None = None) -> None:
    if fut.done():  # the client went away and the request was cancelled
        return
    if error is not None:
        fut.set_exception(error)
    else:
        fut.set_result(result)


def _reply(job: _Job, result=None, error: BaseException | None = None) -> None:
    try:
        job.loop.call_soon_threadsafe(_settle, job.future, result, error)
    except RuntimeError:  # the event loop is already closed: nobody is waiting any more
        pass


class Batcher:
    """Runs ``run_fn(rows) -> array[len(rows), ...]`` on one thread, over batches gathered from many callers."""

    def __init__(self, run_fn: Callable[[Sequence[Any]], np.ndarray], max_batch: int = 32, max_wait_ms: float = 2.0,
                 metrics: Metrics | None = None):
        if max_batch < 1 or max_wait_ms < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_ms >= 0; got {max_batch}, {max_wait_ms}")
        self._run_fn, self.max_batch, self._max_wait = run_fn, max_batch, max_wait_ms / 1000.0
        self._metrics = metrics
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._closed = False
        self._pending = 0  # rows waiting in the queue
        self._thread = threading.Thread(target=self._work, name="edgekit-batcher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    @property
    def pending(self) -> int:
        return self._pending

    async def submit(self, rows: Sequence[Any]) -> np.ndarray:
        """Queue ``rows`` and wait for their outputs, stacked in order."""
        if not rows:
            raise ValueError("nothing to run")
        loop = asyncio.get_running_loop()
        jobs = []
        with self._lock:
            if self._closed:
                raise BatcherClosed("the server is shutting down")
            for i in range(0, len(rows), self.max_batch):
                job = _Job(rows[i : i + self.max_batch], loop, loop.create_future())
                jobs.append(job)
                self._pending += len(job.rows)
                self._queue.put(job)
            self._gauge()
        outs = await asyncio.gather(*(j.future for j in jobs))
        return outs[0] if len(outs) == 1 else np.concatenate(outs, axis=0)

    def close(self, timeout: float | None = None) -> None:
        """Take no new work, finish every queued job, then stop the worker thread (blocking)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- worker thread ---------------------------------------------------------------------------------------

    def _gauge(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.set(self._pending)

    def _take(self, job: _Job) -> None:
        with self._lock:
            self._pending -= len(job.rows)
            self._gauge()

    def _work(self) -> None:
        carry = None
        while True:
            first = carry if carry is not None else self._queue.get()
            carry = None
            if first is _STOP:
                return
            self._take(first)
            batch, rows = [first], len(first.rows)
            deadline = time.perf_counter() + self._max_wait
            while rows < self.max_batch:
                left = deadline - time.perf_counter()
                try:
                    nxt = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is _STOP or rows + len(nxt.rows) > self.max_batch:
                    carry = nxt  # runs next time (or stops the loop after this batch)
                    break
                self._take(nxt)
                batch.append(nxt)
                rows += len(nxt.rows)
            try:
                self._run(batch)
            except BaseException as exc:  # noqa: BLE001 - never leave a request waiting on a dead worker
                log.exception("the batcher failed")
                for job in batch:
                    _reply(job, error=exc)

    def _run(self, batch: list[_Job]) -> None:
        rows = [r for job in batch for r in job.rows]
        t0 = time.perf_counter()
        try:
            out = self._run_fn(rows)
        except Exception as exc:  # noqa: BLE001 - reported to the awaiting requests
            if len(batch) > 1:
                log.warning("a batch of %d requests failed (%s); retrying them one by one", len(batch), exc)
                for job in batch:
                    self._run([job])
                return
            log.error("inference failed: %s", exc)
            _reply(batch[0], error=exc)
            return
        if self._metrics is not None:
            self._metrics.observe_batch(len(rows), time.perf_counter() - t0,
                                        [t0 - job.enqueued for job in batch])
        start = 0
        for job in batch:
            part = out[start : start + len(job.rows)]
            start += len(job.rows)
            _reply(job, part)
