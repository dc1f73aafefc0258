"""Coordinator: one level at a time, workers in processes, windows until stable.

for level in levels:
    start W worker processes with their share, all aligned on one start time
    for each window (at most max_windows):
        gather every worker's samples of that window
        stable when the last 3 windows agree within ±10 % on throughput and on p99
        a worker out of its share of max_requests ends the level with that window
    stop the workers; pool the raw samples of the stable windows (or of all of them but a
    last one cut short by max_requests); the next level starts afresh
"""

from __future__ import annotations

import multiprocessing
import queue as queue_module
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from inferpack.bench.environment import describe
from inferpack.bench.stats import nearest_rank
from inferpack.errors import InvalidInputError
from inferpack.loadtest.choice import parse_distribution, weight_probabilities
from inferpack.loadtest.histogram import histogram
from inferpack.loadtest.payloads import Payload, build_payloads
from inferpack.loadtest.spec import SCHEMA, TRANSPORTS, LoadSpec
from inferpack.loadtest.worker import MAX_REQUESTS, MAX_WINDOWS, WorkerJob, run_worker

SUCCESS = {"200", "OK"}
STABLE_WINDOWS = 3
LATE_THRESHOLD_S = 0.001  # a send more than 1 ms behind its schedule is late
LATE_WARNING_FRACTION = 0.01  # perf_analyzer warns when over 1 % of sends are late
# Seconds for worker processes to start (interpreter, imports) before the shared clock.
STARTUP_S = 2.5
METHOD = (
    "Closed loop: each worker keeps its share of the concurrency in flight. Open loop: "
    "Poisson arrivals at the rate, sent on schedule whatever the server does; lateness is "
    "the delay of each send behind its schedule. After the warm-up, windows of duration/3 "
    "seconds; a request counts in the window where it finished; a level is stable when its "
    "last 3 windows agree within the stability band on throughput and p99, else it stops "
    "after max_windows and is reported unstable. Percentiles are nearest-rank over the raw "
    "latencies of the reported windows, pooled across workers (never averaged). Trace: "
    "the trace's per-model rates as Poisson arrivals, span by span, every window reported "
    "(no warm-up, no stability stop)."
)
Progress = Callable[[dict[str, Any]], None]
Record = tuple[float, str, int, float]  # latency s, status, model index, lateness s or -1
# Seconds to wait for a last report from a worker seen exited (it was sent before exiting).
LAST_REPORT_S = 1.0
STABLE = "stable"


@dataclass
class _Collected:
    """One level's windows as the coordinator assembled them, and why the level ended."""

    windows: list[dict[str, Any]] = field(default_factory=list)
    by_window: list[list[Record]] = field(default_factory=list)
    ended_by: str = MAX_WINDOWS  # stable, max_windows or max_requests


def _check(spec: LoadSpec) -> None:
    kind, _ = parse_distribution(spec.distribution)
    if (kind == "weighted") != (spec.weights is not None):
        raise InvalidInputError("give weights exactly when the distribution is weighted")
    if spec.weights is not None:
        weight_probabilities(spec.weights, len(spec.models))
    problems = []
    if spec.mode == "trace" and (
        not spec.schedule or any(len(rates) != len(spec.models) for *_, rates in spec.schedule)
    ):
        problems.append("a trace needs a schedule with one rate per model in every span")
    if spec.transport not in TRANSPORTS:
        problems.append(f"transport {spec.transport!r} is not one of {TRANSPORTS}")
    if spec.url.startswith("grpc://") != (spec.transport == "grpc"):
        problems.append(f"transport {spec.transport} does not match url {spec.url}")
    if not spec.models or not spec.levels or min(spec.levels) <= 0 or spec.workers < 1:
        problems.append("need models, positive levels and at least one worker")
    if problems:
        raise InvalidInputError("; ".join(problems))


def _stable(windows: list[dict[str, Any]], band_pct: float) -> bool:
    if len(windows) < STABLE_WINDOWS:
        return False
    last = windows[-STABLE_WINDOWS:]
    for key in ("throughput_rps", "latency_p99_ms"):
        values = [w[key] for w in last]
        mean = sum(values) / len(values)
        if mean <= 0 or any(abs(v - mean) > mean * band_pct / 100 for v in values):
            return False
    return True


def _window_summary(records: list[Record], window_s: float) -> dict[str, Any]:
    latencies = sorted(r[0] for r in records if r[1] in SUCCESS)
    return {
        "requests": len(records),
        "errors": len(records) - len(latencies),
        "throughput_rps": round(len(latencies) / window_s, 3),
        "latency_p90_ms": round(nearest_rank(latencies, 90) * 1e3, 3) if latencies else 0.0,
        "latency_p99_ms": round(nearest_rank(latencies, 99) * 1e3, 3) if latencies else 0.0,
    }


