from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from inferpack.errors import InvalidInputError
from inferpack.loadtest.choice import (
    ModelChooser,
    parse_distribution,
    poisson_send_times_s,
    zipf_probabilities,
)
from inferpack.loadtest.runner import _shares, _stable
from inferpack.loadtest.spec import LoadSpec


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


@pytest.mark.parametrize("text", ["zipf", "zipf:0", "zipf:x", "normal", "uniform:2"])
def test_bad_distribution_is_refused(text: str) -> None:
    with pytest.raises(InvalidInputError, match="sequential, uniform or zipf:S"):
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
