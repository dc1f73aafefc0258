"""The router's demand meter: per-model rate and latency over a sliding window."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from inferpack.plan.formats import read_demand
from inferpack.router.demand import DemandMeter, demand_csv, prometheus_text


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_rate_latency_and_errors_over_the_window(tmp_path) -> None:  # type: ignore[no-untyped-def]
    clock = Clock()
    meter = DemandMeter({"a": "small-cnn"}, window_s=10.0, clock=clock)
    for i in range(100):  # 10 req/s for 10 s, latency 1..100 ms, every 10th failing
        clock.now += 0.1
        meter.record("a", (i + 1) / 1e3, failed=i % 10 == 0)
    [a] = meter.snapshot()
    assert (a.model, a.kind, a.requests, a.errors) == ("a", "small-cnn", 100, 10)
    assert abs(a.rps - 10.0) < 0.2 and abs(a.p50_ms - 50.5) < 1 and abs(a.p90_ms - 90.1) < 1
    clock.now += 5.0
    meter.record("b", 0.005)
    [half, b] = meter.snapshot()
    assert (half.requests, b.kind, b.requests) == (50, "unknown", 1)  # a's last 5 s
    clock.now += 6.0  # a's samples leave the window; b's (5 s later) stays
    assert [r.model for r in meter.snapshot()] == ["b"]
    clock.now += 5.0
    assert meter.snapshot() == []
    path = tmp_path / "demand.csv"
    path.write_text(demand_csv([a]))
    [row] = read_demand(path)
    assert (row.model, row.kind) == ("a", "small-cnn") and abs(row.rps - a.rps) < 1e-6


def test_prometheus_text_names_each_model() -> None:
    clock = Clock()
    meter = DemandMeter(window_s=60.0, clock=clock)
    clock.now += 2.0
    meter.record('we"ird', 0.002)
    text = prometheus_text(meter.snapshot(), 60.0)
    assert 'inferpack_router_model_rps{model="we\\"ird"} 0.5' in text
    assert 'inferpack_router_model_latency_seconds{model="we\\"ird",quantile="0.9"} 0.002' in text
    assert "# TYPE inferpack_router_model_errors gauge" in text


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.sampled_from("abc"), st.floats(0, 3), st.booleans()), max_size=200))
def test_every_recorded_request_in_the_window_is_counted_once(
    events: list[tuple[str, float, bool]],
) -> None:
    clock = Clock()
    meter = DemandMeter(window_s=1e9, max_samples=1000, clock=clock)
    for model, step_s, failed in events:
        clock.now += step_s
        meter.record(model, 0.001, failed)
    rows = {r.model: r for r in meter.snapshot()}
    for model in "abc":
        mine = [e for e in events if e[0] == model]
        if not mine:
            assert model not in rows
            continue
        assert rows[model].requests == len(mine)
        assert rows[model].errors == sum(1 for e in mine if e[2])