def _shares(spec: LoadSpec, level: float) -> list[float]:
    if spec.mode == "trace":  # each worker sends this share of the schedule's rates
        return [1.0 / spec.workers] * spec.workers
    if spec.mode == "open":
        return [level / spec.workers] * spec.workers
    base, extra = divmod(int(level), spec.workers)
    return [float(base + (i < extra)) for i in range(spec.workers) if base + (i < extra)]


def _run_level(
    spec: LoadSpec, payloads: list[Payload], level: float, progress: Progress | None
) -> dict[str, Any]:
    context = multiprocessing.get_context("spawn")
    reports, stop = context.Queue(), context.Event()
    shares = _shares(spec, level)
    start_at = time.monotonic() + STARTUP_S + 0.2 * len(shares)
    started_unix_s = time.time() + (start_at - time.monotonic())
    processes = []
    for index, share in enumerate(shares):
        job = WorkerJob(
            spec.url,
            spec.transport,
            payloads,
            spec.distribution,
            spec.mode,
            share,
            start_at,
            spec.warmup_s,
            spec.window_s,
            spec.max_windows,
            spec.max_requests // len(shares),
            spec.seed + 1000 * index,
            index * 7919,
            spec.weights,
            spec.schedule,
        )
        process = context.Process(target=run_worker, args=(job, reports, stop), daemon=True)
        process.start()
        processes.append(process)
    try:
        collected = _collect(spec, level, processes, reports, progress)
    finally:
        stop.set()
        for process in processes:
            process.join(timeout=spec.window_s + 30)
            if process.is_alive():
                process.terminate()
    return {**_level_result(spec, level, collected), "started_unix_s": round(started_unix_s, 3)}


def _next_report(
    processes: list[Any], reports: Any, finished: int, deadline: float
) -> tuple[int, list[Record], str | None] | None:
    """The next worker report, None after a quiet second; InvalidInputError if a worker
    exited without its last report or none came before ``deadline``."""
    try:
        report: tuple[int, list[Record], str | None] = reports.get(timeout=1.0)
        return report
    except queue_module.Empty:
        pass
    exited = [p.exitcode for p in processes if not p.is_alive()]
    if len(exited) > finished:  # its last report may have landed just after the timeout
        try:
            report = reports.get(timeout=LAST_REPORT_S)
            return report
        except queue_module.Empty:
            pass
    if len(exited) > finished or time.monotonic() > deadline:
        raise InvalidInputError(f"load generator workers stopped reporting (exit codes {exited})")
    return None


def _collect(
    spec: LoadSpec, level: float, processes: list[Any], reports: Any, progress: Progress | None
) -> _Collected:
    """Assemble windows until stable, out of windows, or a worker's budget is spent (then
    the level ends with that window: later ones would lack that worker's load)."""
    workers = len(processes)
    arrived: dict[int, list[Record]] = {}
    counts: Counter[int] = Counter()
    collected = _Collected()
    windows = collected.windows
    last = spec.max_windows  # windows [0, last) are awaited
    finished = 0  # workers that sent their last report
    deadline = time.monotonic() + STARTUP_S + spec.warmup_s + spec.window_s + 60
    while len(windows) < last:
        report = _next_report(processes, reports, finished, deadline)
        if report is None:
            continue
        window, records, ending = report
        deadline = time.monotonic() + spec.window_s + 60
        arrived.setdefault(window, []).extend(records)
        counts[window] += 1
        finished += ending is not None
        if ending == MAX_REQUESTS and window + 1 < last:
            last, collected.ended_by = window + 1, MAX_REQUESTS
        while counts[len(windows)] == workers:
            records = arrived.pop(len(windows))
            windows.append(_window_summary(records, spec.window_s))
            collected.by_window.append(records)
            if progress:
                progress({"level": level, "window": len(windows), **windows[-1]})
        if spec.mode != "trace" and _stable(windows, spec.stability_pct):
            collected.ended_by = STABLE
            break
    return collected


