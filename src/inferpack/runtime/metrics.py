"""Prometheus metrics of one server, sized for thousands of models.

Each Engine owns its registry (no process-global state), so several servers can share a
process (tests) and /metrics shows exactly one server.

Cost per model is what keeps a scrape cheap: a per-model histogram is ~20 series, and
five of them made /metrics 7.5 MB with 1,000 models. So, per model, only counters (a
summary is two: ``_count`` and ``_sum``), shown from first use and dropped by
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

A resident model that serves nothing shows one series. In memory, all of a model's values
sit in one array of doubles (:class:`_ModelSeries`: 0.2 KiB a model) rather than in a
prometheus_client child per series, each with its own lock and value objects (5.4 KiB a
model once it had served a request, measured); failure counts take a dict only for models
that failed. The per-model families keep prometheus_client's call shape
(``metrics.requests.labels(m).inc()``). They are updated on the event loop only; rendering
reads them from another thread, from snapshots of the model tables.

Distributions are kept once for the whole server (per-model means come from the
summaries; per-model batch sizes from the statistics extension, GET /v2/models/{m}/stats):

    inferpack_request_latency_seconds                histogram over every model
    inferpack_batch_size                             histogram: rows per executed batch
    inferpack_model_load_duration_seconds            histogram: time to load and warm
    inferpack_model_evictions_total                  models unloaded to fit the budget

``*_created`` series are not rendered (they would double every counter). Rendering takes
time in proportion to the series: call :meth:`ServingMetrics.render` off the event loop.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, SummaryMetricFamily
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

# Where each per-model value sits in a model's array; a summary takes two (count, sum).
_LOADS, _REQUESTS, _INFLIGHT, _REQUEST_S, _QUEUE_S, _COMPUTE_S = 0, 1, 2, 3, 5, 7
_INFERENCE_COUNT, _EXECUTION_COUNT, _VALUES = 9, 10, 11
# NaN marks a series never used: it is not rendered (a model shows what it has done).
_UNUSED_ROW = array("d", [math.nan] * _VALUES)

__all__ = ["CONTENT_TYPE", "ServingMetrics"]


def _add(values: array[float], index: int, amount: float) -> None:
    old = values[index]
    values[index] = amount if math.isnan(old) else old + amount


class _ModelSeries:
    """The per-model values of every model: one array of doubles per model (NaN: unused),
    and failure counts by reason for models that failed. Mutated on the event loop only."""

    __slots__ = ("failures", "values")

    def __init__(self) -> None:
        self.values: dict[str, array[float]] = {}
        self.failures: dict[str, dict[str, float]] = {}

    def of(self, model: str) -> array[float]:
        values = self.values.get(model)
        if values is None:
            values = self.values[model] = array("d", _UNUSED_ROW)
        return values


class _Value:
    """One model's series in prometheus_client's child shape (inc, dec, set, observe)."""

    __slots__ = ("_index", "_values")

    def __init__(self, values: array[float], index: int) -> None:
        self._values = values
        self._index = index

    def inc(self, amount: float = 1.0) -> None:
        _add(self._values, self._index, amount)

    def dec(self, amount: float = 1.0) -> None:
        _add(self._values, self._index, -amount)

    def set(self, value: float) -> None:
        self._values[self._index] = value

    def observe(self, seconds: float) -> None:
        """A summary's observation: count + 1, sum + ``seconds``."""
        _add(self._values, self._index, 1.0)
        _add(self._values, self._index + 1, seconds)


@dataclass(frozen=True, slots=True)
class _Family:
    """A per-model family: ``labels(model)`` gives the model's series, as a labelled
    prometheus_client metric does; :meth:`collect` renders every model that used it."""

    name: str
    documentation: str
    kind: str  # counter, gauge or summary
    index: int
    store: _ModelSeries

    def labels(self, model: str) -> _Value:
        return _Value(self.store.of(model), self.index)

    def collect(self, rows: list[tuple[str, array[float]]]) -> Metric:
        used = [(model, values) for model, values in rows if not math.isnan(values[self.index])]
        if self.kind == "summary":
            summary = SummaryMetricFamily(self.name, self.documentation, labels=["model"])
            for model, values in used:
                count, total = values[self.index], values[self.index + 1]
                summary.add_metric([model], count_value=int(count), sum_value=total)
            return summary
        kind = CounterMetricFamily if self.kind == "counter" else GaugeMetricFamily
        family = kind(self.name, self.documentation, labels=["model"])
        for model, values in used:
            family.add_metric([model], values[self.index])
        return family


