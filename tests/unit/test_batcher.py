"""The batcher's contract, driven by fake executors and events (no model, no sockets)."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

import pytest

from inferpack.batching import BatchPolicy, DynamicBatcher, QueuedItem
from inferpack.errors import (
    DeadlineExceededError,
    InvalidInputError,
    OverloadedError,
    UnavailableError,
)

Items = list[QueuedItem[int, int]]


class FakeModel:
    """Records each batch's payloads; holds execution until ``release`` is set."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        if not hold:
            self.release.set()

    async def __call__(self, instance: int, items: Items) -> list[int]:
        self.batches.append([item.payload for item in items])
        self.started.set()
        await self.release.wait()
        if any(item.payload < 0 for item in items):
            raise ValueError("negative payload")
        return [item.payload * 10 for item in items]


def make(model: FakeModel, instances: int = 1, **policy: Any) -> DynamicBatcher[int, int]:
    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        "m",
        BatchPolicy(**policy),
        model,
        instances,
    )
    batcher.start()
    return batcher


async def _submit_all(
    batcher: DynamicBatcher[int, int], payloads: list[int], key: Hashable = None
) -> list[asyncio.Future[int]]:
    return [batcher.submit(p, rows=1, key=key) for p in payloads]


async def test_full_batch_leaves_without_waiting_for_the_delay() -> None:
    model = FakeModel()
    batcher = make(model, max_batch_rows=4, max_queue_delay_s=60.0)
    futures = await _submit_all(batcher, [1, 2, 3, 4])
    assert await asyncio.gather(*futures) == [10, 20, 30, 40]
    assert model.batches == [[1, 2, 3, 4]]
    await batcher.close()


async def test_delay_counts_from_first_arrival_and_partial_batch_leaves() -> None:
    model = FakeModel()
    batcher = make(model, max_batch_rows=8, max_queue_delay_s=0.05)
    loop = asyncio.get_running_loop()
    first = batcher.submit(1, rows=1)
    started = loop.time()
    second = batcher.submit(2, rows=1)
    assert list(await asyncio.gather(first, second)) == [10, 20]
    assert loop.time() - started >= 0.04
    assert model.batches == [[1, 2]]
    await batcher.close()


async def test_batches_grow_while_the_instance_is_busy() -> None:
    model = FakeModel(hold=True)
    batcher = make(model, max_batch_rows=8)
    first = batcher.submit(0, rows=1)
    await model.started.wait()
    rest = await _submit_all(batcher, [1, 2, 3])
    model.release.set()
    await asyncio.gather(first, *rest)
    assert model.batches == [[0], [1, 2, 3]]
    await batcher.close()


async def test_rows_never_exceed_max_and_order_is_kept() -> None:
    model = FakeModel(hold=True)
    batcher = make(model, max_batch_rows=4, max_queue_delay_s=0.02)
    blocker = batcher.submit(0, rows=4)
    await model.started.wait()
    futures = [batcher.submit(p, rows=r) for p, r in [(1, 2), (2, 3), (3, 1), (4, 1)]]
    model.release.set()
    await asyncio.gather(blocker, *futures)
    # 2 + 3 > 4: request 2 starts the next batch, and request 3 may not jump ahead of it.
    assert model.batches == [[0], [1], [2, 3], [4]]
    await batcher.close()


async def test_preferred_size_dispatches_early_and_trims_the_batch() -> None:
    model = FakeModel(hold=True)
    batcher = make(model, max_batch_rows=16, max_queue_delay_s=0.05, preferred_rows=(2, 4))
    blocker = batcher.submit(0, rows=4)
    await model.started.wait()
    futures = await _submit_all(batcher, [1, 2, 3, 4, 5])
    model.release.set()
    await asyncio.gather(blocker, *futures)
    # 5 rows queued reach the largest preferred size: the batch is trimmed to 4 at once;
    # the 5th leaves alone when its delay expires.
    assert model.batches == [[0], [1, 2, 3, 4], [5]]
    await batcher.close()


async def test_exception_fails_its_batch_and_no_other() -> None:
    model = FakeModel(hold=True)
    batcher = make(model, max_batch_rows=2, max_queue_delay_s=60.0)
    bad = await _submit_all(batcher, [-1, 5])
    await model.started.wait()
    good = await _submit_all(batcher, [6, 7])
    model.release.set()
    results = await asyncio.gather(*bad, *good, return_exceptions=True)
    assert [type(r) for r in results[:2]] == [ValueError, ValueError]
    assert results[2:] == [60, 70]
    await batcher.close()


