"""Prometheus metrics of one server (its own registry, so several apps can live in one process).

Names start with ``edgekit_``: requests by route and status, errors by route and kind, request
latency, batch size (inputs per session run), inference time per batch, time spent queued, queue
depth and tokens processed.
"""
from __future__ import annotations

from typing import Sequence

from prometheus_client import (CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics,
                               generate_latest)

#: request latency buckets (seconds): from a cached tiny model to a long batch on a busy CPU
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The server's metric families; ``render()`` gives the Prometheus text exposition."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self, model: str = "", runtime: str = "", task: str = "", precision: str = ""):
        disable_created_metrics()  # the *_created series double the output and no dashboard reads them
        self.registry = r = CollectorRegistry(auto_describe=True)
        self.requests = Counter("edgekit_requests", "HTTP requests by route and status code",
                                ["route", "status"], registry=r)
        self.errors = Counter("edgekit_errors", "Requests answered with an error, by route and kind",
                              ["route", "kind"], registry=r)
        self.latency = Histogram("edgekit_request_duration_seconds", "Time from request to response, by route",
                                 ["route"], buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("edgekit_batch_size", "Inputs per session run", buckets=BATCH_BUCKETS,
                                    registry=r)
        self.inference = Histogram("edgekit_inference_duration_seconds", "Session run time per batch",
                                   buckets=LATENCY_BUCKETS, registry=r)
        self.queue_time = Histogram("edgekit_queue_duration_seconds", "Time a request's inputs waited for a batch",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.queue_depth = Gauge("edgekit_queue_depth", "Inputs waiting for a batch", registry=r)
        self.tokens = Counter("edgekit_tokens", "Tokens run through the model (special tokens included)",
                              ["route"], registry=r)
        info = Gauge("edgekit_model_info", "The served model (value 1)", ["model", "runtime", "task", "precision"],
                     registry=r)
        info.labels(model=model, runtime=runtime, task=task, precision=precision).set(1)

    def observe_batch(self, size: int, seconds: float, waits: Sequence[float]) -> None:
        self.batch_size.observe(size)
        self.inference.observe(seconds)
        for w in waits:
            self.queue_time.observe(w)

    def render(self) -> bytes:
        return generate_latest(self.registry)
