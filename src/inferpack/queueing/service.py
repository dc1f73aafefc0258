"""What a simulated server is made of: a batch service-time curve and a batching policy.

The curve is measured (``inferpack bench`` per batch size, or a profile's
``batch_service_ms``); between measured sizes it is linear, beyond the largest it grows
linearly with the last segment's slope (a batch past the measured range costs at least
what the largest measured one did per extra row).
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping
from dataclasses import dataclass, field

from inferpack.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ServiceCurve:
    """Seconds one instance takes to run a batch of ``b`` rows, from measured points."""

    batch_sizes: tuple[int, ...]
    seconds: tuple[float, ...]

    def __post_init__(self) -> None:
        problems = []
        if not self.batch_sizes or len(self.batch_sizes) != len(self.seconds):
            problems.append("a service curve needs one time per batch size, at least one")
        elif list(self.batch_sizes) != sorted(set(self.batch_sizes)) or self.batch_sizes[0] < 1:
            problems.append(f"batch sizes must be distinct, >= 1 and sorted: {self.batch_sizes}")
        if any(not s > 0 for s in self.seconds):
            problems.append(f"service times must be > 0: {self.seconds}")
        if problems:
            raise ConfigError(problems)

    @classmethod
    def from_ms(cls, points: Mapping[int, float]) -> ServiceCurve:
        """``{batch size: milliseconds}`` (a profile's ``batch_service_ms``)."""
        sizes = sorted(points)
        return cls(tuple(sizes), tuple(points[b] / 1e3 for b in sizes))

    def __call__(self, rows: int) -> float:
        sizes, seconds = self.batch_sizes, self.seconds
        if len(sizes) == 1:
            return seconds[0] * max(rows, 1) / sizes[0] if rows > sizes[0] else seconds[0]
        if rows <= sizes[0]:
            return seconds[0]
        i = min(bisect.bisect_left(sizes, rows), len(sizes) - 1)
        low_b, high_b, low_s, high_s = sizes[i - 1], sizes[i], seconds[i - 1], seconds[i]
        return low_s + (high_s - low_s) * (rows - low_b) / (high_b - low_b)

    def table(self, max_rows: int) -> list[float]:
        """``table[b]`` = seconds for b rows, b in 0..max_rows (index 0 unused)."""
        return [0.0] + [self(b) for b in range(1, max_rows + 1)]


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """A model's dynamic batching, as inferpack's batcher applies it (batching/batcher.py):
    a batch forms only when one of the model's ``instances`` is free, and is due when full,
    at the largest preferred size, or when its oldest request waited ``max_queue_delay_s``."""

    max_batch_size: int = 1
    max_queue_delay_s: float = 0.0
    preferred_batch_sizes: tuple[int, ...] = ()
    instances: int = 1

    def __post_init__(self) -> None:
        problems = []
        if self.max_batch_size < 1:
            problems.append(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_queue_delay_s < 0:
            problems.append(f"max_queue_delay_s must be >= 0, got {self.max_queue_delay_s}")
        if self.instances < 1:
            problems.append(f"instances must be >= 1, got {self.instances}")
        if problems:
            raise ConfigError(problems)

    @property
    def due_rows(self) -> int:
        """Rows at which a batch goes without waiting for the delay."""
        fitting = [p for p in self.preferred_batch_sizes if p <= self.max_batch_size]
        return max(fitting) if fitting else self.max_batch_size


@dataclass(frozen=True, slots=True)
class SimModel:
    """One model on a simulated server: its Poisson request rate, batching and cost."""

    name: str
    rate_rps: float
    service: ServiceCurve
    policy: BatchPolicy = field(default_factory=BatchPolicy)