async def test_an_exception_result_fails_its_request_alone() -> None:
    """A python model's per-request error: the executor answers an exception instance for
    one item; that request fails with it, the others of the batch get their results."""

    async def answer(instance: int, items: Items) -> list[Any]:
        return [InvalidInputError("odd") if item.payload % 2 else item.payload for item in items]

    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        "m", BatchPolicy(max_batch_rows=4, max_queue_delay_s=60.0), answer, 1
    )
    batcher.start()
    futures = await _submit_all(batcher, [2, 3, 4, 6])
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert results[0] == 2 and results[2:] == [4, 6]
    assert isinstance(results[1], InvalidInputError)
    await batcher.close()


async def test_result_count_mismatch_fails_the_batch_with_both_numbers() -> None:
    async def short(instance: int, items: Items) -> list[int]:
        return [1]

    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        "m", BatchPolicy(max_batch_rows=2, max_queue_delay_s=60.0), short, 1
    )
    batcher.start()
    futures = await _submit_all(batcher, [1, 2])
    with pytest.raises(RuntimeError, match="batch of 2 requests produced 1 results"):
        await asyncio.gather(*futures)
    await batcher.close()


async def test_cancelled_requests_are_dropped_before_running() -> None:
    model = FakeModel(hold=True)
    batcher = make(model, max_batch_rows=4)
    blocker = batcher.submit(0, rows=1)
    await model.started.wait()
    futures = await _submit_all(batcher, [1, 2, 3])
    futures[1].cancel()
    model.release.set()
    await asyncio.gather(blocker, futures[0], futures[2])
    assert model.batches == [[0], [1, 3]]
    await batcher.close()


async def test_full_queue_is_refused_with_retry_hint() -> None:
    model = FakeModel(hold=True)
    batcher = make(model, max_batch_rows=1, max_queue_size=2)
    running = batcher.submit(0, rows=1)
    await model.started.wait()
    queued = await _submit_all(batcher, [1, 2])
    with pytest.raises(OverloadedError, match="queue is full") as raised:
        batcher.submit(3, rows=1)
    assert raised.value.retry_after_s >= 1
    model.release.set()
    assert await asyncio.gather(running, *queued) == [0, 10, 20]
    await batcher.close()


async def test_different_keys_never_share_a_batch() -> None:
    model = FakeModel(hold=True)
    batcher = make(model, max_batch_rows=8, max_queue_delay_s=0.01)
    blocker = batcher.submit(0, rows=1, key="a")
    await model.started.wait()
    futures = [batcher.submit(p, rows=1, key=k) for p, k in [(1, "a"), (2, "b"), (3, "a")]]
    model.release.set()
    await asyncio.gather(blocker, *futures)
    assert sorted(model.batches[1:]) == [[1, 3], [2]]
    await batcher.close()


async def test_requests_not_combined_without_dynamic_batching() -> None:
    model = FakeModel()
    batcher = make(model, max_batch_rows=8, combine_requests=False)
    await asyncio.gather(*await _submit_all(batcher, [1, 2, 3]))
    assert model.batches == [[1], [2], [3]]
    await batcher.close()


async def test_instances_run_batches_in_parallel() -> None:
    model = FakeModel(hold=True)
    batcher = make(model, instances=2, max_batch_rows=1)
    futures = await _submit_all(batcher, [1, 2, 3])
    while len(model.batches) < 2:
        await asyncio.sleep(0)
    assert model.batches == [[1], [2]]  # two in flight at once, the third waits
    model.release.set()
    assert await asyncio.gather(*futures) == [10, 20, 30]
    await batcher.close()


async def test_close_finishes_queued_work_then_refuses() -> None:
    model = FakeModel(hold=True)
    batcher = make(model, max_batch_rows=1)
    futures = await _submit_all(batcher, [1, 2])
    closing = asyncio.create_task(batcher.close())
    await model.started.wait()
    with pytest.raises(UnavailableError):
        batcher.submit(3, rows=1)
    model.release.set()
    await closing
    assert [f.result() for f in futures] == [10, 20]


# Guards against a hang (a failure, not a timing assumption): every wait below ends on an
# event or a future long before this.
HANG_GUARD_S = 5.0


