"""Latency histograms that pool: per-model results that add up to a server's percentiles.

A load test reports each model's p90, but a plan's server holds many models and its p90 is
a percentile of all their requests together, which no combination of per-model p90s gives.
So every model's latencies are also kept as counts in fixed geometric buckets (each 5 %
wider than the last, from 10 µs): histograms of any set of models add bucket by bucket,
and a percentile read from the sum is within 5 % of the exact one. Stored sparse
(``{bucket: count}``), a model with 3,000 requests costs a few dozen numbers.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping

RATIO = 1.05
FIRST_MS = 0.01


def bucket_of(latency_ms: float) -> int:
    """Index of the bucket holding ``latency_ms``: (FIRST_MS x RATIO^(i-1), FIRST_MS x RATIO^i]."""
    if latency_ms <= FIRST_MS:
        return 0
    return math.ceil(math.log(latency_ms / FIRST_MS, RATIO) - 1e-12)


def upper_edge_ms(bucket: int) -> float:
    return FIRST_MS * RATIO**bucket


def histogram(latencies_ms: Iterable[float]) -> dict[str, int]:
    """Sparse counts keyed by bucket index (as text: the result is JSON)."""
    counts = Counter(bucket_of(v) for v in latencies_ms)
    return {str(k): counts[k] for k in sorted(counts)}


def pooled_percentile_ms(
    histograms: Iterable[Mapping[str, int]], percentile: float
) -> float | None:
    """The nearest-rank percentile of the pooled histograms (the bucket's upper edge)."""
    total: Counter[int] = Counter()
    for counts in histograms:
        for key, count in counts.items():
            total[int(key)] += count
    size = sum(total.values())
    if not size:
        return None
    rank = max(1, math.ceil(percentile / 100 * size))
    seen = 0
    for bucket in sorted(total):
        seen += total[bucket]
        if seen >= rank:
            return round(upper_edge_ms(bucket), 3)
    return None  # unreachable: rank <= size
