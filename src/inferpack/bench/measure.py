"""Timing loops: N data-parallel instances run batches back to back on their own threads.

Every batch's start and end are kept. After a warm-up, the measured span is cut into
``repeats`` equal windows; a batch counts in the window where it ended (perf_analyzer's
rule: only requests that finish inside a window count). Throughput per window shows
noise; latencies are pooled over all windows.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from inferpack.bench.stats import NOISE_THRESHOLD_PCT, latency_summary_ms, spread_pct


@dataclass(slots=True)
class Timing:
    batch_latency_ms: list[float]
    repeats: list[dict[str, float]]
    items_per_s: float
    latency_ms: dict[str, float]
    throughput_spread_pct: float
    noisy: bool


def run_instances(
    runners: Sequence[Callable[[], object]], warmup_s: float, duration_s: float
) -> list[tuple[float, float]]:
    """Run each runner on its own thread until the deadline; return (start, end) per call."""
    spans: list[tuple[float, float]] = []
    lock = threading.Lock()
    start = time.perf_counter()
    deadline = start + warmup_s + duration_s

    def loop(run: Callable[[], object]) -> None:
        local: list[tuple[float, float]] = []
        while (began := time.perf_counter()) < deadline:
            run()
            local.append((began - start, time.perf_counter() - start))
        with lock:
            spans.extend(local)

    threads = [threading.Thread(target=loop, args=(run,), daemon=True) for run in runners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return spans


def summarise(
    spans: list[tuple[float, float]],
    batch_size: int,
    warmup_s: float,
    duration_s: float,
    repeats: int,
) -> Timing:
    window_s = duration_s / repeats
    measured = [(s, e) for s, e in spans if s >= warmup_s and e <= warmup_s + duration_s]
    if not measured:
        raise RuntimeError(
            f"no batch finished inside the {duration_s} s window: raise --duration-s"
        )
    per_window: list[dict[str, float]] = []
    for index in range(repeats):
        low, high = warmup_s + index * window_s, warmup_s + (index + 1) * window_s
        inside = [(s, e) for s, e in measured if low <= e < high]
        latencies = sorted((e - s) * 1e3 for s, e in inside)
        per_window.append(
            {
                "items_per_s": round(len(inside) * batch_size / window_s, 3),
                "latency_p50_ms": round(latencies[len(latencies) // 2], 4) if latencies else 0.0,
            }
        )
    latencies_ms = [(e - s) * 1e3 for s, e in measured]
    spread = spread_pct([w["items_per_s"] for w in per_window])
    return Timing(
        batch_latency_ms=[round(v, 4) for v in latencies_ms],
        repeats=per_window,
        items_per_s=round(len(measured) * batch_size / duration_s, 3),
        latency_ms=latency_summary_ms(latencies_ms),
        throughput_spread_pct=round(spread, 2),
        noisy=spread > NOISE_THRESHOLD_PCT,
    )
