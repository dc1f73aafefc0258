"""How CPU threads are split into workers x intra-op threads, and that workers apply it."""

from __future__ import annotations

import pytest

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
