"""A discrete-event simulation of one inferpack server: frontend, batchers, worker threads.

What a request goes through, as the server does it::

    arrival -> frontend (one event loop: ``frontend_s`` of CPU per request, FIFO)
            -> the model's batcher queue (dynamic batching, BatchPolicy)
            -> a batch forms when one of the model's instances is free and the batch is due
            -> the batch waits for one of the server's ``workers`` (shared by every model)
            -> it runs for service(rows) seconds -> every request of it is answered

The frontend is a single FIFO server with constant service, so its departures follow the
Lindley recursion ``d_i = max(a_i, d_{i-1}) + c``, computed vectorised:
``d_i = (i + 1) c + max_{j <= i} (a_j - j c)``. The batchers and workers are simulated event
by event (arrivals, batch completions, queue-delay timers) in one loop whose work per
request is a few list operations: the queue state has one owner and no heap entry per
request, only per batch. Arrivals are Poisson per model (or given, for traces).

CPU contention between the frontend, compute and other processes is not modelled as such:
it enters as the measured curve (its means, under load on the host) and as random service
times around it (``service_cv``, fitted to the profile's own p90s). Not modelled: deadlines
and queue limits (no request is refused), and key-split batches (all requests of a model
share one shape).
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from inferpack.queueing.service import SimModel


@dataclass(frozen=True, slots=True)
class ServerResult:
    """Per request (in arrival order): the model index, arrival and answer times (s)."""

    model: np.ndarray  # int32 [n]
    arrival_s: np.ndarray  # float64 [n]
    done_s: np.ndarray  # float64 [n]
    batches: int  # batches run
    busy_s: float  # summed worker-seconds of compute

    @property
    def latency_s(self) -> np.ndarray:
        latency: np.ndarray = self.done_s - self.arrival_s
        return latency


def poisson_arrivals(
    rates_rps: Sequence[float], duration_s: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Merged Poisson arrivals of several models over ``duration_s``: (times, model index),
    sorted by time."""
    return piecewise_arrivals([[(0.0, duration_s, rate)] for rate in rates_rps], rng)