class _PerModelCollector(Collector):  # type: ignore[misc]
    """Renders the per-model families and the failure counts from :class:`_ModelSeries`."""

    def __init__(self, families: tuple[_Family, ...], store: _ModelSeries) -> None:
        self._families = families
        self._store = store

    def describe(self) -> Iterator[Metric]:
        return self._collect([], [])

    def collect(self) -> Iterator[Metric]:
        # Snapshots taken in C under the GIL: the event loop may add models meanwhile.
        failures = [(m, list(r.items())) for m, r in list(self._store.failures.items())]
        return self._collect(list(self._store.values.items()), failures)

    def _collect(
        self,
        rows: list[tuple[str, array[float]]],
        failures: list[tuple[str, list[tuple[str, float]]]],
    ) -> Iterator[Metric]:
        for family in self._families:
            yield family.collect(rows)
        failed = CounterMetricFamily(
            "inferpack_request_failures",
            "Inference requests that failed, by error",
            labels=["model", "reason"],
        )
        for model, reasons in failures:
            for reason, count in reasons:
                failed.add_metric([model, reason], count)
        yield failed


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
        self._store = _ModelSeries()
        counter, gauge, summary = "counter", "gauge", "summary"
        self.requests = self._family(
            "inferpack_requests", "Inference requests received", counter, _REQUESTS
        )
        self.request_s = self._family(
            "inferpack_request_duration_seconds", "Request latency", summary, _REQUEST_S
        )
        self.queue_s = self._family(
            "inferpack_queue_duration_seconds", "Time queued", summary, _QUEUE_S
        )
        self.compute_s = self._family(
            "inferpack_compute_duration_seconds",
            "Batch execution time (per batch)",
            summary,
            _COMPUTE_S,
        )
        self.inference_count = self._family(
            "inferpack_inference_count", "Rows inferred", counter, _INFERENCE_COUNT
        )
        self.execution_count = self._family(
            "inferpack_execution_count", "Batches executed", counter, _EXECUTION_COUNT
        )
        self.inflight = self._family(
            "inferpack_inflight_requests",
            "Requests accepted and not yet answered",
            gauge,
            _INFLIGHT,
        )
        self.loads = self._family("inferpack_model_loads", "Model loads started", counter, _LOADS)
        self.registry.register(
            _PerModelCollector(
                (
                    self.requests,
                    self.request_s,
                    self.queue_s,
                    self.compute_s,
                    self.inference_count,
                    self.execution_count,
                    self.inflight,
                    self.loads,
                ),
                self._store,
            )
        )
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

    def _family(self, name: str, documentation: str, kind: str, index: int) -> _Family:
        return _Family(name, documentation, kind, index, self._store)

    def record_request(self, model: str, seconds: float) -> None:
        """One answered request: its model's summary and the server-wide histogram."""
        self.request_s.labels(model).observe(seconds)
        self.request_latency_s.observe(seconds)

    def record_batch(self, model: str, rows: int, compute_s: float) -> None:
        self.batch_size.observe(rows)
        values = self._store.of(model)
        _add(values, _COMPUTE_S, 1.0)
        _add(values, _COMPUTE_S + 1, compute_s)
        _add(values, _INFERENCE_COUNT, rows)
        _add(values, _EXECUTION_COUNT, 1.0)

    def record_failure(self, model: str, reason: str) -> None:
        reasons = self._store.failures.setdefault(model, {})
        reasons[reason] = reasons.get(reason, 0.0) + 1.0

    def record_load(self, seconds: float) -> None:
        """A load that succeeded, in the server-wide histogram."""
        self.load_s.observe(seconds)

    def record_eviction(self) -> None:
        self.evictions.inc()

    def forget(self, model: str) -> None:
        """Drop every series of ``model`` (call when it is unloaded or evicted).

        A later request or load starts its counters from zero again, which Prometheus
        reads as a counter reset (``rate()`` handles it)."""
        self._store.values.pop(model, None)
        self._store.failures.pop(model, None)

    def render(self) -> bytes:
        """The exposition text. Blocking and proportional to the series: run it off the loop."""
        return generate_latest(_WithoutCreated(self.registry))
