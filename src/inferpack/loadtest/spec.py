"""What a load test does: where, which models, how much load, for how long at most."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SCHEMA = "inferpack.loadtest/1"
TRANSPORTS = ("http-json", "http-binary", "grpc")


@dataclass(frozen=True, slots=True)
class LoadSpec:
    url: str  # http://host:port or grpc://host:port
    models: tuple[str, ...]
    transport: str = "http-binary"
    # closed: concurrency levels; open: Poisson rate levels; trace: the schedule's rates
    mode: str = "closed"
    levels: tuple[float, ...] = (1,)
    distribution: str = "sequential"  # sequential | uniform | weighted | zipf:S
    weights: tuple[float, ...] | None = None  # weighted: one per model, any positive scale
    batch_size: int = 1
    duration_s: float = 10.0  # measured time per level when stable: 3 windows
    warmup_s: float = 2.0
    max_windows: int = 10  # a level stops unstable after this many windows
    stability_pct: float = 10.0
    workers: int = 1  # client processes
    max_requests: int = 1_000_000  # per level, all workers together
    seed: int = 0
    # (input name, file): every row of that input is the file's bytes, a BYTES element
    # (an image or text upload, docs/processing.md); then only these inputs are sent.
    input_files: tuple[tuple[str, str], ...] = ()
    # trace: (start s, end s, each model's rps) spans over duration_s (plan/trace.py
    # segments), measured in windows of trace_window_s, none of them skipped as warm-up
    schedule: tuple[tuple[float, float, tuple[float, ...]], ...] = ()
    trace_window_s: float = 5.0

    @property
    def window_s(self) -> float:
        return self.trace_window_s if self.mode == "trace" else self.duration_s / 3

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["window_s"] = self.window_s
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}
