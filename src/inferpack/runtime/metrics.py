"""Prometheus metrics of one server: per model requests, failures, latencies, batch sizes.

Each Engine owns its registry (no process-global state), so several servers can share a
process (tests) and /metrics shows exactly one server.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Latency buckets from 100 us to 30 s: covers a tiny MLP on CPU and a large batch on a GPU.
_LATENCY_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)

__all__ = ["CONTENT_TYPE", "ServingMetrics"]


class ServingMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        model = ["model"]
        self.requests = Counter(
            "inferpack_requests", "Inference requests received", model, registry=self.registry
        )
        self.failures = Counter(
            "inferpack_request_failures",
            "Inference requests that failed, by error",
            ["model", "reason"],
            registry=self.registry,
        )
        self.request_s = self._histogram("inferpack_request_duration_seconds", "Request latency")
        self.queue_s = self._histogram("inferpack_queue_duration_seconds", "Time queued")
        self.compute_s = self._histogram(
            "inferpack_compute_duration_seconds", "Batch execution time (per batch)"
        )
        self.batch_size = Histogram(
            "inferpack_batch_size",
            "Rows per executed batch",
            model,
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.inference_count = Counter(
            "inferpack_inference_count", "Rows inferred", model, registry=self.registry
        )
        self.execution_count = Counter(
            "inferpack_execution_count", "Batches executed", model, registry=self.registry
        )
        self.inflight = Gauge(
            "inferpack_inflight_requests",
            "Requests accepted and not yet answered",
            model,
            registry=self.registry,
        )
        self.loads = Counter(
            "inferpack_model_loads", "Model loads started", model, registry=self.registry
        )
        self.load_s = Histogram(
            "inferpack_model_load_duration_seconds",
            "Time to load and warm a model",
            model,
            buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0),
            registry=self.registry,
        )
        self.evictions = Counter(
            "inferpack_model_evictions",
            "Models unloaded to stay within the memory budget",
            model,
            registry=self.registry,
        )

    def _histogram(self, name: str, documentation: str) -> Histogram:
        return Histogram(
            name, documentation, ["model"], buckets=_LATENCY_BUCKETS_S, registry=self.registry
        )

    def record_batch(self, model: str, rows: int, compute_s: float) -> None:
        self.batch_size.labels(model).observe(rows)
        self.compute_s.labels(model).observe(compute_s)
        self.inference_count.labels(model).inc(rows)
        self.execution_count.labels(model).inc()

    def record_failure(self, model: str, reason: str) -> None:
        self.failures.labels(model, reason).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
