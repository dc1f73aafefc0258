"""How CPU threads are split into workers x intra-op threads, and that workers apply it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from inferpack.runtime.workers import DevicePools, available_cpus, plan_cpu_threads


@pytest.mark.parametrize(
    ("total", "workers", "intra_op"),
    [(1, 1, 1), (2, 2, 1), (3, 2, 1), (4, 2, 2), (8, 3, 2), (16, 4, 4), (64, 8, 8), (96, 10, 9)],
)
def test_plan_splits_the_total(total: int, workers: int, intra_op: int) -> None:
    plan = plan_cpu_threads(total)
    assert (plan.total, plan.workers, plan.intra_op) == (total, workers, intra_op)


@pytest.mark.parametrize("total", range(1, 257))
def test_plan_never_oversubscribes(total: int) -> None:
    plan = plan_cpu_threads(total)
    assert plan.workers >= 1 and plan.intra_op >= 1
    assert plan.workers * plan.intra_op <= total


def test_plan_refuses_zero() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        plan_cpu_threads(0)


def test_default_total_is_the_cpus_this_process_may_use() -> None:
    assert DevicePools().cpu == plan_cpu_threads(available_cpus())


def test_worker_threads_run_torch_with_the_planned_intra_op_threads() -> None:
    torch = pytest.importorskip("torch")
    default = torch.get_num_threads()
    pools = DevicePools(cpu_threads=9)  # 3 workers x 3 intra-op threads
    try:
        executor = pools.executor("cpu")
        assert executor._max_workers == 3
        seen = {executor.submit(torch.get_num_threads).result() for _ in range(6)}
        assert seen == {3}
        bigger = DevicePools(cpu_threads=4).executor("cpu", at_least=5)
        assert bigger._max_workers == 5  # a model's instance count wins over the plan
        bigger.shutdown()
    finally:
        pools.shutdown()
        torch.set_num_threads(default)  # the value is process-wide: leave it as found


def test_a_batch_alone_gets_every_thread_and_batches_at_once_split_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CpuShare: T = N // (batches computing now), set on a thread only when it changes."""
    import threading

    from inferpack.runtime import workers

    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(
        workers,
        "set_intra_op_threads",
        lambda n: calls.append((threading.current_thread().name, n)),
    )
    share = workers.CpuShare(8)
    with share.batch() as alone:
        assert alone == 8 and share.running == 1
        with share.batch() as second:  # a second batch while the first runs
            assert second == 4 and share.running == 2
    assert share.running == 0
    with share.batch() as again:
        assert again == 8
    me = threading.current_thread().name
    assert calls == [(me, 8), (me, 4), (me, 8)]
    with share.batch():  # same thread, same T: nothing to set
        pass
    assert len(calls) == 3
    with share.batch(wide=False) as narrow:  # too little work to split: one thread
        assert narrow == 1 and share.running == 1
        with share.batch() as beside:  # but it occupies a core
            assert beside == 4
    assert share.running == 0


@settings(max_examples=25, deadline=None)
@given(
    total=st.integers(1, 16),
    plans=st.lists(st.lists(st.floats(0, 0.002), min_size=1, max_size=6), min_size=1, max_size=6),
)
def test_cpu_share_under_concurrent_batches(total: int, plans: list[list[float]]) -> None:
    """Threads run random batches at once: every batch gets max(1, N // running) with
    running counted at its start (between 1 and the threads), none fails, and the count
    returns to zero."""
    import threading
    import time

    from inferpack.runtime.workers import CpuShare

    share = CpuShare(total)
    seen: list[int] = []
    errors: list[BaseException] = []

    def worker(sleeps: list[float]) -> None:
        try:
            for sleep_s in sleeps:
                with share.batch() as threads:
                    seen.append(threads)
                    assert 1 <= share.running <= len(plans)
                    time.sleep(sleep_s)
        except BaseException as error:  # surfaced below
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(p,)) for p in plans]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors and not any(t.is_alive() for t in threads)
    assert len(seen) == sum(len(p) for p in plans)
    allowed = {max(1, total // running) for running in range(1, len(plans) + 1)}
    assert set(seen) <= allowed
    assert share.running == 0


def test_a_lone_batch_runs_torch_on_every_thread_of_the_server() -> None:
    """Through the pools, as a served model uses them: a batch alone on a 2-worker pool of
    4 threads computes with 4 intra-op threads (not the 2 its worker started with)."""
    torch = pytest.importorskip("torch")
    default = torch.get_num_threads()
    pools = DevicePools(cpu_threads=4)  # 2 workers x 2 intra-op threads

    def lone() -> int:
        with pools.cpu_share.batch():
            return int(torch.get_num_threads())

    try:
        assert pools.executor("cpu").submit(lone).result() == 4
    finally:
        pools.shutdown()
        torch.set_num_threads(default)


def test_a_served_model_widens_only_batches_with_work_to_split(tmp_path: Path) -> None:
    """A served torch model: its first batch runs on one thread (nothing measured yet);
    once its compute per row is known, a batch whose rows add up to WIDE_BATCH_MS or more
    runs on every thread of the server, a smaller one on one."""
    torch = pytest.importorskip("torch")
    import asyncio

    import numpy as np

    from inferpack.repository import LocalRepository
    from inferpack.repository.init import init_repository
    from inferpack.runtime import workers
    from inferpack.runtime.metrics import ServingMetrics
    from inferpack.runtime.served_model import ServedModel

    init_repository(tmp_path, ["tiny-mlp"], seed=0)
    default = torch.get_num_threads()
    pools = DevicePools(cpu_threads=2)
    seen: list[int] = []
    batch = pools.cpu_share.batch

    def spying(wide: bool = True) -> Any:
        seen.append(int(wide))
        return batch(wide)

    pools.cpu_share.batch = spying  # type: ignore[method-assign]
    try:
        model = ServedModel.load(LocalRepository(tmp_path).sources("tiny-mlp")[0],
                                 ServingMetrics(), pools)  # fmt: skip
        rows = np.zeros((4, 16), dtype=np.float32)

        async def three_batches() -> None:
            model.start()
            try:
                await model.batcher.submit({"input": rows}, 4)
                assert seen == [0] and model._row_work_ms > 0  # measured by the first batch
                model._row_work_ms = workers.WIDE_BATCH_MS  # one row: the whole threshold
                await model.batcher.submit({"input": rows}, 4)
                model._row_work_ms = workers.WIDE_BATCH_MS / 100  # 4 rows: far below it
                await model.batcher.submit({"input": rows}, 4)
            finally:
                await model.close()

        asyncio.run(three_batches())
        assert seen == [0, 1, 0]
    finally:
        pools.shutdown()
        torch.set_num_threads(default)
