"""Which model each request goes to, and when open-loop requests are sent.

sequential: round robin (each worker starts at its own offset); uniform: independent
draws; zipf:S: model of rank k (1-based, in the order given) with probability
proportional to k^-S; weighted: model i with probability w_i / sum(w), the weights given
beside the models (``LoadSpec.weights``, e.g. each model's rate from a demand CSV). Draws
come in pre-computed chunks so choosing costs nothing on the hot path.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from inferpack.errors import InvalidInputError

_CHUNK = 65536


def zipf_probabilities(count: int, exponent: float) -> np.ndarray:
    weights = np.arange(1, count + 1, dtype=np.float64) ** -exponent
    probabilities: np.ndarray = weights / weights.sum()
    return probabilities


def parse_distribution(text: str) -> tuple[str, float]:
    name, _, value = text.partition(":")
    if name in {"sequential", "uniform", "weighted"} and not value:
        return name, 0.0
    if name == "zipf":
        try:
            exponent = float(value)
        except ValueError:
            exponent = -1.0
        if exponent > 0:
            return name, exponent
    raise InvalidInputError(
        f"distribution {text!r}: use sequential, uniform, weighted or zipf:S with S > 0"
    )


def weight_probabilities(weights: Sequence[float], count: int) -> np.ndarray:
    """``weights`` normalised to sum 1; InvalidInputError unless there is one finite,
    non-negative weight per model and their sum is positive."""
    values = np.asarray(weights, dtype=np.float64)
    if values.shape != (count,):
        raise InvalidInputError(f"weighted: {len(values)} weights for {count} models")
    if not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() <= 0:
        raise InvalidInputError("weighted: weights must be finite, >= 0, and not all 0")
    probabilities: np.ndarray = values / values.sum()
    return probabilities


class ModelChooser:
    def __init__(
        self,
        distribution: str,
        count: int,
        seed: int,
        offset: int = 0,
        weights: Sequence[float] | None = None,
    ) -> None:
        self.kind, exponent = parse_distribution(distribution)
        self.count = count
        self._rng = np.random.default_rng(seed)
        self._p: np.ndarray | None = None
        if self.kind == "zipf":
            self._p = zipf_probabilities(count, exponent)
        elif self.kind == "weighted":
            self._p = weight_probabilities(weights or (), count)
        self._next = offset % count
        self._chunk: list[int] = []

    def __call__(self) -> int:
        if self.kind == "sequential":
            index = self._next
            self._next = (index + 1) % self.count
            return index
        if not self._chunk:
            drawn = self._rng.choice(self.count, size=_CHUNK, p=self._p)
            self._chunk = drawn.tolist()[::-1]
        return self._chunk.pop()


def poisson_send_times_s(rate_rps: float, duration_s: float, seed: int) -> np.ndarray:
    """Offsets (s) of a Poisson process at ``rate_rps`` over ``duration_s``."""
    rng = np.random.default_rng(seed)
    expected = int(rate_rps * duration_s * 1.2) + 16
    gaps = rng.exponential(1.0 / rate_rps, size=expected)
    times = np.cumsum(gaps)
    while times[-1] < duration_s:
        more = np.cumsum(rng.exponential(1.0 / rate_rps, size=expected)) + times[-1]
        times = np.concatenate([times, more])
    return times[times < duration_s]


def trace_sends(
    schedule: Sequence[tuple[float, float, Sequence[float]]], share: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Send offsets (s) and model indices for a trace: in each span, a Poisson process at
    ``share`` of the span's total rate whose every arrival picks model i with probability
    r_i / R (the superposition of the models' own Poisson processes)."""
    rng = np.random.default_rng(seed)
    times, models = [np.zeros(0)], [np.zeros(0, dtype=np.int64)]
    for number, (start, end, rates) in enumerate(schedule):
        total = float(sum(rates)) * share
        if total <= 0 or end <= start:
            continue
        offsets = start + poisson_send_times_s(total, end - start, seed + 7 * number + 1)
        p = np.asarray(rates, dtype=np.float64)
        times.append(offsets)
        models.append(rng.choice(len(p), size=len(offsets), p=p / p.sum()))
    return np.concatenate(times), np.concatenate(models)
