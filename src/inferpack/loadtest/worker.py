"""One client process: keeps its share of the load and reports each window's samples.

Windows are aligned on a shared monotonic start time: window k covers
[start + warmup + k*window, start + warmup + (k+1)*window). A request counts in the window
in which it finished. After each window the worker sends its samples to the coordinator
as ``(window, records, ending)`` and stops when told to (stable, or out of windows) or
when its request budget is spent. ``ending`` is None while more windows follow, else why
this is the worker's last report: ``stopped``, ``max_windows`` or ``max_requests``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from inferpack.loadtest.choice import ModelChooser, poisson_send_times_s, trace_sends
from inferpack.loadtest.payloads import Payload
from inferpack.loadtest.transports import open_transport

# Open loop: requests in flight at most per worker, so an overloaded server cannot make
# the generator grow without bound; sends beyond it wait (and show up as lateness).
MAX_IN_FLIGHT = 4096
# Open loop: how long before a scheduled send the worker stops sleeping and yields instead.
SPIN_S = 0.002
STOPPED, MAX_WINDOWS, MAX_REQUESTS = "stopped", "max_windows", "max_requests"


@dataclass
class WorkerJob:
    url: str
    transport: str
    payloads: list[Payload]
    distribution: str
    mode: str
    level_share: float  # concurrency (closed) or rate (open) of this worker
    start_at: float  # time.monotonic() value shared by all workers
    warmup_s: float
    window_s: float
    max_windows: int
    max_requests: int
    seed: int
    offset: int
    weights: tuple[float, ...] | None = None  # distribution "weighted": one per payload
    schedule: tuple[tuple[float, float, tuple[float, ...]], ...] = ()  # mode "trace"


@dataclass
class _Samples:
    """Raw records: (sent, ended, status, model index, lateness s or -1)."""

    records: list[tuple[float, float, str, int, float]] = field(default_factory=list)
    sent: int = 0


def run_worker(job: WorkerJob, reports: Any, stop: Any) -> None:
    """Process entry point: ``reports`` is a multiprocessing queue, ``stop`` an event."""
    asyncio.run(_main(job, reports, stop))


async def _main(job: WorkerJob, reports: Any, stop: Any) -> None:
    transport = open_transport(job.url, job.transport)
    samples = _Samples()
    done = asyncio.Event()
    choose = ModelChooser(job.distribution, len(job.payloads), job.seed, job.offset, job.weights)

    async def one(index: int, lateness_s: float) -> None:
        sent = time.monotonic()
        status = await transport.send(job.payloads[index])
        samples.records.append((sent, time.monotonic(), status, index, lateness_s))

    async def closed_client() -> None:
        while not done.is_set() and samples.sent < job.max_requests:
            samples.sent += 1
            await one(choose(), -1.0)

    async def open_sender() -> None:
        if job.mode == "trace":
            times, chosen = trace_sends(job.schedule, job.level_share, job.seed)
        else:
            horizon_s = job.warmup_s + job.window_s * job.max_windows
            times = poisson_send_times_s(job.level_share, horizon_s, job.seed)
            chosen = None
        in_flight: set[asyncio.Task[None]] = set()
        for number, offset in enumerate(times):
            if done.is_set() or samples.sent >= job.max_requests:
                break
            await _sleep_until(job.start_at + offset)
            while len(in_flight) >= MAX_IN_FLIGHT:
                await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
            lateness = time.monotonic() - (job.start_at + offset)
            samples.sent += 1
            index = choose() if chosen is None else int(chosen[number])
            task = asyncio.create_task(one(index, lateness))
            in_flight.add(task)
            task.add_done_callback(in_flight.discard)
        if in_flight:
            await asyncio.wait(in_flight)

    await asyncio.sleep(max(0.0, job.start_at - time.monotonic()))
    if job.mode == "closed":
        load = [asyncio.create_task(closed_client()) for _ in range(int(job.level_share))]
    else:
        load = [asyncio.create_task(open_sender())]
    await _report_windows(job, samples, reports, stop, done)
    for task in load:
        task.cancel()
    await asyncio.gather(*load, return_exceptions=True)
    await transport.close()


async def _sleep_until(due: float) -> None:
    """Sleep until ``due`` (monotonic s) within ~0.1 ms: epoll timeouts round up to whole
    milliseconds, so sleep to just before and yield to the loop for the rest."""
    early = due - time.monotonic() - SPIN_S
    if early > 0:
        await asyncio.sleep(early)
    while time.monotonic() < due:
        await asyncio.sleep(0)


async def _report_windows(
    job: WorkerJob, samples: _Samples, reports: Any, stop: Any, done: asyncio.Event
) -> None:
    measure_from = job.start_at + job.warmup_s
    for window in range(job.max_windows):
        end = measure_from + (window + 1) * job.window_s
        await asyncio.sleep(max(0.0, end - time.monotonic()))
        begin = end - job.window_s
        inside = [r for r in samples.records if begin <= r[1] < end]
        samples.records = [r for r in samples.records if r[1] >= end]
        ending = _ending(job, samples, stop, window)
        reports.put((window, [(r[1] - r[0], r[2], r[3], r[4]) for r in inside], ending))
        if ending is not None:
            break
        await asyncio.sleep(0)
    done.set()


def _ending(job: WorkerJob, samples: _Samples, stop: Any, window: int) -> str | None:
    """Why ``window`` is this worker's last report, or None if more follow."""
    if stop.is_set():
        return STOPPED
    if samples.sent >= job.max_requests:
        return MAX_REQUESTS
    return MAX_WINDOWS if window == job.max_windows - 1 else None