async def test_cancelled_execution_fails_its_batch_and_frees_the_instance() -> None:
    calls: list[list[int]] = []

    async def cancelled_once(instance: int, items: Items) -> list[int]:
        calls.append([item.payload for item in items])
        if len(calls) == 1:
            raise asyncio.CancelledError  # as run_in_executor does when its pool shuts down
        return [item.payload * 10 for item in items]

    batcher: DynamicBatcher[int, int] = DynamicBatcher(
        "m", BatchPolicy(max_batch_rows=2, max_queue_delay_s=60.0), cancelled_once, 1
    )
    batcher.start()
    first = await _submit_all(batcher, [1, 2])
    async with asyncio.timeout(HANG_GUARD_S):
        results = await asyncio.gather(*first, return_exceptions=True)
        assert [type(r) for r in results] == [UnavailableError, UnavailableError]
        assert "interrupted (CancelledError)" in str(results[0])
        assert await asyncio.gather(*await _submit_all(batcher, [3, 4])) == [30, 40]
        await batcher.close()
    assert calls == [[1, 2], [3, 4]]


async def test_cancelled_close_answers_queued_and_running_requests() -> None:
    model = FakeModel(hold=True)
    batcher = make(model, max_batch_rows=1)
    running, queued = await _submit_all(batcher, [1, 2])
    closing = asyncio.create_task(batcher.close())
    await model.started.wait()
    closing.cancel()
    async with asyncio.timeout(HANG_GUARD_S):
        results = await asyncio.gather(running, queued, return_exceptions=True)
        with pytest.raises(asyncio.CancelledError):
            await closing
    assert [type(r) for r in results] == [UnavailableError, UnavailableError]
    assert model.batches == [[1]]


class ExplodingKey:
    """A batch key whose comparison and hash raise (the scheduler groups queued requests
    by key): stands in for any bug inside the scheduler."""

    def __hash__(self) -> int:
        raise RuntimeError("key comparison failed")

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("key comparison failed")


async def test_failed_scheduler_fails_queued_requests_and_refuses_new_ones() -> None:
    model = FakeModel(hold=True)
    batcher = make(model, max_batch_rows=4, max_queue_delay_s=60.0)
    running = batcher.submit(0, rows=4)
    await model.started.wait()
    queued = [batcher.submit(1, rows=1, key=ExplodingKey()), batcher.submit(2, rows=1)]
    model.release.set()  # the free instance makes the scheduler compare keys: it fails
    async with asyncio.timeout(HANG_GUARD_S):
        results = await asyncio.gather(*queued, return_exceptions=True)
        assert await running == 0
        await batcher.close()
    assert [type(r) for r in results] == [UnavailableError, UnavailableError]
    assert "scheduler failed" in str(results[0]) and "key comparison failed" in str(results[0])
    with pytest.raises(UnavailableError, match="not accepting requests"):
        batcher.submit(3, rows=1)
    assert model.batches == [[0]]


@pytest.mark.parametrize("rows", [0, 5])
async def test_request_that_cannot_fit_a_batch_is_refused_at_submit(rows: int) -> None:
    model = FakeModel()
    batcher = make(model, max_batch_rows=4)
    with pytest.raises(InvalidInputError, match=f"request of {rows} rows .* 1..4 rows"):
        batcher.submit(1, rows=rows)
    assert batcher.queued == 0
    assert await batcher.submit(2, rows=4) == 20
    await batcher.close()


async def test_close_dispatches_queued_requests_without_waiting_for_the_delay() -> None:
    model = FakeModel()
    batcher = make(model, max_batch_rows=8, max_queue_delay_s=3600.0)
    futures = await _submit_all(batcher, [1, 2])
    async with asyncio.timeout(HANG_GUARD_S):
        await batcher.close()
    assert [f.result() for f in futures] == [10, 20]
    assert model.batches == [[1, 2]]
    assert batcher.queued == batcher.running == 0


async def test_close_waits_for_running_batches_and_skips_cancelled_requests() -> None:
    model = FakeModel(hold=True)
    batcher = make(model, max_batch_rows=1, max_queue_delay_s=3600.0)
    running, cancelled = await _submit_all(batcher, [1, 2])
    await model.started.wait()
    cancelled.cancel()
    closing = asyncio.create_task(batcher.close())
    model.release.set()
    async with asyncio.timeout(HANG_GUARD_S):
        await closing
    assert running.result() == 10  # raises InvalidStateError had close() not waited
    assert model.batches == [[1]]


