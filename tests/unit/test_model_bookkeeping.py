"""Per-model bookkeeping stays small: what statistics and metrics hold for each model."""

from __future__ import annotations

import tracemalloc

from inferpack.runtime.metrics import ServingMetrics
from inferpack.runtime.statistics import BatchTiming, ModelStatistics

MODELS = 1000
# prometheus_client children took 5.4 KiB a model after one request (measured): one array
# of doubles and its table entry take a tenth of that.
MAX_METRICS_BYTES_PER_MODEL = 512


def _serve_one_request(metrics: ServingMetrics, model: str) -> None:
    metrics.loads.labels(model).inc()
    metrics.requests.labels(model).inc()
    inflight = metrics.inflight.labels(model)
    inflight.inc()
    metrics.queue_s.labels(model).observe(0.001)
    metrics.record_batch(model, 1, 0.002)
    inflight.dec()
    metrics.record_request(model, 0.003)


def test_metrics_of_a_thousand_busy_models_take_under_half_a_kib_each() -> None:
    metrics = ServingMetrics()
    names = [f"model-{index:05d}" for index in range(MODELS)]
    _serve_one_request(metrics, "warm-up")  # server-wide histograms' first samples
    tracemalloc.start()
    try:
        before, _ = tracemalloc.get_traced_memory()
        for name in names:
            _serve_one_request(metrics, name)
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (after - before) / MODELS < MAX_METRICS_BYTES_PER_MODEL
    text = metrics.render().decode()
    assert f'inferpack_queue_duration_seconds_count{{model="{names[-1]}"}} 1.0' in text
    assert f'inferpack_inflight_requests{{model="{names[-1]}"}} 0.0' in text


def test_statistics_keep_one_entry_per_batch_size_executed() -> None:
    stats = ModelStatistics()
    assert stats.batches == {}
    timing = BatchTiming(0.001, 0.002, 0.0005)
    for rows in (1, 4, 1, 4, 4):
        stats.record_batch(rows=rows, timing=timing, queue_s=[0.0])
    assert sorted(stats.batches) == [1, 4]
    assert (stats.batches[1].infer.count, stats.batches[4].infer.count) == (2, 3)