def piecewise_arrivals(
    steps: Sequence[Sequence[tuple[float, float, float]]], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Merged Poisson arrivals whose rate is constant within each step: ``steps[k]`` lists
    model k's (start_s, end_s, rate_rps). Each step's count is Poisson, its times uniform
    (the same process); (times, model index), sorted by time."""
    times: list[np.ndarray] = []
    models: list[np.ndarray] = []
    for k, model_steps in enumerate(steps):
        for start_s, end_s, rate_rps in model_steps:
            count = rng.poisson(max(rate_rps, 0.0) * (end_s - start_s))
            times.append(rng.uniform(start_s, end_s, count))
            models.append(np.full(count, k, dtype=np.int32))
    time_s = np.concatenate(times) if times else np.empty(0)
    model = np.concatenate(models) if models else np.empty(0, dtype=np.int32)
    order = np.argsort(time_s, kind="stable")
    return time_s[order], model[order]


def frontend_departures(arrival_s: np.ndarray, frontend_s: float) -> np.ndarray:
    """Departures of a FIFO single server with constant service ``frontend_s``."""
    if frontend_s <= 0 or len(arrival_s) == 0:
        return arrival_s.copy()
    steps = np.arange(len(arrival_s)) * frontend_s
    departures: np.ndarray = np.maximum.accumulate(arrival_s - steps) + steps + frontend_s
    return departures


def simulate_server(
    models: Sequence[SimModel],
    arrival_s: np.ndarray,
    model_index: np.ndarray,
    workers: int,
    frontend_s: float = 0.0,
    *,
    service_cv: float = 0.0,
    seed: int = 0,
) -> ServerResult:
    """Run the server on given arrivals (sorted by time); every request is answered.

    ``service_cv`` > 0 makes each batch's service time random around the curve: the curve's
    time times a gamma variable of mean 1 and that coefficient of variation (a real worker
    is slowed by the event loop, the GIL, other processes and the allocator; a profile
    fits the CV to its own measured p90s, profile/calibrate.py). 0: deterministic."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if service_cv < 0:
        raise ValueError(f"service_cv must be >= 0, got {service_cv}")
    ready_s = frontend_departures(arrival_s, frontend_s)
    done_s = np.full(len(arrival_s), math.nan)
    factors = None
    if service_cv > 0 and len(arrival_s):
        shape = 1.0 / service_cv**2
        draws = np.random.default_rng(seed).gamma(shape, 1.0 / shape, size=len(arrival_s))
        factors = draws.tolist()
    batches, busy_s = _run(models, ready_s, model_index.tolist(), workers, done_s, factors=factors)
    return ServerResult(model_index, arrival_s, done_s, batches, busy_s)


def _run(
    models: Sequence[SimModel],
    ready_s: np.ndarray,
    model_of: list[int],
    workers: int,
    done_s: np.ndarray,
    *,
    factors: list[float] | None = None,
) -> tuple[int, float]:
    """The event loop; writes each request's answer time into ``done_s``."""
    sim = _Batchers(models, ready_s.tolist(), workers, done_s, factors)
    times = sim.ready
    n, i = len(times), 0
    inf = math.inf
    completions, timers = sim.completions, sim.timers
    while True:
        t_arrival = times[i] if i < n else inf
        t_done = completions[0][0] if completions else inf
        t_timer = timers[0][0] if timers else inf
        if t_done <= t_arrival and t_done <= t_timer:
            if t_done == inf:
                break
            _, m = heapq.heappop(completions)
            sim.finish(m, t_done)
        elif t_timer <= t_arrival:
            _, m = heapq.heappop(timers)
            sim.scheduled[m] = inf
            sim.dispatch(m, t_timer)
        else:
            m = model_of[i]
            sim.queues[m].append(i)
            i += 1
            sim.dispatch(m, t_arrival)
    return sim.batches, sim.busy_s


class _Batchers:
    """The state of every model's batcher and of the shared workers."""

    def __init__(
        self,
        models: Sequence[SimModel],
        ready: list[float],
        workers: int,
        done: np.ndarray,
        factors: list[float] | None = None,
    ) -> None:
        self.ready, self.done = ready, done
        self.factors = factors  # one service-time multiplier per batch (at most one per request)
        self.queues: list[deque[int]] = [deque() for _ in models]
        self.free_instances = [m.policy.instances for m in models]
        self.max_rows = [m.policy.max_batch_size for m in models]
        self.due_rows = [m.policy.due_rows for m in models]
        self.delay_s = [m.policy.max_queue_delay_s for m in models]
        self.preferred = [sorted(m.policy.preferred_batch_sizes, reverse=True) for m in models]
        self.service = [m.service.table(m.policy.max_batch_size) for m in models]
        self.scheduled = [math.inf] * len(models)  # each model's pending timer, if any
        self.free_workers = workers
        self.waiting: deque[tuple[int, list[int]]] = deque()  # formed batches, FIFO
        self.completions: list[tuple[float, int]] = []
        self.timers: list[tuple[float, int]] = []
        self.batches, self.busy_s = 0, 0.0

    def dispatch(self, m: int, now: float) -> None:
        """Form every due batch of model m that a free instance can take."""
        queue = self.queues[m]
        while queue and self.free_instances[m]:
            if len(queue) < self.due_rows[m]:
                due = self.ready[queue[0]] + self.delay_s[m]
                if now < due:
                    if due < self.scheduled[m]:
                        self.scheduled[m] = due
                        heapq.heappush(self.timers, (due, m))
                    return
            rows = self._rows(m, len(queue))
            batch = [queue.popleft() for _ in range(rows)]
            self.free_instances[m] -= 1
            self._start_or_wait(m, batch, now)

    def _rows(self, m: int, queued: int) -> int:
        fits = min(queued, self.max_rows[m])
        for size in self.preferred[m]:
            if size <= fits:
                return size
        return fits

    def _start_or_wait(self, m: int, batch: list[int], now: float) -> None:
        if self.free_workers:
            self.free_workers -= 1
            self._start(m, batch, now)
        else:
            self.waiting.append((m, batch))

    def _start(self, m: int, batch: list[int], now: float) -> None:
        took = self.service[m][len(batch)]
        if self.factors is not None:
            took *= self.factors[self.batches]
        end = now + took
        self.done[batch] = end
        self.batches += 1
        self.busy_s += took
        heapq.heappush(self.completions, (end, m))

    def finish(self, m: int, now: float) -> None:
        """A batch of model m ended: its instance and worker are free again."""
        self.free_instances[m] += 1
        if self.waiting:
            waiting_m, batch = self.waiting.popleft()
            self._start(waiting_m, batch, now)
        else:
            self.free_workers += 1
        self.dispatch(m, now)