async def test_request_past_its_deadline_is_answered_and_never_run() -> None:
    model = FakeModel()
    batcher = make(model, max_batch_rows=4)
    loop = asyncio.get_running_loop()
    late = batcher.submit(1, rows=1, deadline_s=loop.time())
    async with asyncio.timeout(HANG_GUARD_S):
        with pytest.raises(DeadlineExceededError, match="deadline passed"):
            await late
        assert await batcher.submit(2, rows=1, deadline_s=loop.time() + 3600.0) == 20
    assert model.batches == [[2]]
    await batcher.close()


async def test_deadline_is_answered_while_every_instance_is_busy() -> None:
    model = FakeModel(hold=True)
    batcher = make(model, max_batch_rows=4, max_queue_delay_s=3600.0)
    loop = asyncio.get_running_loop()
    blocker = batcher.submit(0, rows=4)
    await model.started.wait()
    deadline_s = loop.time() + 0.01
    expiring = batcher.submit(1, rows=1, deadline_s=deadline_s)
    patient = batcher.submit(2, rows=1)
    async with asyncio.timeout(HANG_GUARD_S):
        with pytest.raises(DeadlineExceededError):
            await expiring  # no batch forms meanwhile: only the deadline can wake the scheduler
        assert loop.time() >= deadline_s
        assert not blocker.done() and not patient.done()
        model.release.set()
        await batcher.close()
    assert [blocker.result(), patient.result()] == [0, 20]
    assert model.batches == [[0], [2]]


async def test_a_full_batch_of_one_key_is_not_held_by_another_keys_delay() -> None:
    """Head-of-line blocking: one request of key "a" waits out its (long) delay; a full
    batch of key "b" queued behind it leaves at once on the other idle instance."""
    model = FakeModel()
    batcher = make(model, instances=2, max_batch_rows=4, max_queue_delay_s=60.0)
    lone = batcher.submit(0, rows=1, key="a")
    full = [batcher.submit(p, rows=1, key="b") for p in (1, 2, 3, 4)]
    async with asyncio.timeout(10):  # a failure guard, far below the 60 s delay
        assert await asyncio.gather(*full) == [10, 20, 30, 40]
    assert model.batches == [[1, 2, 3, 4]]
    assert not lone.done()
    await batcher.close()  # close dispatches "a" without its delay
    assert await lone == 0
    assert model.batches == [[1, 2, 3, 4], [0]]


async def test_the_due_key_with_the_oldest_request_goes_first() -> None:
    model = FakeModel(hold=True)
    batcher = make(model, max_batch_rows=2, max_queue_delay_s=60.0)
    blocker = batcher.submit(0, rows=2, key="x")
    await model.started.wait()
    # Behind the busy instance: "a" (oldest, not due), then "b" full, then "c" full.
    waiting = [batcher.submit(p, rows=1, key=k) for p, k in [(1, "a"), (2, "b"), (3, "c")]]
    waiting += [batcher.submit(p, rows=1, key=k) for p, k in [(4, "c"), (5, "b")]]
    model.release.set()
    async with asyncio.timeout(10):
        await asyncio.gather(blocker, *waiting[1:])
    # "b" and "c" are both full: "b" holds the older request. "a" stays for its delay.
    assert model.batches == [[0], [2, 5], [3, 4]]
    assert not waiting[0].done()
    await batcher.close()
    assert model.batches[-1] == [1]


async def test_a_key_past_its_delay_goes_before_a_younger_full_one() -> None:
    model = FakeModel(hold=True)
    batcher = make(model, max_batch_rows=2, max_queue_delay_s=0.0)
    blocker = batcher.submit(0, rows=2, key="x")
    await model.started.wait()
    futures = [batcher.submit(p, rows=1, key=k) for p, k in [(1, "a"), (2, "b"), (3, "b")]]
    model.release.set()
    await asyncio.gather(blocker, *futures)
    assert model.batches == [[0], [1], [2, 3]]
    await batcher.close()


async def test_a_failed_batch_is_logged_once_with_the_model_and_its_cause(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = FakeModel(hold=True)
    batcher = make(model, max_batch_rows=4, max_queue_delay_s=60.0)
    futures = [batcher.submit(p, rows=1) for p in (-1, 2, 3, 4)]  # one full batch
    model.release.set()
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, ValueError) for r in results)
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "model m: a batch of 4 request(s) failed" in record.getMessage()
    assert record.exc_info is not None and "negative payload" in str(record.exc_info[1])
    await batcher.close()
