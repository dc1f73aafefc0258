"""An idle batcher holds no task: its scheduler starts with a request and ends when nothing
is queued, so thousands of resident models that serve nothing cost no coroutine each."""

from __future__ import annotations

import asyncio

import pytest

from inferpack.batching import BatchPolicy, DynamicBatcher, QueuedItem
from inferpack.errors import UnavailableError

HANG_GUARD_S = 5.0


async def _times_ten(instance: int, items: list[QueuedItem[int, int]]) -> list[int]:
    return [item.payload * 10 for item in items]


def _batcher(name: str = "m") -> DynamicBatcher[int, int]:
    return DynamicBatcher(name, BatchPolicy(max_batch_rows=4), _times_ten, 1)


def _scheduler_tasks() -> list[asyncio.Task[object]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("batcher:")]


async def test_a_thousand_started_batchers_run_no_task() -> None:
    batchers = [_batcher(f"m{i}") for i in range(1000)]
    for batcher in batchers:
        batcher.start()
    await asyncio.sleep(0)
    assert _scheduler_tasks() == []
    for batcher in batchers:
        await batcher.close()


async def test_the_scheduler_runs_while_requests_are_queued_and_returns_after() -> None:
    batcher = _batcher()
    batcher.start()
    future = batcher.submit(1, rows=1)
    assert [t.get_name() for t in _scheduler_tasks()] == ["batcher:m"]
    async with asyncio.timeout(HANG_GUARD_S):
        assert await future == 10
    assert _scheduler_tasks() == []
    async with asyncio.timeout(HANG_GUARD_S):  # the next request starts it again
        assert await asyncio.gather(batcher.submit(2, rows=1), batcher.submit(3, rows=1)) == [
            20,
            30,
        ]
    assert _scheduler_tasks() == []
    await batcher.close()


async def test_a_batcher_refuses_requests_before_start_and_after_close() -> None:
    batcher = _batcher()
    with pytest.raises(UnavailableError, match="not accepting requests"):
        batcher.submit(1, rows=1)
    batcher.start()
    async with asyncio.timeout(HANG_GUARD_S):
        await batcher.close()  # idle: nothing to wait for
    with pytest.raises(UnavailableError, match="not accepting requests"):
        batcher.submit(1, rows=1)
