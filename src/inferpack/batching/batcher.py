"""Dynamic batcher: one bounded queue per model, batches formed only when an instance is free.

Contract (what callers and tests rely on):
- ``submit(payload, rows, key) -> Future``; the queue is bounded: when it holds
  ``max_queue_size`` requests, submit raises OverloadedError (HTTP 429) with a retry hint.
- A batch holds >= 1 request, at most ``max_batch_rows`` rows, all with the same ``key``
  (requests whose non-batch shapes differ are never mixed).
- A batch is formed only when an instance is free (so batches grow under load, as in
  Triton). It is dispatched when full, when it reaches the largest preferred size, or when
  the oldest queued request has waited ``max_queue_delay_s`` (the delay counts from the
  first arrival, not the last).
- With preferred sizes, the batch is the largest queue prefix whose row count is a
  preferred size; if none, the largest prefix that fits.
- ``execute(instance, items)`` must return one result per item; a length mismatch or an
  exception fails every request of that batch and no other.
- Cancelled requests are dropped before running; their futures are never resolved.
- ``close()`` refuses new work, lets queued and running requests finish, then stops.

The batcher knows no metrics, tensors or backends: it is pure asyncio and testable with
fake executors and events.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from inferpack.errors import OverloadedError, UnavailableError

P = TypeVar("P")
R = TypeVar("R")

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


@dataclass(eq=False, slots=True)
class QueuedItem(Generic[P, R]):
    payload: P
    rows: int
    key: Hashable
    future: asyncio.Future[R]
    enqueued_at: float
    dispatched_at: float = field(default=0.0)


Executor = Callable[[int, list[QueuedItem[P, R]]], Awaitable[list[R]]]


class DynamicBatcher(Generic[P, R]):
    def __init__(self, name: str, policy: BatchPolicy, execute: Executor[P, R], instances: int):
        self.name = name
        self.policy = policy
        self._execute = execute
        self._instance_count = instances
        self._queue: deque[QueuedItem[P, R]] = deque()
        self._arrived = asyncio.Event()
        self._free: asyncio.Queue[int] = asyncio.Queue()
        self._running: set[asyncio.Task[None]] = set()
        self._scheduler: asyncio.Task[None] | None = None
        self._closing = False
        self._batch_s_ewma = 0.0

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return len(self._running)

    def start(self) -> None:
        for instance in range(self._instance_count):
            self._free.put_nowait(instance)
        self._scheduler = asyncio.get_running_loop().create_task(
            self._schedule(), name=f"batcher:{self.name}"
        )

    def submit(self, payload: P, rows: int, key: Hashable = None) -> asyncio.Future[R]:
        if self._closing or self._scheduler is None:
            raise UnavailableError(f"model {self.name!r} is not accepting requests")
        if len(self._queue) >= self.policy.max_queue_size:
            raise OverloadedError(
                f"model {self.name!r}: queue is full ({self.policy.max_queue_size} requests)",
                retry_after_s=self._retry_after_s(),
            )
        loop = asyncio.get_running_loop()
        item: QueuedItem[P, R] = QueuedItem(payload, rows, key, loop.create_future(), loop.time())
        self._queue.append(item)
        self._arrived.set()
        return item.future

    async def close(self) -> None:
        """Refuse new requests, finish queued and running ones, then stop the scheduler."""
        self._closing = True
        while self._queue or self._running:
            if self._running:
                await asyncio.wait(set(self._running))
            else:
                await asyncio.sleep(0.001)  # scheduler is forming the last batch
            self._drop_cancelled()
        if self._scheduler is not None:
            self._scheduler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scheduler

    def _retry_after_s(self) -> float:
        batches_ahead = len(self._queue) / max(1, self.policy.max_batch_rows * self._instance_count)
        return max(1.0, math.ceil(batches_ahead * self._batch_s_ewma))

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            instance = await self._free.get()
            batch = await self._next_batch()
            now = loop.time()
            for item in batch:
                item.dispatched_at = now
            task = loop.create_task(self._run(instance, batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _next_batch(self) -> list[QueuedItem[P, R]]:
        loop = asyncio.get_running_loop()
        while True:
            self._drop_cancelled()
            if not self._queue:
                self._arrived.clear()
                await self._arrived.wait()
                continue
            head = self._queue[0]
            remaining_s = head.enqueued_at + self.policy.max_queue_delay_s - loop.time()
            if remaining_s <= 0 or self._ready(head.key):
                return self._take(head.key)
            self._arrived.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining_s):
                    await self._arrived.wait()

    def _target_rows(self) -> int:
        if self.policy.preferred_rows:
            return min(self.policy.max_batch_rows, self.policy.preferred_rows[-1])
        return self.policy.max_batch_rows

    def _ready(self, key: Hashable) -> bool:
        if not self.policy.combine_requests:
            return True
        target, rows = self._target_rows(), 0
        for item in self._queue:
            if item.key == key:
                rows += item.rows
                if rows >= target:
                    return True
        return False

    def _take(self, key: Hashable) -> list[QueuedItem[P, R]]:
        """Remove and return the batch for ``key`` (see the contract for its size)."""
        chosen: list[QueuedItem[P, R]] = []
        rows = 0
        prefix_rows: list[int] = []
        for item in self._queue:
            if item.key != key:
                continue
            if rows + item.rows > self.policy.max_batch_rows:
                break  # first come, first served: no smaller request jumps the queue
            chosen.append(item)
            rows += item.rows
            prefix_rows.append(rows)
            if rows == self.policy.max_batch_rows or not self.policy.combine_requests:
                break
        if self.policy.preferred_rows:
            preferred = [i for i, r in enumerate(prefix_rows) if r in self.policy.preferred_rows]
            if preferred:
                chosen = chosen[: preferred[-1] + 1]
        taken = set(map(id, chosen))
        self._queue = deque(item for item in self._queue if id(item) not in taken)
        return chosen

    def _drop_cancelled(self) -> None:
        if any(item.future.done() for item in self._queue):
            self._queue = deque(item for item in self._queue if not item.future.done())

    async def _run(self, instance: int, batch: list[QueuedItem[P, R]]) -> None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            results = await self._execute(instance, batch)
            if len(results) != len(batch):
                raise RuntimeError(
                    f"batch of {len(batch)} requests produced {len(results)} results"
                )
            for item, result in zip(batch, results, strict=True):
                if not item.future.done():
                    item.future.set_result(result)
        except Exception as error:
            for item in batch:
                if not item.future.done():
                    item.future.set_exception(error)
        finally:
            elapsed = loop.time() - started
            self._batch_s_ewma += _EWMA_WEIGHT * (elapsed - self._batch_s_ewma)
            self._free.put_nowait(instance)
