"""Per model-version counters in the shape of Triton's statistics extension.

perf_analyzer shows the server-side split of latency (queue vs compute) only when the
server lists ``statistics`` and answers ``GET /v2/models/{m}/stats``. Counts and
nanosecond totals are kept here; the protocol layer renders them.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        self.count += count
        self.ns += int(seconds * 1e9)


@dataclass(slots=True)
class ModelStatistics:
    last_inference_ms: int = 0
    inference_count: int = 0  # rows inferred
    execution_count: int = 0  # batches run
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    batches: dict[int, Duration] = field(default_factory=lambda: defaultdict(Duration))

    def record_batch(self, rows: int, compute_s: float, queue_s: list[float]) -> None:
        self.inference_count += rows
        self.execution_count += 1
        self.compute_infer.add(compute_s, len(queue_s))
        self.batches[rows].add(compute_s)
        for wait in queue_s:
            self.queue.add(wait)

    def record_request(self, ok: bool, seconds: float) -> None:
        (self.success if ok else self.fail).add(seconds)
        self.last_inference_ms = int(time.time() * 1000)