def _level_result(spec: LoadSpec, level: float, collected: _Collected) -> dict[str, Any]:
    windows, by_window = collected.windows, collected.by_window
    stable = spec.mode != "trace" and _stable(windows, spec.stability_pct)
    used = by_window[-STABLE_WINDOWS:] if stable else by_window
    if collected.ended_by == MAX_REQUESTS and len(used) > 1:
        used = used[:-1]  # the last window was cut short when the budget ran out
    records = [r for window in used for r in window]
    latencies = sorted(r[0] * 1e3 for r in records if r[1] in SUCCESS)
    lateness = sorted(r[3] * 1e3 for r in records if r[3] >= 0)
    measured_s = len(used) * spec.window_s
    throughput = len(latencies) / measured_s if measured_s else 0.0
    return {
        "concurrency": int(level) if spec.mode == "closed" else None,
        "trace": spec.mode == "trace",
        "rate_rps": level if spec.mode == "open" else None,
        "stable": stable,
        "ended_by": collected.ended_by,
        "windows": windows,
        "requests": len(records),
        "throughput_rps": round(throughput, 3),
        "items_per_s": round(throughput * spec.batch_size, 3),
        "latency_ms": _percentiles(latencies),
        "errors": dict(Counter(r[1] for r in records if r[1] not in SUCCESS)),
        "send_lateness_ms": _percentiles(lateness, ("p50", "p99", "max")) if lateness else None,
        "late_fraction": (
            round(sum(v > LATE_THRESHOLD_S * 1e3 for v in lateness) / len(lateness), 4)
            if lateness
            else None
        ),
        "per_model_requests": dict(Counter(spec.models[r[2]] for r in records)),
        "per_model": _per_model(spec, records, measured_s),
    }


def _per_model(spec: LoadSpec, records: list[Record], measured_s: float) -> dict[str, Any]:
    """Each requested model's achieved rate, p90, errors and latency histogram, so that a
    server of a plan can be checked against its own models' demand: histograms of the
    models on one server add up to that server's percentiles (loadtest/histogram.py)."""
    latencies: dict[int, list[float]] = {}
    errors: Counter[int] = Counter()
    for latency_s, status, index, _ in records:
        if status in SUCCESS:
            latencies.setdefault(index, []).append(latency_s * 1e3)
        else:
            errors[index] += 1
    result = {}
    for index in sorted(set(latencies) | set(errors)):
        values = sorted(latencies.get(index, ()))
        result[spec.models[index]] = {
            "requests": len(values) + errors[index],
            "achieved_rps": round(len(values) / measured_s, 3) if measured_s else 0.0,
            "p90_ms": round(nearest_rank(values, 90), 3) if values else None,
            "errors": errors[index],
            "latency_histogram": histogram(values),
        }
    return result


def _percentiles(
    values_ms: list[float], keys: tuple[str, ...] = ("p50", "p90", "p95", "p99", "max")
) -> dict[str, float]:
    if not values_ms:
        return {}
    result = {k: round(nearest_rank(values_ms, float(k[1:])), 3) for k in keys if k != "max"}
    result["max"] = round(values_ms[-1], 3)
    if "p90" in keys:
        result["mean"] = round(sum(values_ms) / len(values_ms), 3)
    return result


def _warnings(spec: LoadSpec, levels: list[dict[str, Any]]) -> list[str]:
    warnings = []
    for level in levels:
        name = (
            f"concurrency {level['concurrency']}"
            if spec.mode == "closed"
            else f"rate {level['rate_rps']} req/s"
        )
        if level["ended_by"] == MAX_REQUESTS:
            windows = len(level["windows"])
            warnings.append(
                f"{name}: not stable: stopped at --max-requests {spec.max_requests} "
                f"after {windows} window(s)"
            )
        elif not level["stable"] and spec.mode != "trace":
            warnings.append(f"{name}: not stable within {spec.max_windows} windows")
        if level["errors"]:
            warnings.append(f"{name}: errors {level['errors']}")
        if (level["late_fraction"] or 0) > LATE_WARNING_FRACTION:
            warnings.append(
                f"{name}: {level['late_fraction']:.1%} of sends were late: the generator "
                "could not keep the schedule (add --workers)"
            )
    return warnings


def run_loadtest(spec: LoadSpec, progress: Progress | None = None) -> dict[str, Any]:
    _check(spec)
    payloads = build_payloads(
        spec.url,
        spec.transport,
        spec.models,
        spec.batch_size,
        spec.seed,
        input_files=spec.input_files,
    )
    levels = [_run_level(spec, payloads, level, progress) for level in spec.levels]
    environment = describe("cpu")
    environment.pop("gpu", None)
    return {
        "schema": SCHEMA,
        "spec": spec.to_dict(),
        "environment": environment,
        "method": METHOD,
        "levels": levels,
        "warnings": _warnings(spec, levels),
    }
