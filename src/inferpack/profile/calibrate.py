"""The profile's ``server`` block, read off the server under measurement.

What ``inferpack simulate`` and the planner's tail constraint need (plan/server_model.py),
taken from the server's own statistics extension (``GET /v2/models/stats``) and model
configuration, so that it is measured under the same load, on the same host, as the
profile's points:

    batch_service_ms[b] = (compute_input + compute_infer + compute_output ns) / executions
                          of batch size b, over every level and every copy
    frontend_ms         = per request, the engine's time outside queue and compute
                          ((success - queue - compute) ns / requests) at the lowest level
                          measured (where nothing waits for a worker): a FIFO stage
    overhead_ms         = the clients' p50 at that level less the engine's mean time: HTTP
                          parsing and encoding, the hops, the client; added to every
                          request, queueing nothing (at 920 req/s on this VM a FIFO stage
                          of the clients' whole 1.5 ms would have saturated, the server
                          did not)
    max_batch_size, max_queue_delay_us, preferred_batch_sizes, instances: the model config
    workers             = the server's CPU worker threads

Pure: stats and config documents in, a ServerModel out.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from inferpack.plan.server_model import ServerModel

COMPUTE = ("compute_input", "compute_infer", "compute_output")


def _ns(stats: Mapping[str, Any], key: str) -> tuple[int, int]:
    entry = stats.get(key) or {}
    return int(entry.get("count", 0)), int(entry.get("ns", 0))


def batch_totals(document: Mapping[str, Any], names: Iterable[str]) -> dict[int, tuple[int, int]]:
    """Per batch size, (executions, compute ns) so far, summed over the copies ``names``."""
    wanted = set(names)
    count: dict[int, int] = defaultdict(int)
    total_ns: dict[int, int] = defaultdict(int)
    for model in document.get("model_stats", []):
        if model.get("name") not in wanted:
            continue
        for row in model.get("batch_stats", []):
            size = int(row["batch_size"])
            executions, _ = _ns(row, "compute_infer")
            count[size] += executions
            total_ns[size] += sum(_ns(row, key)[1] for key in COMPUTE)
    return {b: (count[b], total_ns[b]) for b in sorted(count)}


def batch_service_ms(document: Mapping[str, Any], names: Iterable[str]) -> dict[int, float]:
    """Mean ms of one execution per batch size, over the copies ``names``."""
    totals = batch_totals(document, names)
    return {b: round(ns / count / 1e6, 4) for b, (count, ns) in totals.items() if count}


def _totals(document: Mapping[str, Any], names: Iterable[str]) -> dict[str, tuple[int, int]]:
    wanted = set(names)
    sums: dict[str, list[int]] = {key: [0, 0] for key in ("success", "queue", *COMPUTE)}
    for model in document.get("model_stats", []):
        if model.get("name") not in wanted:
            continue
        for key in ("success", "queue", *COMPUTE):
            count, ns = _ns(model.get("inference_stats", {}), key)
            sums[key][0] += count
            sums[key][1] += ns
    return {key: (value[0], value[1]) for key, value in sums.items()}


def request_times_ms(
    before: Mapping[str, Any],
    after: Mapping[str, Any],
    names: Sequence[str],
    client_p50_ms: float | None = None,
) -> tuple[float, float]:
    """(frontend_ms, overhead_ms) between two snapshots: the engine's own time per request
    outside queue and compute, and what the clients' p50 adds beyond the engine's time."""
    start, end = _totals(before, names), _totals(after, names)
    requests = end["success"][0] - start["success"][0]
    if requests <= 0:
        return 0.0, 0.0
    spent = {key: end[key][1] - start[key][1] for key in end}
    inside_ns = spent["queue"] + sum(spent[key] for key in COMPUTE)
    engine_ms = spent["success"] / requests / 1e6
    front_ms = max(engine_ms - inside_ns / requests / 1e6, 0.0)
    over_ms = 0.0 if client_p50_ms is None else max(client_p50_ms - engine_ms, 0.0)
    return round(front_ms, 4), round(over_ms, 4)


def server_model(
    config: Mapping[str, Any],
    service_ms: Mapping[int, float],
    front_ms: float,
    workers: int,
    over_ms: float = 0.0,
) -> ServerModel | None:
    """The block, from a Triton-shaped model config; None without any measured batch."""
    if not service_ms:
        return None
    batching = config.get("dynamic_batching") or {}
    groups = config.get("instance_group") or [{}]
    preferred = sorted(int(b) for b in batching.get("preferred_batch_size", []))
    return ServerModel(
        workers=workers,
        frontend_ms=front_ms,
        max_batch_size=max(1, int(config.get("max_batch_size") or 1)),
        max_queue_delay_us=float(batching.get("max_queue_delay_microseconds", 0)),
        instances=max(1, int(groups[0].get("count", 1))),
        batch_service_ms=tuple(sorted(service_ms.items())),
        preferred_batch_sizes=tuple(preferred),
        overhead_ms=over_ms,
    )
