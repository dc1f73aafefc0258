"""Pooled latency histograms: percentiles of the union within one bucket (5 %)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from inferpack.bench.stats import nearest_rank
from inferpack.loadtest.histogram import (
    RATIO,
    bucket_of,
    histogram,
    pooled_percentile_ms,
    upper_edge_ms,
)


@settings(max_examples=60, deadline=None)
@given(
    groups=st.lists(
        st.lists(st.floats(0.02, 5_000.0, allow_nan=False), min_size=1, max_size=200),
        min_size=1,
        max_size=6,
    ),
    percentile=st.sampled_from([50.0, 90.0, 99.0]),
)
def test_pooled_percentile_is_within_one_bucket_of_the_exact_one(
    groups: list[list[float]], percentile: float
) -> None:
    exact = nearest_rank(sorted(v for g in groups for v in g), percentile)
    pooled = pooled_percentile_ms([histogram(g) for g in groups], percentile)
    assert pooled is not None
    assert exact <= pooled * (1 + 1e-9) <= exact * RATIO * (1 + 1e-6)


def test_buckets_cover_their_edges() -> None:
    for value in np.geomspace(0.011, 60_000, 500):
        bucket = bucket_of(float(value))
        assert upper_edge_ms(bucket - 1) < value <= upper_edge_ms(bucket) * (1 + 1e-9)
    assert pooled_percentile_ms([], 90) is None
