"""Fleet policies over a day, in the simulator: static at peak, static at mean, re-planning.

    3,000 bert-base-like models (Zipf 1.0), 6,230 req/s at the daily peak (the seeds' fleet)
    a day as 12 two-hour intervals: total rate x (0.4 .. 1.0, a sine with its peak at
    noon); at interval 6 the hot set moves (model i takes the rate of model i + 1,500)
    policies:
        static-peak  one plan for every model's highest rate of the day
        static-mean  one plan for every model's mean rate
        replan       each interval, plan --previous from the last plan for the rate observed
                     in the interval before, headroom 0.2 (the first: its own rate)
        follow       as replan, on the interval's own rates: deploy --follow re-plans every
                     30 s, so within a two-hour interval it plans on that interval's demand
        autoscale    replica autoscaling only (a HorizontalPodAutoscaler per server): the
                     static-mean placement, each server copied k times, k the fewest that
                     keep its load at most 0.8 of its capacity under the interval's own
                     rates (an HPA reacts in minutes; the interval is two hours)
    each interval: inferpack simulate of that policy's plan under the interval's rates,
        30 simulated seconds -> share of requests over the SLO, fleet p90; cost = servers x
        price x 2 h; moves from the previous interval's plan

The profile is illustrative (an inf1.6xlarge with 4 workers, a batch curve of 15 ms for one
row and 40 ms for 8), not a measurement: the comparison is of policies on one model of a
server, in the simulator that [11] validates.

    python -m benchmarks.fleet_policies [--models 3000] [--interval-sim-s 30]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from typing import Any

import numpy as np

from benchmarks.common import write_result
from inferpack.plan.formats import Demand, Plan, Profile
from inferpack.plan.incremental import changes, replan
from inferpack.plan.problem import PlanOptions, ServerType
from inferpack.plan.server_model import ServerModel
from inferpack.plan.solve import make_plan
from inferpack.simulate.demand import from_demand
from inferpack.simulate.fleet import FleetOptions, simulate_fleet

SLO_MS = 100.0
INTERVALS = 12
INTERVAL_H = 2.0
PEAK_RPS = 6230.0
TYPE = ServerType("inf1.6xlarge", 1.18, 32 * 1024, "Inferentia")
BLOCK = ServerModel(
    workers=4,
    frontend_ms=0.1,
    max_batch_size=8,
    max_queue_delay_us=5000,
    instances=1,
    batch_service_ms=((1, 15.0), (8, 40.0)),
)
PROFILE = Profile(
    "bert-base", TYPE.name, 300.0, 200.0, SLO_MS, "illustrative", max_models=76, server=BLOCK
)


def day(models: int) -> list[list[Demand]]:
    """Each interval's demand (module docstring)."""
    weights = 1.0 / np.arange(1, models + 1)
    base = PEAK_RPS * weights / weights.sum()
    out = []
    for i in range(INTERVALS):
        level = 0.4 + 0.6 * (1 + math.sin(2 * math.pi * i / INTERVALS - math.pi / 2)) / 2
        rates = base if i < INTERVALS // 2 else np.roll(base, models // 2)
        out.append(
            [Demand(f"bert-{m:04d}", "bert-base", float(r * level)) for m, r in enumerate(rates)]
        )
    return out


def evaluate(plan: Plan, demand: list[Demand], sim_s: float, seed: int) -> dict[str, Any]:
    steps = from_demand(demand, sim_s)
    arrivals, outcomes = simulate_fleet(
        plan, [PROFILE], steps, FleetOptions(duration_s=sim_s, seed=seed)
    )
    latency = np.concatenate([o.latency_ms for o in outcomes])
    return {
        "servers": len(plan.servers),
        "usd": round(plan.totals["usd_per_hour"] * INTERVAL_H, 3),
        "requests": len(arrivals.time_s),
        "p90_ms": round(float(np.percentile(latency, 90)), 3),
        "over_slo_share": round(float(np.mean(latency > SLO_MS)), 5),
    }


