"""What the fleet is serving, as the router sees it: per-model rate and latency, windowed.

Every inference request the router forwards (REST ``/infer`` and ``/predictions``, gRPC
``ModelInfer``) is recorded with its end-to-end time at the router and whether it failed.
Over the last ``window_s`` seconds (60 by default) each model has:

    rps       requests / the window (or / the time since the router started, if shorter)
    p50, p90  of the latencies recorded in the window
    errors    answers with a 5xx status (REST) or a non-OK code (gRPC)

Exported on the router's ``GET /metrics`` (Prometheus text; a gauge per model) and as a
demand CSV snapshot, ``GET /fleet/demand.csv`` (``model,kind,rps``: the planner's demand
format, kinds from the plan), so ``plan --demand`` can be fed the observed rates.

Memory is bounded: a model keeps at most ``max_samples`` latencies (the oldest dropped; the
count of requests stays exact). Single event loop, no locks (like the Picker).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

WINDOW_S = 60.0
MAX_SAMPLES = 100_000


@dataclass(frozen=True, slots=True)
class ModelDemand:
    model: str
    kind: str
    requests: int
    errors: int
    rps: float
    p50_ms: float | None
    p90_ms: float | None


class DemandMeter:
    """Per-model requests in a sliding window (module docstring)."""

    def __init__(
        self,
        kinds: Mapping[str, str] | None = None,
        window_s: float = WINDOW_S,
        max_samples: int = MAX_SAMPLES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.kinds = dict(kinds or {})
        self.window_s = window_s
        self._clock = clock
        self._started = clock()
        self._max_samples = max_samples
        # model -> deque of (time, latency s, failed); times increase along the deque
        self._samples: dict[str, deque[tuple[float, float, bool]]] = {}

    def record(self, model: str, latency_s: float, failed: bool = False) -> None:
        samples = self._samples.get(model)
        if samples is None:
            samples = self._samples[model] = deque(maxlen=self._max_samples)
        samples.append((self._clock(), latency_s, failed))

    def snapshot(self) -> list[ModelDemand]:
        """Every model seen in the window, by name."""
        now = self._clock()
        since = now - self.window_s
        span_s = max(min(self.window_s, now - self._started), 1e-9)
        rows = []
        for model in sorted(self._samples):
            samples = self._samples[model]
            while samples and samples[0][0] < since:
                samples.popleft()
            if not samples:
                continue
            latency_ms = np.array([s[1] for s in samples]) * 1e3
            p50, p90 = np.percentile(latency_ms, [50, 90])
            rows.append(
                ModelDemand(
                    model=model,
                    kind=self.kinds.get(model, "unknown"),
                    requests=len(samples),
                    errors=sum(1 for s in samples if s[2]),
                    rps=round(len(samples) / span_s, 6),
                    p50_ms=round(float(p50), 3),
                    p90_ms=round(float(p90), 3),
                )
            )
        return rows


def demand_csv(rows: list[ModelDemand]) -> str:
    """The planner's demand format: ``model,kind,rps``, one row per model."""
    lines = ["model,kind,rps", *(f"{r.model},{r.kind},{r.rps:g}" for r in rows)]
    return "\n".join(lines) + "\n"


def prometheus_text(rows: list[ModelDemand], window_s: float) -> str:
    """The router's /metrics: per-model gauges over the window."""
    out = [
        f"# HELP inferpack_router_model_rps Inference requests per second over the last "
        f"{window_s:g} s, by model.",
        "# TYPE inferpack_router_model_rps gauge",
        *(f'inferpack_router_model_rps{{model="{_label(r.model)}"}} {r.rps:g}' for r in rows),
        "# HELP inferpack_router_model_latency_seconds Router-side latency quantiles over "
        "the window, by model.",
        "# TYPE inferpack_router_model_latency_seconds gauge",
    ]
    for r in rows:
        for quantile, value in (("0.5", r.p50_ms), ("0.9", r.p90_ms)):
            if value is not None:
                out.append(
                    f'inferpack_router_model_latency_seconds{{model="{_label(r.model)}",'
                    f'quantile="{quantile}"}} {value / 1e3:g}'
                )
    out += [
        "# HELP inferpack_router_model_errors Failed inference requests over the window.",
        "# TYPE inferpack_router_model_errors gauge",
        *(f'inferpack_router_model_errors{{model="{_label(r.model)}"}} {r.errors}' for r in rows),
    ]
    return "\n".join(out) + "\n"


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
