"""The server simulator against queueing theory and against the batcher's own rules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferpack.errors import ConfigError
from inferpack.queueing.server import (
    frontend_departures,
    poisson_arrivals,
    simulate_server,
)
from inferpack.queueing.service import BatchPolicy, ServiceCurve, SimModel

SERVICE_S = 0.010


def _one(rate_rps: float, policy: BatchPolicy, curve: ServiceCurve | None = None) -> SimModel:
    return SimModel("m", rate_rps, curve or ServiceCurve((1,), (SERVICE_S,)), policy)


def test_md1_mean_latency_matches_pollaczek_khinchine() -> None:
    """Batch 1, no delay, one instance and worker: an M/D/1 queue. Mean time in system is
    s + rho s / (2 (1 - rho)); at rho = 0.7 that is 21.67 ms."""
    rate = 70.0
    rho = rate * SERVICE_S
    times, models = poisson_arrivals([rate], 3000.0, np.random.default_rng(1))
    result = simulate_server([_one(rate, BatchPolicy())], times, models, workers=1)
    expected = SERVICE_S + rho * SERVICE_S / (2 * (1 - rho))
    assert result.latency_s.mean() == pytest.approx(expected, rel=0.03)
    assert result.batches == len(times)


def test_random_service_times_follow_pollaczek_khinchine() -> None:
    """service_cv 1 draws exponential service times: an M/M/1 queue, mean time in system
    s / (1 - rho) (33.3 ms at rho 0.7); cv 0.5 sits between it and M/D/1 (P-K: the wait
    scales with 1 + cv^2)."""
    rate = 70.0
    rho = rate * SERVICE_S
    times, models = poisson_arrivals([rate], 3000.0, np.random.default_rng(1))
    model = [_one(rate, BatchPolicy())]
    mm1 = simulate_server(model, times, models, workers=1, service_cv=1.0, seed=3)
    assert mm1.latency_s.mean() == pytest.approx(SERVICE_S / (1 - rho), rel=0.05)
    assert mm1.busy_s / len(times) == pytest.approx(SERVICE_S, rel=0.02)
    half = simulate_server(model, times, models, workers=1, service_cv=0.5, seed=3)
    wait = rho * SERVICE_S * (1 + 0.25) / (2 * (1 - rho))
    assert half.latency_s.mean() == pytest.approx(SERVICE_S + wait, rel=0.05)
    again = simulate_server(model, times, models, workers=1, service_cv=0.5, seed=3)
    assert np.array_equal(again.done_s, half.done_s)  # the seed decides the draws
    with pytest.raises(ValueError, match="service_cv"):
        simulate_server(model, times, models, workers=1, service_cv=-1.0)


def test_md2_with_two_instances_waits_less_than_md1() -> None:
    """Two instances and workers at the same load: M/D/2 waits far less (Erlang-C bound)."""
    rate = 140.0  # rho = 0.7 per server
    times, models = poisson_arrivals([rate], 2000.0, np.random.default_rng(2))
    two = simulate_server([_one(rate, BatchPolicy(instances=2))], times, models, workers=2)
    wait_ms = 1e3 * (two.latency_s.mean() - SERVICE_S)
    # M/M/2 at rho 0.7 waits 9.6 ms; deterministic service halves it roughly (~4.9 ms).
    assert 3.5 < wait_ms < 6.5


def test_a_lone_request_waits_the_queue_delay() -> None:
    """One request on an idle server with max_batch_size 8 and a 5 ms delay: answered at
    5 ms + its batch's service; two arriving 1 ms apart share one batch."""
    policy = BatchPolicy(max_batch_size=8, max_queue_delay_s=0.005)
    curve = ServiceCurve((1, 8), (0.002, 0.009))
    times = np.array([0.0, 0.001, 1.0])
    result = simulate_server(
        [_one(1, policy, curve)], times, np.zeros(3, dtype=np.int32), workers=1
    )
    assert result.done_s[:2].tolist() == pytest.approx([0.005 + 0.003] * 2)
    assert result.done_s[2] == pytest.approx(1.005 + 0.002)
    assert result.batches == 2


