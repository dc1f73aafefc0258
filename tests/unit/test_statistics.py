"""Statistics follow Triton's counting rules (per request for compute, per execution for
batch_stats) and render as the extension's body."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from inferpack.protocol.model_info import triton_statistics
from inferpack.runtime.statistics import BatchTiming, ModelStatistics

TIMING = BatchTiming(input_s=0.001, infer_s=0.002, output_s=0.0005)


def test_a_batch_counts_once_per_request_and_once_per_execution() -> None:
    stats = ModelStatistics()
    stats.record_batch(rows=5, timing=TIMING, queue_s=[0.01, 0.02, 0.03])
    assert (stats.inference_count, stats.execution_count) == (5, 1)
    # Each of the 3 requests saw the whole batch's compute time.
    assert (stats.compute.input.count, stats.compute.input.ns) == (3, 3_000_000)
    assert (stats.compute.infer.count, stats.compute.infer.ns) == (3, 6_000_000)
    assert (stats.compute.output.count, stats.compute.output.ns) == (3, 1_500_000)
    assert (stats.queue.count, stats.queue.ns) == (3, 60_000_000)
    batch = stats.batches[5]
    assert (batch.infer.count, batch.infer.ns) == (1, 2_000_000)
    assert batch.input.count == batch.output.count == 1


def test_requests_record_success_and_failure_apart() -> None:
    stats = ModelStatistics()
    stats.record_request(True, 0.004)
    stats.record_request(False, 0.001)
    assert (stats.success.count, stats.success.ns) == (1, 4_000_000)
    assert (stats.fail.count, stats.fail.ns) == (1, 1_000_000)
    assert stats.last_inference_ms > 0


def test_the_extension_body_has_equal_compute_counts() -> None:
    stats = ModelStatistics()
    stats.record_batch(rows=2, timing=TIMING, queue_s=[0.0, 0.0])
    stats.record_batch(rows=1, timing=TIMING, queue_s=[0.0])
    model: Any = SimpleNamespace(config=SimpleNamespace(name="m"), version="3", statistics=stats)
    body = triton_statistics([model])["model_stats"][0]
    assert (body["name"], body["version"], body["execution_count"]) == ("m", "3", 2)
    inference = body["inference_stats"]
    counts = {inference[k]["count"] for k in ("compute_input", "compute_infer", "compute_output")}
    assert counts == {3}
    assert inference["cache_hit"] == inference["cache_miss"] == {"count": 0, "ns": 0}
    assert [b["batch_size"] for b in body["batch_stats"]] == [1, 2]
    assert body["batch_stats"][1]["compute_infer"] == {"count": 1, "ns": 2_000_000}
