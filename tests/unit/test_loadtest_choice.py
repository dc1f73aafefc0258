from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from inferpack.errors import InvalidInputError
from inferpack.loadtest.choice import (
    ModelChooser,
    parse_distribution,
    poisson_send_times_s,
    weight_probabilities,
    zipf_probabilities,
)
from inferpack.loadtest.demand import demand_load
from inferpack.loadtest.runner import _check, _shares, _stable
from inferpack.loadtest.spec import LoadSpec
from inferpack.plan.formats import Demand


def test_sequential_round_robin_from_an_offset() -> None:
    choose = ModelChooser("sequential", 3, seed=0, offset=1)
    assert [choose() for _ in range(5)] == [1, 2, 0, 1, 2]


def test_zipf_draws_follow_the_distribution() -> None:
    choose = ModelChooser("zipf:1.1", 100, seed=1)
    counts = Counter(choose() for _ in range(200_000))
    expected = zipf_probabilities(100, 1.1) * 200_000
    observed = np.array([counts[i] for i in range(100)])
    assert np.all(np.abs(observed - expected) < 5 * np.sqrt(expected) + 5)
    assert observed[0] > observed[1] > observed[9] > observed[99]


def test_uniform_is_flat() -> None:
    choose = ModelChooser("uniform", 10, seed=2)
    counts = Counter(choose() for _ in range(50_000))
    assert max(counts.values()) / min(counts.values()) < 1.1


@pytest.mark.parametrize("text", ["zipf", "zipf:0", "zipf:x", "normal", "uniform:2", "weighted:1"])
def test_bad_distribution_is_refused(text: str) -> None:
    with pytest.raises(InvalidInputError, match="sequential, uniform, weighted or zipf:S"):
        parse_distribution(text)


def test_poisson_send_times_have_the_rate() -> None:
    times = poisson_send_times_s(200.0, 50.0, seed=3)
    assert abs(len(times) / 50.0 - 200.0) < 200.0 * 0.05
    gaps = np.diff(times)
    assert abs(gaps.std() / gaps.mean() - 1.0) < 0.1  # exponential: CV of 1
    assert times[-1] < 50.0


def test_stability_needs_three_windows_within_the_band() -> None:
    window = {"throughput_rps": 100.0, "latency_p99_ms": 10.0}
    assert not _stable([window, window], 10.0)
    assert _stable([window, window, window], 10.0)
    noisy = {"throughput_rps": 100.0, "latency_p99_ms": 14.0}
    assert not _stable([window, window, noisy], 10.0)


def test_load_is_split_across_workers() -> None:
    closed = LoadSpec("http://x", ("m",), workers=3)
    assert _shares(closed, 8) == [3.0, 3.0, 2.0]
    assert _shares(closed, 2) == [1.0, 1.0]
    opened = LoadSpec("http://x", ("m",), mode="open", workers=4)
    assert _shares(opened, 100) == [25.0] * 4


def test_weighted_draws_follow_the_weights() -> None:
    weights = (30.0, 10.0, 0.0, 60.0)
    choose = ModelChooser("weighted", 4, seed=5, weights=weights)
    draws = 100_000
    counts = Counter(choose() for _ in range(draws))
    for index, weight in enumerate(weights):
        expected = draws * weight / 100
        assert abs(counts[index] - expected) <= 5 * np.sqrt(expected) + 1  # 5 sigma
    assert counts[2] == 0


@pytest.mark.parametrize(
    ("weights", "message"),
    [((1.0, 2.0), "2 weights for 3 models"), ((1.0, -1.0, 2.0), ">= 0"), ((0.0,) * 3, "not all 0")],
)
def test_bad_weights_are_refused(weights: tuple[float, ...], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        weight_probabilities(weights, 3)


def test_weights_go_with_the_weighted_distribution_only() -> None:
    with pytest.raises(InvalidInputError, match="exactly when"):
        _check(LoadSpec("http://x", ("a", "b"), distribution="uniform", weights=(1.0, 2.0)))
    with pytest.raises(InvalidInputError, match="exactly when"):
        _check(LoadSpec("http://x", ("a", "b"), distribution="weighted"))
    _check(LoadSpec("http://x", ("a", "b"), distribution="weighted", weights=(1.0, 2.0)))


def test_demand_becomes_one_rate_with_the_models_weighted_by_their_rates() -> None:
    demand = [Demand("a", "k", 30.0), Demand("b", "k", 0.0), Demand("c", "k", 10.0)]
    load = demand_load(demand, rate_scale=1.5)
    assert load.models == ("a", "b", "c") and load.weights == (30.0, 0.0, 10.0)
    assert load.rate_rps == pytest.approx(60.0)
    with pytest.raises(InvalidInputError, match="rate scale"):
        demand_load(demand, rate_scale=0.0)
    with pytest.raises(InvalidInputError, match="add up to 0"):
        demand_load([Demand("b", "k", 0.0)])
