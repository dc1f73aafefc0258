"""Per model-version counters in the shape of Triton's statistics extension.

perf_analyzer shows the server-side split of latency (queue vs compute) only when the
server lists ``statistics`` and answers ``GET /v2/models/{m}/stats``; it refuses the
answer unless compute_input, compute_infer and compute_output carry the same count.
Counts and nanosecond totals are kept here; the protocol layer renders them.

Triton's semantics, which these counters follow:

- ``inference_count`` counts rows (a request of batch 8 adds 8), ``execution_count``
  counts model executions (one per batch the dynamic batcher formed).
- ``success`` / ``fail``: one per request, with its end-to-end server time.
- ``queue`` and ``compute_*``: one per successful request; queue runs from arrival in the
  model's batcher until a worker thread starts its batch (waiting for a free worker of a
  shared pool is queueing, as in Triton, where queue ends when execution starts). A
  batch's compute time is attributed in full to each request in it (a batch of 4 taking
  2 ms adds count 4 and 8 ms), so ``ns / count`` is the compute time a request saw.
- ``batches``: per batch size in rows, one per execution with that execution's time.

The compute phases of one execution (:class:`BatchTiming`): *input* joins the requests'
tensors into one batch, *infer* is the backend's run (which includes its host-device
copies: backends do not time those apart), *output* splits the outputs back by request.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class BatchTiming:
    """Seconds one batch execution spent in each compute phase (see the module doc)."""

    input_s: float
    infer_s: float
    output_s: float


@dataclass(slots=True)
class Duration:
    """A count of occurrences and their total duration in nanoseconds."""

    count: int = 0
    ns: int = 0

    def add(self, seconds: float, count: int = 1) -> None:
        """Record ``count`` occurrences that each lasted ``seconds``."""
        self.count += count
        self.ns += round(seconds * 1e9) * count


@dataclass(slots=True)
class ComputeDurations:
    """The three compute phases, always recorded together so their counts agree."""

    input: Duration = field(default_factory=Duration)
    infer: Duration = field(default_factory=Duration)
    output: Duration = field(default_factory=Duration)

    def add(self, timing: BatchTiming, count: int = 1) -> None:
        self.input.add(timing.input_s, count)
        self.infer.add(timing.infer_s, count)
        self.output.add(timing.output_s, count)


@dataclass(slots=True)
class ModelStatistics:
    """Cumulative statistics of one model version since it was loaded.

    Mutated only on the event loop (never from instance worker threads), so no lock. A
    model holds one of these per loaded version whether it serves or not: fixed-size
    counters, plus one entry in ``batches`` per batch size it has executed."""

    last_inference_ms: int = 0
    inference_count: int = 0  # rows inferred
    execution_count: int = 0  # batches run
    success: Duration = field(default_factory=Duration)
    fail: Duration = field(default_factory=Duration)
    queue: Duration = field(default_factory=Duration)
    compute: ComputeDurations = field(default_factory=ComputeDurations)
    batches: dict[int, ComputeDurations] = field(default_factory=dict)

    def record_batch(self, rows: int, timing: BatchTiming, queue_s: Sequence[float]) -> None:
        """One successful execution of ``rows`` rows for ``len(queue_s)`` requests, each of
        which waited ``queue_s[i]`` seconds in the queue."""
        self.inference_count += rows
        self.execution_count += 1
        self.compute.add(timing, len(queue_s))
        batch = self.batches.get(rows)
        if batch is None:
            batch = self.batches[rows] = ComputeDurations()
        batch.add(timing)
        for wait in queue_s:
            self.queue.add(wait)

    def record_request(self, ok: bool, seconds: float) -> None:
        (self.success if ok else self.fail).add(seconds)
        self.last_inference_ms = int(time.time() * 1000)