def test_a_full_batch_goes_without_waiting_for_the_delay() -> None:
    policy = BatchPolicy(max_batch_size=4, max_queue_delay_s=1.0)
    curve = ServiceCurve((1, 4), (0.001, 0.004))
    times = np.array([0.0, 0.0001, 0.0002, 0.0003])
    result = simulate_server(
        [_one(1, policy, curve)], times, np.zeros(4, dtype=np.int32), workers=1
    )
    assert result.done_s.tolist() == pytest.approx([0.0003 + 0.004] * 4)


def test_preferred_sizes_cut_the_batch() -> None:
    """Seven queued behind a busy instance, preferred 4: batches of 4, then 3 (the rest)."""
    policy = BatchPolicy(max_batch_size=8, preferred_batch_sizes=(4,))
    curve = ServiceCurve((1, 8), (0.001, 0.008))
    times = np.array([0.0] + [0.0001 * k for k in range(1, 8)])
    result = simulate_server(
        [_one(1, policy, curve)], times, np.zeros(8, dtype=np.int32), workers=1
    )
    assert result.batches == 3  # 1 alone (idle server), then 4, then 3
    assert result.done_s[0] == pytest.approx(0.001)
    assert len(set(result.done_s[1:5].round(9))) == 1
    assert len(set(result.done_s[5:].round(9))) == 1


def test_workers_are_shared_by_models() -> None:
    """Two models, one worker: the second model's batch waits for the first's."""
    curve = ServiceCurve((1,), (0.010,))
    models = [SimModel(n, 1, curve) for n in ("a", "b")]
    times = np.array([0.0, 0.001])
    result = simulate_server(models, times, np.array([0, 1], dtype=np.int32), workers=1)
    assert result.done_s.tolist() == pytest.approx([0.010, 0.020])
    both = simulate_server(models, times, np.array([0, 1], dtype=np.int32), workers=2)
    assert both.done_s.tolist() == pytest.approx([0.010, 0.011])


def test_frontend_is_a_fifo_server() -> None:
    arrivals = np.array([0.0, 0.0, 0.0, 1.0, 1.0005])
    departures = frontend_departures(arrivals, 0.001)
    assert departures.tolist() == pytest.approx([0.001, 0.002, 0.003, 1.001, 1.002])


def test_service_curve_interpolates_and_extrapolates() -> None:
    curve = ServiceCurve.from_ms({1: 2.0, 4: 5.0, 8: 7.0})
    assert curve(1) == pytest.approx(0.002)
    assert curve(2) == pytest.approx(0.003)
    assert curve(6) == pytest.approx(0.006)
    assert curve(16) == pytest.approx(0.011)  # beyond: the last segment's slope
    with pytest.raises(ConfigError, match="sorted"):
        ServiceCurve((4, 1), (0.1, 0.1))
    with pytest.raises(ConfigError, match="> 0"):
        ServiceCurve((1,), (0.0,))


@settings(max_examples=40, deadline=None)
@given(
    rates=st.lists(st.floats(1, 400), min_size=1, max_size=5),
    max_batch=st.integers(1, 16),
    delay_ms=st.floats(0, 20),
    instances=st.integers(1, 3),
    workers=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_every_request_is_answered_once_and_never_before_it_arrived(
    rates: list[float], max_batch: int, delay_ms: float, instances: int, workers: int, seed: int
) -> None:
    policy = BatchPolicy(max_batch, delay_ms / 1e3, instances=instances)
    curve = ServiceCurve((1, 16), (0.001, 0.006))
    models = [SimModel(f"m{k}", r, curve, policy) for k, r in enumerate(rates)]
    times, index = poisson_arrivals(rates, 2.0, np.random.default_rng(seed))
    result = simulate_server(models, times, index, workers, frontend_s=0.0001)
    if len(times) == 0:  # a slow model over 2 s may send nothing
        assert result.batches == 0 and result.busy_s == 0
        return
    assert not np.isnan(result.done_s).any()
    assert (result.latency_s >= 0.001 - 1e-12).all()  # at least one batch's service
    # No batch holds more than max_batch rows; compute is never more than the workers had.
    assert result.batches >= math.ceil(len(times) / max_batch)
    assert result.busy_s <= workers * (result.done_s.max() - times.min()) + 1e-9
    if instances == 1:  # one instance per model: each model answers in arrival order
        for k in range(len(rates)):
            answered = result.done_s[index == k]
            assert (np.diff(answered) >= -1e-12).all()