def autoscaled(plan: Plan, demand: list[Demand], utilization: float = 0.8) -> Plan:
    """``plan``'s servers, each copied as often as its share of ``demand`` needs (above)."""
    rate = {d.model: d.rps for d in demand}
    planned: dict[str, float] = {}
    for server in plan.servers:
        for share in server.models:
            planned[share.name] = planned.get(share.name, 0.0) + share.rps
    servers = []
    for server in plan.servers:
        shares = [
            (m, rate[m.name] * m.rps / planned[m.name] if planned[m.name] else 0.0)
            for m in server.models
        ]
        load = sum(rps for _, rps in shares) / PROFILE.capacity_rps
        copies = max(1, math.ceil(load / utilization - 1e-9))
        for copy in range(copies):
            models = tuple(dataclasses.replace(m, rps=rps / copies) for m, rps in shares)
            servers.append(dataclasses.replace(server, name=f"{server.name}-{copy}", models=models))
    return dataclasses.replace(plan, servers=tuple(servers))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=3000)
    parser.add_argument("--interval-sim-s", type=float, default=30.0)
    args = parser.parse_args()
    options = PlanOptions(slo_p90_ms=SLO_MS, time_limit_s=10.0)
    demands = day(args.models)
    names = [d.model for d in demands[0]]
    peak = [Demand(n, "bert-base", max(d[i].rps for d in demands)) for i, n in enumerate(names)]
    mean = [
        Demand(n, "bert-base", float(np.mean([d[i].rps for d in demands])))
        for i, n in enumerate(names)
    ]
    started = time.perf_counter()
    fixed = {
        "static-peak": make_plan([PROFILE], peak, [TYPE], options),
        "static-mean": make_plan([PROFILE], mean, [TYPE], options),
    }
    rows: dict[str, list[dict[str, Any]]] = {
        name: [] for name in (*fixed, "replan", "follow", "autoscale")
    }
    current = make_plan([PROFILE], demands[0], [TYPE], options)
    following = current
    for i, demand in enumerate(demands):
        for name, plan in fixed.items():
            rows[name].append({"interval": i, **evaluate(plan, demand, args.interval_sim_s, i)})
        moves = 0
        if i > 0:  # planned on the interval before, with headroom
            previous = current
            current = replan(previous, [PROFILE], demands[i - 1], [TYPE], options, headroom=0.2)
            moves = len((current.changes or changes(previous, current.servers))["moves"])
        row = {"interval": i, "moves": moves, **evaluate(current, demand, args.interval_sim_s, i)}
        rows["replan"].append(row)
        moves = 0
        if i > 0:  # planned on this interval's rates
            previous = following
            following = replan(previous, [PROFILE], demand, [TYPE], options, headroom=0.2)
            moves = len((following.changes or changes(previous, following.servers))["moves"])
        row = {"interval": i, "moves": moves, **evaluate(following, demand, args.interval_sim_s, i)}
        rows["follow"].append(row)
        scaled = autoscaled(fixed["static-mean"], demand)
        row = {"interval": i, **evaluate(scaled, demand, args.interval_sim_s, i)}
        rows["autoscale"].append(row)
        print(i, {k: v[-1] for k, v in rows.items()}, flush=True)
    summary = {
        name: {
            "server_hours": sum(r["servers"] for r in series) * INTERVAL_H,
            "usd_per_day": round(sum(r["usd"] for r in series), 2),
            "over_slo_share": round(
                sum(r["over_slo_share"] * r["requests"] for r in series)
                / sum(r["requests"] for r in series),
                5,
            ),
            "intervals_over_slo_p90": sum(1 for r in series if r["p90_ms"] > SLO_MS),
            "moves": sum(r.get("moves", 0) for r in series),
        }
        for name, series in rows.items()
    }
    out = write_result(
        "fleet_policies.json",
        {
            "schema": "inferpack.policies/1",
            "policies": [{"name": name, **values} for name, values in summary.items()],
            "models": args.models,
            "peak_rps": PEAK_RPS,
            "intervals": INTERVALS,
            "interval_hours": INTERVAL_H,
            "slo_p90_ms": SLO_MS,
            "profile": "illustrative inf1.6xlarge bert-base (module docstring)",
            "summary": summary,
            "intervals_by_policy": rows,
            "wall_s": round(time.perf_counter() - started, 1),
        },
    )
    for name, values in summary.items():
        print(name, values)
    print(out)


if __name__ == "__main__":
    main()
