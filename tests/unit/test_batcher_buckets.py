"""Batch buckets: the batcher forms batches at bucket sizes, the worker pads and slices,
and the served model splits requests over the largest bucket (fake executors and backends,
no sockets)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferpack.batching import BatchPolicy, DynamicBatcher, QueuedItem
from inferpack.batching.buckets import batch_limit, chunk_rows, preferred_sizes
from inferpack.config.compile_config import CompileConfig
from inferpack.config.model_config import DynamicBatchingConfig, ModelConfig, TensorSpec
from inferpack.errors import InvalidInputError, ModelExecutionError, OverloadedError
from inferpack.repository import ModelSource
from inferpack.runtime.metrics import ServingMetrics
from inferpack.runtime.served_model import ServedModel, pad_rows
from inferpack.runtime.workers import DevicePools
from inferpack.types import InferRequest, Tensor

# A failure, not a timing assumption: a scenario needs milliseconds; only a hang reaches this.
HANG_GUARD_S = 5.0
BUCKETS = (1, 2, 4, 8, 16, 32)
POISON = -1.0  # a row starting with this value makes the fake backend raise


# -- the pure helpers ------------------------------------------------------------------


def test_the_largest_bucket_caps_the_batch() -> None:
    assert batch_limit(64, BUCKETS) == 32
    assert batch_limit(16, BUCKETS) == 16
    assert batch_limit(64, ()) == 64


def test_preferred_sizes_keep_buckets_only() -> None:
    assert preferred_sizes((), BUCKETS) == BUCKETS
    assert preferred_sizes((8, 4, 12), BUCKETS) == (4, 8)  # 12 would run padded to 16
    assert preferred_sizes((12,), BUCKETS) == BUCKETS
    assert preferred_sizes((8, 4), ()) == (4, 8)


@pytest.mark.parametrize(
    ("rows", "chunks"), [(1, [1]), (32, [32]), (33, [32, 1]), (40, [32, 8]), (70, [32, 32, 6])]
)
def test_chunks_are_largest_bucket_first(rows: int, chunks: list[int]) -> None:
    assert chunk_rows(rows, 32) == chunks


def test_padding_repeats_the_last_row_without_touching_the_request() -> None:
    x = np.arange(6, dtype=np.float32).reshape(3, 2)
    padded = pad_rows({"x": x}, 2)["x"]
    np.testing.assert_array_equal(padded, [[0, 1], [2, 3], [4, 5], [4, 5], [4, 5]])
    assert x.shape == (3, 2)
    assert pad_rows({"x": x}, 0)["x"] is x


# -- the batcher with buckets -----------------------------------------------------------


class RowsModel:
    """Records the rows of each batch (one entry per request); holds batches until
    ``release`` is set."""

    def __init__(self, hold: bool = False) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.started = asyncio.Event()
        if not hold:
            self.release.set()

    async def __call__(self, instance: int, items: list[QueuedItem[int, int]]) -> list[int]:
        self.batches.append([item.rows for item in items])
        self.started.set()
        await self.release.wait()
        return [item.payload for item in items]


def make(model: RowsModel, **policy: Any) -> DynamicBatcher[int, int]:
    batcher: DynamicBatcher[int, int] = DynamicBatcher("m", BatchPolicy(**policy), model, 1)
    batcher.start()
    return batcher


async def test_a_full_largest_bucket_leaves_at_once_and_no_batch_exceeds_it() -> None:
    model = RowsModel()
    batcher = make(model, max_batch_rows=64, max_queue_delay_s=60.0, buckets=(1, 2, 4, 8))
    futures = [batcher.submit(i, rows=1) for i in range(10)]
    async with asyncio.timeout(HANG_GUARD_S):  # not the 60 s delay: 8 rows fill the bucket
        assert await asyncio.gather(*futures[:8]) == list(range(8))
    await batcher.close()  # dispatches the remaining 2 rows without the delay
    assert await asyncio.gather(*futures[8:]) == [8, 9]
    assert model.batches == [[1] * 8, [1, 1]]


async def test_the_batch_is_the_largest_prefix_at_a_bucket() -> None:
    model = RowsModel(hold=True)
    batcher = make(model, max_batch_rows=8, buckets=(1, 2, 4, 8))
    blocker = batcher.submit(0, rows=1)
    await model.started.wait()
    futures = [batcher.submit(i, rows=r) for i, r in [(1, 3), (2, 1), (3, 2)]]
    model.release.set()
    await asyncio.gather(blocker, *futures)
    # Prefixes of 3, 4 and 6 rows: 4 is a bucket, 6 would be padded to 8.
    assert model.batches == [[1], [3, 1], [2]]
    await batcher.close()


async def test_an_expired_delay_dispatches_a_batch_between_buckets() -> None:
    model = RowsModel()
    batcher = make(model, max_batch_rows=8, max_queue_delay_s=0.0, buckets=(4, 8))
    assert await batcher.submit(7, rows=3) == 7
    assert model.batches == [[3]]  # the worker pads it to 4, not the batcher
    await batcher.close()


async def test_preferred_sizes_that_are_buckets_set_the_target() -> None:
    model = RowsModel()
    batcher = make(
        model, max_batch_rows=32, max_queue_delay_s=60.0, preferred_rows=(4,), buckets=BUCKETS
    )
    futures = [batcher.submit(i, rows=1) for i in range(4)]
    async with asyncio.timeout(HANG_GUARD_S):
        await asyncio.gather(*futures)
    assert model.batches == [[1, 1, 1, 1]]
    await batcher.close()


async def test_a_request_over_the_largest_bucket_is_refused_by_the_batcher() -> None:
    batcher = make(RowsModel(), max_batch_rows=64, buckets=BUCKETS)
    with pytest.raises(InvalidInputError, match="largest bucket"):
        batcher.submit(1, rows=33)
    without = make(RowsModel(), max_batch_rows=64)
    with pytest.raises(InvalidInputError, match="max_batch_rows"):
        without.submit(1, rows=65)
    await batcher.close()
    await without.close()


# -- the served model: padding and splitting --------------------------------------------


class DoublingBackend:
    """y = 2x; records the rows of every batch; fails on a poisoned row."""

    device = "cpu"
    memory_bytes = 0

    def __init__(self) -> None:
        self.batch_rows: list[int] = []
        self._lock = threading.Lock()

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        x = np.asarray(inputs["x"], dtype=np.float32)
        with self._lock:
            self.batch_rows.append(len(x))
        if (x[:, 0] == POISON).any():
            raise RuntimeError("poisoned row")
        return {"y": x * 2.0}

    def warm_up(self, inputs: dict[str, Tensor]) -> None:
        self.run(inputs)

    def close(self) -> None:
        pass


@pytest.fixture(scope="module")
def pools() -> Iterator[DevicePools]:
    shared = DevicePools(cpu_threads=2)
    yield shared
    shared.shutdown()


def served(
    pools: DevicePools,
    buckets: tuple[int, ...] = BUCKETS,
    max_batch_size: int = 64,
    delay_us: int = 0,
    instances: int = 1,
    max_queue_size: int = 1024,
) -> tuple[ServedModel, DoublingBackend]:
    config = ModelConfig(
        "m",
        "workload",
        (TensorSpec("x", "FP32", (2,)),),
        (TensorSpec("y", "FP32", (2,)),),
        max_batch_size,
        "model.bin",
        dynamic_batching=DynamicBatchingConfig(delay_us, (), max_queue_size),
        compile=CompileConfig(batch_buckets=buckets),
    )
    backend = DoublingBackend()
    model = ServedModel(
        ModelSource(config, "1", Path("model.bin")), [backend] * instances, ServingMetrics(), pools
    )
    model.start()
    return model, backend


def rows_of(request_id: int, rows: int) -> np.ndarray:
    """Rows that name their request and their place in it: [id, index]."""
    return np.stack([np.full(rows, request_id), np.arange(rows)], axis=1).astype(np.float32)


async def infer(model: ServedModel, x: np.ndarray) -> Tensor:
    return (await model.infer(InferRequest("m", {"x": x})))["y"]


async def test_a_batch_is_padded_to_its_bucket_and_only_real_rows_return(
    pools: DevicePools,
) -> None:
    model, backend = served(pools)
    x = rows_of(1, 5)
    np.testing.assert_array_equal(await infer(model, x), x * 2)
    assert backend.batch_rows == [8]
    await model.close()


async def test_a_request_over_the_largest_bucket_is_split_and_answered_whole(
    pools: DevicePools,
) -> None:
    model, backend = served(pools)
    x = rows_of(1, 40)
    np.testing.assert_array_equal(await infer(model, x), x * 2)
    assert backend.batch_rows == [32, 8]
    await model.close()


async def test_a_failing_chunk_fails_the_request_once_and_cancels_the_rest(
    pools: DevicePools,
) -> None:
    # The 60 s delay keeps the 8-row chunk queued (under the 32-row target) after the
    # first chunk fails: the request fails at once and the chunk never runs.
    model, backend = served(pools, delay_us=60_000_000)
    x = rows_of(1, 40)
    x[3, 0] = POISON
    async with asyncio.timeout(HANG_GUARD_S):
        with pytest.raises(ModelExecutionError, match="poisoned row"):
            await infer(model, x)
        await model.close()  # would run the 8-row chunk at once were it still queued
    assert backend.batch_rows == [32]


async def test_a_refused_chunk_refuses_the_request_and_withdraws_the_others(
    pools: DevicePools,
) -> None:
    model, backend = served(pools, max_queue_size=1)
    with pytest.raises(OverloadedError):
        await infer(model, rows_of(1, 40))
    await model.close()
    assert backend.batch_rows == []


async def test_without_buckets_a_request_over_max_batch_size_is_refused(
    pools: DevicePools,
) -> None:
    model, backend = served(pools, buckets=(), max_batch_size=16)
    x = rows_of(1, 5)
    np.testing.assert_array_equal(await infer(model, x), x * 2)
    with pytest.raises(InvalidInputError, match="max_batch_size"):
        await infer(model, rows_of(2, 17))
    assert backend.batch_rows == [5]
    await model.close()


# -- property: any sizes, orders and buckets ----------------------------------------------


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[tuple[int, ...], int, int, list[tuple[int, int]]]:
    """(buckets, max_batch_size, instances, [(rows, event-loop turns before it)])."""
    buckets = tuple(sorted(draw(st.sets(st.integers(1, 16), min_size=1, max_size=5))))
    max_batch_size = draw(st.integers(buckets[-1], 3 * buckets[-1]))
    instances = draw(st.integers(1, 2))
    requests = draw(
        st.lists(st.tuples(st.integers(1, max_batch_size), st.integers(0, 2)), max_size=12)
    )
    return buckets, max_batch_size, instances, requests


async def _play(
    pools: DevicePools,
    buckets: tuple[int, ...],
    max_batch_size: int,
    instances: int,
    requests: list[tuple[int, int]],
) -> None:
    model, backend = served(pools, buckets, max_batch_size, delay_us=200, instances=instances)
    tasks = []
    for request_id, (rows, turns) in enumerate(requests):
        for _ in range(turns):
            await asyncio.sleep(0)
        tasks.append(asyncio.create_task(infer(model, rows_of(request_id, rows))))
    results = await asyncio.gather(*tasks)
    await model.close()
    for request_id, ((rows, _), result) in enumerate(zip(requests, results, strict=True)):
        np.testing.assert_array_equal(result, rows_of(request_id, rows) * 2)
    assert set(backend.batch_rows) <= set(buckets), "a batch ran at a size that is no bucket"
    assert sum(backend.batch_rows) >= sum(rows for rows, _ in requests)


@settings(max_examples=60, deadline=None)
@given(scenarios())
def test_every_request_gets_exactly_its_rows_from_bucket_sized_batches(
    pools: DevicePools, scenario: tuple[tuple[int, ...], int, int, list[tuple[int, int]]]
) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(HANG_GUARD_S):
            await _play(pools, *scenario)

    asyncio.run(bounded())
