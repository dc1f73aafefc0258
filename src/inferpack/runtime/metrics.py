"""Prometheus metrics of one server, sized for thousands of models.

Each Engine owns its registry (no process-global state), so several servers can share a
process (tests) and /metrics shows exactly one server.

Cost per model is what keeps a scrape cheap: a per-model histogram is ~20 series, and
five of them made /metrics 7.5 MB with 1,000 models. So, per model, only counters (a
summary is two: ``_count`` and ``_sum``), created on first use and dropped by
:meth:`ServingMetrics.forget` when the model is unloaded or evicted:

    inferpack_requests_total{model}                  requests received
    inferpack_request_failures_total{model,reason}   failed requests, by error reason
    inferpack_request_duration_seconds{model}        summary: answered requests, seconds
    inferpack_queue_duration_seconds{model}          summary: time queued
    inferpack_compute_duration_seconds{model}        summary: batch execution time
    inferpack_inference_count_total{model}           rows inferred
    inferpack_execution_count_total{model}           batches executed
    inferpack_inflight_requests{model}               gauge: accepted, not yet answered
    inferpack_model_loads_total{model}               loads started

A resident model that serves nothing shows one series. Distributions are kept once for the
whole server (per-model means come from the summaries; per-model batch sizes from the
statistics extension, GET /v2/models/{m}/stats):

    inferpack_request_latency_seconds                histogram over every model
    inferpack_batch_size                             histogram: rows per executed batch
    inferpack_model_load_duration_seconds            histogram: time to load and warm
    inferpack_model_evictions_total                  models unloaded to fit the budget

``*_created`` series are not rendered (they would double every counter). Rendering takes
the collectors' own locks: call :meth:`ServingMetrics.render` off the event loop.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Summary,
    generate_latest,
)
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

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
# 10 ms (a tiny model from a warm disk) to 60 s (a large model from an object store).
_LOAD_BUCKETS_S = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_CREATED_SUFFIX = "_created"

__all__ = ["CONTENT_TYPE", "ServingMetrics"]


class _WithoutCreated(Collector):  # type: ignore[misc]
    """A registry view that leaves out ``*_created`` samples (what generate_latest needs)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self._registry.collect():
            family.samples = [s for s in family.samples if not s.name.endswith(_CREATED_SUFFIX)]
            yield family


class ServingMetrics:
    """The server's metrics; per-model series live from first use until :meth:`forget`.

    Attributes keep the prometheus_client call shape (``metrics.requests.labels(m).inc()``);
    the ``record_*`` methods cover events that feed more than one series.
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = self._counter("inferpack_requests", "Inference requests received")
        self.failures = Counter(
            "inferpack_request_failures",
            "Inference requests that failed, by error",
            ["model", "reason"],
            registry=self.registry,
        )
        self.request_s = self._summary("inferpack_request_duration_seconds", "Request latency")
        self.queue_s = self._summary("inferpack_queue_duration_seconds", "Time queued")
        self.compute_s = self._summary(
            "inferpack_compute_duration_seconds", "Batch execution time (per batch)"
        )
        self.inference_count = self._counter("inferpack_inference_count", "Rows inferred")
        self.execution_count = self._counter("inferpack_execution_count", "Batches executed")
        self.inflight = Gauge(
            "inferpack_inflight_requests",
            "Requests accepted and not yet answered",
            ["model"],
            registry=self.registry,
        )
        self.loads = self._counter("inferpack_model_loads", "Model loads started")
        self.load_s = Histogram(
            "inferpack_model_load_duration_seconds",
            "Time to load and warm a model, every model",
            buckets=_LOAD_BUCKETS_S,
            registry=self.registry,
        )
        self.request_latency_s = Histogram(
            "inferpack_request_latency_seconds",
            "Request latency, every model",
            buckets=_LATENCY_BUCKETS_S,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "inferpack_batch_size",
            "Rows per executed batch, every model",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.evictions = Counter(
            "inferpack_model_evictions",
            "Models unloaded to stay within the memory budget",
            registry=self.registry,
        )
        self._per_model = (
            self.requests,
            self.request_s,
            self.queue_s,
            self.compute_s,
            self.inference_count,
            self.execution_count,
            self.inflight,
            self.loads,
        )
        self._failure_reasons: dict[str, set[str]] = {}

    def _counter(self, name: str, documentation: str) -> Counter:
        return Counter(name, documentation, ["model"], registry=self.registry)

    def _summary(self, name: str, documentation: str) -> Summary:
        return Summary(name, documentation, ["model"], registry=self.registry)

    def record_request(self, model: str, seconds: float) -> None:
        """One answered request: its model's summary and the server-wide histogram."""
        self.request_s.labels(model).observe(seconds)
        self.request_latency_s.observe(seconds)

    def record_batch(self, model: str, rows: int, compute_s: float) -> None:
        self.batch_size.observe(rows)
        self.compute_s.labels(model).observe(compute_s)
        self.inference_count.labels(model).inc(rows)
        self.execution_count.labels(model).inc()

    def record_failure(self, model: str, reason: str) -> None:
        self._failure_reasons.setdefault(model, set()).add(reason)
        self.failures.labels(model, reason).inc()

    def record_load(self, seconds: float) -> None:
        """A load that succeeded, in the server-wide histogram."""
        self.load_s.observe(seconds)

    def record_eviction(self) -> None:
        self.evictions.inc()

    def forget(self, model: str) -> None:
        """Drop every series of ``model`` (call when it is unloaded or evicted).

        A later request or load starts its counters from zero again, which Prometheus
        reads as a counter reset (``rate()`` handles it)."""
        for metric in self._per_model:
            with contextlib.suppress(KeyError):  # older prometheus_client raise when absent
                metric.remove(model)
        for reason in self._failure_reasons.pop(model, set()):
            with contextlib.suppress(KeyError):
                self.failures.remove(model, reason)

    def render(self) -> bytes:
        """The exposition text. Blocking and proportional to the series: run it off the loop."""
        return generate_latest(_WithoutCreated(self.registry))
