"""The profile's server block from the statistics extension: pure arithmetic on documents."""

from __future__ import annotations

from typing import Any

import pytest

from inferpack.profile.calibrate import batch_service_ms, request_times_ms, server_model


def _d(count: int, ns: int) -> dict[str, int]:
    return {"count": count, "ns": ns}


def _stats(name: str, requests: int, success_ms: float, queue_ms: float, batches: Any) -> Any:
    compute = sum(c * ms for _, c, ms in batches)  # per request: a batch's time each
    rows = [
        {"batch_size": b, "compute_input": _d(c, 0), "compute_infer": _d(c, int(c * ms * 1e6)),
         "compute_output": _d(c, 0)}
        for b, c, ms in batches
    ]  # fmt: skip
    return {
        "name": name,
        "inference_stats": {
            "success": _d(requests, int(success_ms * 1e6)),
            "queue": _d(requests, int(queue_ms * 1e6)),
            "compute_input": _d(requests, 0),
            "compute_infer": _d(requests, int(compute * 1e6)),
            "compute_output": _d(requests, 0),
        },
        "batch_stats": rows,
    }


def test_batch_curve_over_copies_and_frontend_between_snapshots() -> None:
    after = {"model_stats": [
        _stats("a", 10, 60.0, 5.0, [(1, 10, 4.0)]),
        _stats("b", 12, 90.0, 8.0, [(1, 4, 5.0), (4, 2, 9.0)]),
        _stats("other", 99, 1.0, 1.0, [(1, 99, 1000.0)]),
    ]}  # fmt: skip
    curve = batch_service_ms(after, ["a", "b"])
    assert curve == {1: pytest.approx((10 * 4 + 4 * 5) / 14, abs=1e-3), 4: 9.0}
    before = {"model_stats": []}
    # engine: success 150 ms - queue 13 ms - compute (40 + 20 + 18) ms = 59 ms over 22 requests
    front, over = request_times_ms(before, after, ["a", "b"])
    assert front == pytest.approx(59 / 22, abs=1e-3) and over == 0.0
    assert request_times_ms(after, after, ["a", "b"]) == (0.0, 0.0)
    # The clients saw 10 ms at p50; the engine spent 150 / 22 ms per request.
    assert request_times_ms(before, after, ["a", "b"], 10.0)[1] == pytest.approx(
        10 - 150 / 22, abs=1e-3
    )


def test_server_model_from_a_triton_config() -> None:
    config = {
        "max_batch_size": 16,
        "dynamic_batching": {"max_queue_delay_microseconds": 500, "preferred_batch_size": [8, 4]},
        "instance_group": [{"count": 2, "kind": "KIND_CPU"}],
    }
    block = server_model(config, {1: 2.0, 8: 6.0}, 0.3, 2, 1.5)
    assert block is not None
    assert (block.max_batch_size, block.max_queue_delay_us, block.instances) == (16, 500.0, 2)
    assert block.preferred_batch_sizes == (4, 8) and block.batch_service_ms == ((1, 2.0), (8, 6.0))
    assert (block.frontend_ms, block.overhead_ms) == (0.3, 1.5)
    assert server_model(config, {}, 0.3, 2) is None
