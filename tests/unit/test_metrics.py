"""ServingMetrics: what one model costs in /metrics, and that forget() leaves nothing behind."""

from __future__ import annotations

from inferpack.runtime.metrics import ServingMetrics


def _series(text: str, model: str) -> list[str]:
    return [line for line in text.splitlines() if f'model="{model}"' in line]


def _serve_one_request(metrics: ServingMetrics, model: str) -> None:
    metrics.loads.labels(model).inc()
    metrics.record_load(0.2)
    metrics.requests.labels(model).inc()
    metrics.inflight.labels(model).inc()
    metrics.queue_s.labels(model).observe(0.001)
    metrics.record_batch(model, 4, 0.01)
    metrics.inflight.labels(model).dec()
    metrics.record_request(model, 0.02)
    metrics.record_failure(model, "invalid_input")
    metrics.record_failure(model, "overloaded")


def test_forget_removes_every_series_of_the_model_and_only_it() -> None:
    metrics = ServingMetrics()
    _serve_one_request(metrics, "gone")
    _serve_one_request(metrics, "kept")
    before = metrics.render().decode()
    assert len(_series(before, "gone")) == len(_series(before, "kept")) > 10

    metrics.forget("gone")

    after = metrics.render().decode()
    assert _series(after, "gone") == []
    assert _series(after, "kept") == _series(before, "kept")
    metrics.forget("never-seen")  # no series: nothing to do, no error


def test_a_resident_idle_model_costs_one_series() -> None:
    metrics = ServingMetrics()
    metrics.loads.labels("idle").inc()
    metrics.record_load(0.5)
    text = metrics.render().decode()
    assert _series(text, "idle") == ['inferpack_model_loads_total{model="idle"} 1.0']
    assert 'inferpack_model_load_duration_seconds_bucket{le="0.5"} 1.0' in text


def test_a_serving_model_has_no_histogram_and_no_created_series() -> None:
    metrics = ServingMetrics()
    _serve_one_request(metrics, "m")
    text = metrics.render().decode()
    assert _series(text, "m")
    assert not any("_bucket" in line for line in _series(text, "m"))
    assert "_created" not in text
    # The distributions are server-wide, once.
    assert 'inferpack_request_latency_seconds_bucket{le="0.025"} 1.0' in text
    assert 'inferpack_batch_size_bucket{le="4.0"} 1.0' in text


def test_evictions_are_counted_for_the_server() -> None:
    metrics = ServingMetrics()
    metrics.record_eviction()
    metrics.record_eviction()
    assert "inferpack_model_evictions_total 2.0" in metrics.render().decode()


def test_a_thousand_busy_models_render_in_well_under_a_megabyte_each_hundred() -> None:
    metrics = ServingMetrics()
    for index in range(1000):
        name = f"model-{index:04d}"
        metrics.loads.labels(name).inc()
        metrics.record_load(0.1)
        metrics.requests.labels(name).inc()
        metrics.inflight.labels(name).set(0)
        metrics.queue_s.labels(name).observe(0.001)
        metrics.record_batch(name, 1, 0.001)
        metrics.record_request(name, 0.002)
    # 11 series per busy model; with per-model histograms it was 7.5 MB.
    assert len(metrics.render()) < 1_000_000
