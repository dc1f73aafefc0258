"""The simulation as data: fleet, per-server and per-model percentiles, SLO, cost (JSON)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from inferpack.plan.formats import Plan
from inferpack.simulate.fleet import Arrivals, FleetOptions, ServerOutcome

PERCENTILES = (50, 90, 99)


def _percentiles(latency_ms: np.ndarray) -> dict[str, float | None]:
    if len(latency_ms) == 0:
        return {f"p{q}_ms": None for q in PERCENTILES}
    values = np.percentile(latency_ms, PERCENTILES, method="inverted_cdf")
    return {f"p{q}_ms": round(float(v), 3) for q, v in zip(PERCENTILES, values, strict=True)}


def _models(arrivals: Arrivals, outcomes: Sequence[ServerOutcome], duration_s: float) -> list[Any]:
    latency = np.concatenate([o.latency_ms for o in outcomes] or [np.empty(0)])
    model = np.concatenate([o.model for o in outcomes] or [np.empty(0, np.int32)])
    order = np.argsort(model, kind="stable")
    bounds = np.searchsorted(model[order], np.arange(len(arrivals.names) + 1))
    rows = []
    for k, name in enumerate(arrivals.names):
        mine = latency[order[bounds[k] : bounds[k + 1]]]
        rows.append(
            {"name": name, "requests": len(mine), "rps": round(len(mine) / duration_s, 4)}
            | _percentiles(mine)
        )
    return rows


def build_document(
    plan: Plan,
    arrivals: Arrivals,
    outcomes: Sequence[ServerOutcome],
    options: FleetOptions,
    spec: dict[str, Any],
) -> dict[str, Any]:
    slo = plan.plan.slo_p90_ms
    servers = []
    for o in outcomes:
        stats = _percentiles(o.latency_ms)
        p90 = stats["p90_ms"]
        servers.append(
            {
                "name": o.server.name,
                "instance_type": o.server.instance_type,
                "models": len(o.server.models),
                "requests": len(o.latency_ms),
                "rps": round(len(o.latency_ms) / options.duration_s, 4),
                **stats,
                "planned_p90_ms": o.server.predicted_p90_ms,
                "meets_slo": p90 is None or p90 <= slo,
                "utilization": round(o.busy_share, 4),
                "mean_batch_size": round(len(o.latency_ms) / o.batches, 3) if o.batches else None,
            }
        )
    latency = np.concatenate([o.latency_ms for o in outcomes] or [np.empty(0)])
    fleet = {
        "requests": len(latency),
        **_percentiles(latency),
        "slo_p90_ms": slo,
        "over_slo_pct": round(100 * float((latency > slo).mean()), 3) if len(latency) else 0.0,
        "servers_over_slo": [s["name"] for s in servers if not s["meets_slo"]],
        "usd_per_hour": round(sum(s.usd_per_hour for s in plan.servers), 6),
    }
    return {
        "schema": "inferpack.simulation/1",
        "spec": spec
        | {
            "duration_s": options.duration_s,
            "network_ms": options.network_ms,
            "router_ms": options.router_ms,
            "seed": options.seed,
        },
        "fleet": fleet,
        "servers": servers,
        "models": _models(arrivals, outcomes, options.duration_s),
    }
