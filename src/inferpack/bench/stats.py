"""Statistics over raw samples: nearest-rank percentiles and spread across repeats."""

from __future__ import annotations

import math
from collections.abc import Sequence

# Repeats whose throughput differs by more than this (max-min over median) are flagged.
NOISE_THRESHOLD_PCT = 10.0
PERCENTILES = (50, 90, 95, 99)


def nearest_rank(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile by nearest rank (a value that was observed; no interpolation)."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(q / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latency_summary_ms(latencies_ms: Sequence[float]) -> dict[str, float]:
    ordered = sorted(latencies_ms)
    summary = {f"p{q}": round(nearest_rank(ordered, q), 4) for q in PERCENTILES}
    summary["mean"] = round(sum(ordered) / len(ordered), 4)
    summary["min"] = round(ordered[0], 4)
    summary["max"] = round(ordered[-1], 4)
    return summary


def spread_pct(values: Sequence[float]) -> float:
    """(max - min) / median, in percent: how much repeats disagree."""
    ordered = sorted(values)
    median = ordered[len(ordered) // 2]
    return 0.0 if median == 0 else (ordered[-1] - ordered[0]) / median * 100
