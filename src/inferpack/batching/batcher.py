"""Dynamic batcher: one bounded queue per model, batches formed only when an instance is free.

Contract (what callers and tests rely on):
- ``submit(payload, rows, key, deadline_s=None) -> Future`` decides admission at once:
  UnavailableError (503) once closing or once the scheduler has stopped; InvalidInputError
  (400) when ``rows`` is outside 1..the batch limit (such a request could never be
  batched); OverloadedError (429, with a retry hint) when the queue holds ``max_queue_size``
  requests.
- Every accepted future resolves exactly once, unless its caller cancels it: with its
  result, the executor's exception, DeadlineExceededError or UnavailableError. No future is
  left pending by an executor that raises or is cancelled, by a scheduler that fails, or by
  ``close()``.
- A batch holds >= 1 request, at most the batch limit in rows, all with the same ``key``
  (requests whose non-batch shapes differ are never mixed). The batch limit is
  ``max_batch_rows``, capped by the largest bucket when ``buckets`` are given.
- A batch is formed only when an instance is free (so batches grow under load, as in
  Triton). Each key's batch is due when full, when it reaches the largest preferred size,
  or when the key's oldest queued request has waited ``max_queue_delay_s`` (the delay
  counts from the first arrival, not the last). Any due key is dispatched: a request of one
  key never holds back a due batch of another (text models queue one key per padded
  length). When several keys are due, the key whose oldest request is oldest goes first.
- With preferred sizes, the batch is the largest queue prefix whose row count is a
  preferred size; if none, the largest prefix that fits.
- Buckets (the batch sizes a compiled model runs at) are preferred sizes: the preferred
  sizes that are buckets, or every bucket when none is. The batcher never waits longer to
  reach one; a batch between buckets is padded by the executor, not here. Callers split a
  request larger than the largest bucket (:func:`inferpack.batching.buckets.chunk_rows`).
- Deadlines: ``deadline_s`` is in the event loop's clock (``loop.time()``). A request whose
  deadline has passed is never run: it fails with DeadlineExceededError when its deadline
  passes while queued (the scheduler wakes at the earliest deadline, even while every
  instance is busy). A request already running is not interrupted.
- ``execute(instance, items)`` must return one result per item; a result that is an
  exception instance fails its request alone (a python model's per-request error); a
  length mismatch or an exception fails every request of that batch and no other, and is
  logged with the model's name and its cause once per batch, not once per request. A
  running batch that is cancelled fails its requests with UnavailableError. The instance
  is free again in every case.
- Cancelled requests (client gone) are dropped before running; their futures stay
  cancelled.
- If the scheduler stops for any reason (a bug, cancellation), every queued request fails
  with UnavailableError and submit refuses new ones.
- ``close()`` refuses new work, dispatches queued requests at once (no queue delay), waits
  for running batches, then returns with the scheduler stopped. If ``close()`` itself is
  cancelled, queued and running requests fail with UnavailableError.
- An idle batcher costs no task: the scheduler starts with the first request after
  ``start()`` and returns once nothing is queued (the next request starts it again). A
  server holding thousands of resident models keeps no coroutine, event or timer for each
  model that serves nothing; only a scheduler that fails or is cancelled stops the batcher.

The batcher knows no metrics, tensors or backends: it is pure asyncio and testable with
fake executors and events.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from inferpack.batching.buckets import batch_limit, preferred_sizes
from inferpack.errors import (
    DeadlineExceededError,
    InvalidInputError,
    OverloadedError,
    UnavailableError,
)

P = TypeVar("P")
R = TypeVar("R")

log = logging.getLogger(__name__)

# Weight of the newest batch duration in the moving average behind Retry-After.
_EWMA_WEIGHT = 0.2


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    max_batch_rows: int = 1
    max_queue_delay_s: float = 0.0
    preferred_rows: tuple[int, ...] = ()
    max_queue_size: int = 1024
    # False: one request per batch (a model without dynamic batching).
    combine_requests: bool = True
    # Ascending batch sizes the model runs at (compile.batch_buckets); () for any size.
    buckets: tuple[int, ...] = ()


@dataclass(eq=False, slots=True)
class QueuedItem(Generic[P, R]):
    payload: P
    rows: int
    key: Hashable
    future: asyncio.Future[R]
    enqueued_at: float
    # In the loop's clock; None: no deadline.
    deadline_s: float | None = None
    dispatched_at: float = field(default=0.0)


Executor = Callable[[int, list[QueuedItem[P, R]]], Awaitable[list[R]]]


class DynamicBatcher(Generic[P, R]):
    __slots__ = (
        "_batch_s_ewma",
        "_closing",
        "_execute",
        "_free",
        "_instance_count",
        "_limit_rows",
        "_preferred_rows",
        "_queue",
        "_running",
        "_scheduler",
        "_started",
        "_stopped",
        "_wakeup",
        "name",
        "policy",
    )

    def __init__(self, name: str, policy: BatchPolicy, execute: Executor[P, R], instances: int):
        self.name = name
        self.policy = policy
        self._execute = execute
        self._instance_count = instances
        self._limit_rows = batch_limit(policy.max_batch_rows, policy.buckets)
        self._preferred_rows = preferred_sizes(policy.preferred_rows, policy.buckets)
        # Lists, not deques: the queue is rebuilt whenever requests leave it, and an empty
        # list is 56 bytes where an empty deque is 760 (x thousands of idle models).
        self._queue: list[QueuedItem[P, R]] = []
        # Exists while the scheduler runs. Set by everything it may act on: an arrival, a
        # cancelled request, a freed instance, close(); cleared only right before it waits.
        self._wakeup: asyncio.Event | None = None
        self._free: list[int] = []
        self._running: set[asyncio.Task[None]] = set()
        self._scheduler: asyncio.Task[None] | None = None  # None while idle
        self._started = False
        self._closing = False
        self._stopped = False
        self._batch_s_ewma = 0.0

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return len(self._running)

    def start(self) -> None:
        """Accept requests from now on (the scheduler itself starts with the first one)."""
        self._free.extend(range(self._instance_count))
        self._started = True

    def submit(
        self, payload: P, rows: int, key: Hashable = None, deadline_s: float | None = None
    ) -> asyncio.Future[R]:
        """Queue one request; its future resolves as the module contract says."""
        if self._closing or self._stopped or not self._started:
            raise UnavailableError(f"model {self.name!r} is not accepting requests")
        limit = self._limit_rows
        if not 1 <= rows <= limit:
            bound = "the largest bucket" if limit < self.policy.max_batch_rows else "max_batch_rows"
            raise InvalidInputError(
                f"model {self.name!r}: a request of {rows} rows does not fit a batch of "
                f"1..{limit} rows ({bound})"
            )
        if len(self._queue) >= self.policy.max_queue_size:
            raise OverloadedError(
                f"model {self.name!r}: queue is full ({self.policy.max_queue_size} requests)",
                retry_after_s=self._retry_after_s(),
            )
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        future.add_done_callback(self._wake_if_cancelled)
        self._queue.append(QueuedItem(payload, rows, key, future, loop.time(), deadline_s))
        if self._scheduler is None:
            self._wakeup = asyncio.Event()
            self._scheduler = loop.create_task(self._schedule(), name=f"batcher:{self.name}")
        else:
            self._wake()
        return future

    async def close(self) -> None:
        """Refuse new requests, run queued ones without delay, wait for running batches."""
        self._closing = True
        self._wake()
        try:
            if self._scheduler is not None:
                await asyncio.wait({self._scheduler})  # it returns once the queue is empty
            if self._running:
                await asyncio.wait(set(self._running))
        except asyncio.CancelledError:
            # Their own handlers answer every request of theirs with UnavailableError.
            for task in self._running:
                task.cancel()
            if self._scheduler is not None:
                self._scheduler.cancel()
            raise

    def _retry_after_s(self) -> float:
        batches_ahead = len(self._queue) / max(1, self._limit_rows * self._instance_count)
        return max(1.0, math.ceil(batches_ahead * self._batch_s_ewma))

    def _wake(self) -> None:
        if self._wakeup is not None:
            self._wakeup.set()

    def _wake_if_cancelled(self, future: asyncio.Future[Any]) -> None:
        if future.cancelled():
            self._wake()  # the scheduler drops it (close() may be waiting for that)

    async def _schedule(self) -> None:
        """Run the dispatch loop until nothing is queued, then go idle (the next submit
        starts a new scheduler). If it fails or is cancelled instead, fail what is queued
        and refuse new work."""
        reason, idle = "the batcher stopped", False
        try:
            await self._dispatch_until_idle()
            idle = True
        except Exception as error:
            log.exception("batch scheduler of model %s failed", self.name)
            reason = f"its batch scheduler failed: {error!r}"
        finally:
            if idle:  # nothing queued, and no await since that check: no submit came between
                self._scheduler = self._wakeup = None
            else:
                self._stop(reason)

    def _stop(self, reason: str) -> None:
        self._stopped = True
        queued, self._queue = self._queue, []
        for item in queued:
            if not item.future.done():
                item.future.set_exception(UnavailableError(f"model {self.name!r}: {reason}"))

    async def _dispatch_until_idle(self) -> None:
        """The scheduler's loop, in pseudo-code::

        forever:
            answer expired requests, drop cancelled ones
            while an instance is free and some key's batch is due:
                dispatch the due key whose oldest request is oldest
            if nothing is queued: return               (idle, or closing and drained)
            sleep until woken, the earliest deadline, or the oldest request's batch falls due
        """
        loop = asyncio.get_running_loop()
        wakeup = self._wakeup
        assert wakeup is not None, "the scheduler runs with its event"
        while True:
            now = loop.time()
            wake_s = self._expire(now)
            while self._free and self._queue:
                key, due_s = self._next_due(now)
                if due_s > now:
                    wake_s = min(wake_s, due_s)
                    break
                self._dispatch(self._free.pop(0), self._take(key), now)
            if not self._queue:
                return
            wakeup.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(None if math.isinf(wake_s) else wake_s):
                    await wakeup.wait()

    def _expire(self, now: float) -> float:
        """Drop cancelled requests, fail expired ones; return the earliest deadline left."""
        gone = [item for item in self._queue if item.future.done() or _passed(item, now)]
        if gone:
            for item in gone:
                if not item.future.done():
                    waited_ms = (now - item.enqueued_at) * 1e3
                    item.future.set_exception(
                        DeadlineExceededError(
                            f"model {self.name!r}: the request's deadline passed after "
                            f"{waited_ms:.1f} ms in the queue"
                        )
                    )
            self._queue = [item for item in self._queue if not item.future.done()]
        deadlines = [item.deadline_s for item in self._queue if item.deadline_s is not None]
        return min(deadlines, default=math.inf)

    def _next_due(self, now: float) -> tuple[Hashable, float]:
        """The key to dispatch next and when its batch is due (-inf: now): the first key,
        in the order of their oldest queued requests, whose batch is full or has waited
        ``max_queue_delay_s``; when none is due yet, the oldest request's key and its time.

        Keys in that order: an oldest request that has waited the delay is older than every
        other key's, so an expired key always goes before one that is only full."""
        head = self._queue[0]
        if self._closing or not self.policy.combine_requests:
            return head.key, -math.inf
        delay_s, target = self.policy.max_queue_delay_s, self._target_rows()
        rows: dict[Hashable, int] = {}
        first_s: dict[Hashable, float] = {}  # insertion order: the age of each key's oldest
        for item in self._queue:
            rows[item.key] = rows.get(item.key, 0) + item.rows
            first_s.setdefault(item.key, item.enqueued_at)
        for key, enqueued_at in first_s.items():
            if enqueued_at + delay_s <= now or rows[key] >= target:
                return key, -math.inf
        return head.key, head.enqueued_at + delay_s

    def _target_rows(self) -> int:
        if self._preferred_rows:
            return min(self._limit_rows, self._preferred_rows[-1])
        return self._limit_rows

    def _take(self, key: Hashable) -> list[QueuedItem[P, R]]:
        """Remove and return the batch for ``key`` (see the contract for its size).

        The first queued request of ``key`` is always taken (submit guarantees it fits), so
        the batch is never empty."""
        chosen: list[QueuedItem[P, R]] = []
        rows = 0
        prefix_rows: list[int] = []
        for item in self._queue:
            if item.key != key:
                continue
            if chosen and (rows + item.rows > self._limit_rows or not self.policy.combine_requests):
                break  # first come, first served: no smaller request jumps the queue
            chosen.append(item)
            rows += item.rows
            prefix_rows.append(rows)
            if rows >= self._limit_rows:
                break
        if self._preferred_rows:
            preferred = [i for i, r in enumerate(prefix_rows) if r in self._preferred_rows]
            if preferred:
                chosen = chosen[: preferred[-1] + 1]
        taken = set(map(id, chosen))
        self._queue = [item for item in self._queue if id(item) not in taken]
        return chosen

    def _dispatch(self, instance: int, batch: list[QueuedItem[P, R]], now: float) -> None:
        for item in batch:
            item.dispatched_at = now
        task = asyncio.get_running_loop().create_task(
            self._run(instance, batch), name=f"batch:{self.name}"
        )
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _run(self, instance: int, batch: list[QueuedItem[P, R]]) -> None:
        """Execute one batch on ``instance``; answer each of its requests exactly once."""
        batch = [item for item in batch if not item.future.done()]  # cancelled since taken
        if not batch:
            self._release(instance)
            return
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            results = await self._execute(instance, batch)
            if len(results) != len(batch):
                raise RuntimeError(
                    f"batch of {len(batch)} requests produced {len(results)} results"
                )
        except Exception as error:
            log.error(
                "model %s: a batch of %d request(s) failed", self.name, len(batch), exc_info=error
            )
            _fail(batch, error)
        except BaseException as error:  # cancellation, interpreter exit: still answer
            _fail(
                batch,
                UnavailableError(
                    f"model {self.name!r}: the batch was interrupted ({type(error).__name__})"
                ),
            )
            raise
        else:
            for item, result in zip(batch, results, strict=True):
                if item.future.done():
                    continue
                if isinstance(result, BaseException):
                    item.future.set_exception(result)
                else:
                    item.future.set_result(result)
        finally:
            elapsed = loop.time() - started
            self._batch_s_ewma += _EWMA_WEIGHT * (elapsed - self._batch_s_ewma)
            self._release(instance)

    def _release(self, instance: int) -> None:
        self._free.append(instance)
        self._wake()


def _passed(item: QueuedItem[Any, Any], now: float) -> bool:
    return item.deadline_s is not None and item.deadline_s <= now


def _fail(batch: list[QueuedItem[Any, Any]], error: BaseException) -> None:
    for item in batch:
        if not item.future.done():
            item.future.set_exception(error)
