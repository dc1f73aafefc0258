"""Planner scale: 300 to 30,000 models (Zipf demand, 6 kinds) on 6 instance types.

For each size: the plan's USD/h, the aggregated lower bound, the gap, solve time, and
first-fit decreasing alone beside it. The profiles are illustrative figures for six model
kinds on six catalogue types (bert-base on inf1.6xlarge is the seeds' 76 models per
server); they are the solver's input, not measurements of this machine. Prices come from
the packaged catalogue.

    python benchmarks/plan_scale.py [--sizes 300,1000,3000,10000,30000] [--time-limit-s 10]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.common import machine, write_result
from inferpack.bench.catalog import Catalog
from inferpack.plan.formats import Demand, Profile
from inferpack.plan.packing import cheapest_share_assignment, cost_of, first_fit_decreasing
from inferpack.plan.problem import PlanOptions, build_problem, server_types_from_catalog
from inferpack.plan.solve import make_plan

TYPES = (
    "inf1.xlarge",
    "inf1.2xlarge",
    "inf1.6xlarge",
    "g4dn.xlarge",
    "g4dn.12xlarge",
    "c5.2xlarge",
)
# kind: memory MB per model, then per type: capacity_rps at p90 100 ms, max_models (or None)
KINDS = {
    "bert-base": (
        420.0,
        {
            "inf1.xlarge": (180, 11),
            "inf1.2xlarge": (190, 24),
            "inf1.6xlarge": (620, 76),
            "g4dn.xlarge": (400, 18),
            "g4dn.12xlarge": (1500, 72),
            "c5.2xlarge": (40, None),
        },
    ),
    "distilbert": (
        260.0,
        {
            "inf1.xlarge": (300, 20),
            "inf1.2xlarge": (320, 40),
            "inf1.6xlarge": (1000, 120),
            "g4dn.xlarge": (700, 28),
            "g4dn.12xlarge": (2600, 110),
            "c5.2xlarge": (80, None),
        },
    ),
    "resnet50": (
        100.0,
        {
            "inf1.xlarge": (900, 30),
            "inf1.2xlarge": (950, 60),
            "inf1.6xlarge": (3000, 200),
            "g4dn.xlarge": (1200, None),
            "g4dn.12xlarge": (4500, None),
            "c5.2xlarge": (60, None),
        },
    ),
    "openpose": (
        210.0,
        {
            "inf1.xlarge": (500, 10),
            "inf1.2xlarge": (560, 20),
            "inf1.6xlarge": (1600, 60),
            "g4dn.xlarge": (350, None),
            "g4dn.12xlarge": (1300, None),
        },
    ),
    "small-cnn": (
        0.2,
        {"c5.2xlarge": (700, None), "g4dn.xlarge": (2500, None), "inf1.xlarge": (2000, 200)},
    ),
    "tiny-mlp": (0.02, {"c5.2xlarge": (4000, None), "g4dn.xlarge": (6000, None)}),
}


def profiles() -> list[Profile]:
    rows = []
    for kind, (memory_mb, per_type) in KINDS.items():
        for instance_type, (capacity, max_models) in per_type.items():
            rows.append(
                Profile(
                    kind,
                    instance_type,
                    memory_mb,
                    float(capacity),
                    100.0,
                    "illustrative (benchmarks/plan_scale.py)",
                    max_models=max_models,
                )
            )
    return rows


def zipf_demand(count: int, total_rps: float, seed: int = 0) -> list[Demand]:
    rng = np.random.default_rng(seed)
    ranks = np.arange(1, count + 1)
    weights = 1.0 / ranks**1.1
    rps = total_rps * weights / weights.sum()
    kinds = rng.choice(list(KINDS), size=count, p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.05])
    return [
        Demand(f"model-{i:05d}", str(k), round(float(r), 4))
        for i, (k, r) in enumerate(zip(kinds, rps, strict=True))
    ]


def run(size: int, time_limit_s: float) -> dict:
    demand = zipf_demand(size, total_rps=2.0 * size)
    types = server_types_from_catalog(Catalog.load(None), TYPES)
    options = PlanOptions(slo_p90_ms=100.0, time_limit_s=time_limit_s)
    started = time.perf_counter()
    problem = build_problem(profiles(), demand, types, options)
    ffd = first_fit_decreasing(problem, cheapest_share_assignment(problem))
    ffd_s = time.perf_counter() - started
    plan = make_plan(profiles(), demand, types, options)
    by_type: dict[str, int] = {}
    for server in plan.servers:
        by_type[server.instance_type] = by_type.get(server.instance_type, 0) + 1
    row = {
        "models": size,
        "total_rps": round(sum(d.rps for d in demand), 1),
        "servers": plan.totals["servers"],
        "servers_by_type": by_type,
        "usd_per_hour": plan.totals["usd_per_hour"],
        "lower_bound_usd_per_hour": plan.plan.lower_bound_usd_per_hour,
        "gap": plan.plan.gap,
        "solve_s": plan.plan.solve_seconds,
        "solver": plan.plan.solver,
        "ffd_alone_usd_per_hour": round(cost_of(problem, ffd), 4),
        "ffd_alone_gap": round(1 - plan.plan.lower_bound_usd_per_hour / cost_of(problem, ffd), 6),
        "ffd_alone_s": round(ffd_s, 3),
        "single_type": plan.alternatives,
    }
    print(
        f"{size:>6} models: {row['usd_per_hour']:9.3f} USD/h,"
        f" bound {row['lower_bound_usd_per_hour']:9.3f}, gap {row['gap']:.3%},"
        f" {row['solve_s']:.2f} s; ffd alone {row['ffd_alone_usd_per_hour']:.3f}"
        f" (gap {row['ffd_alone_gap']:.2%}, {ffd_s:.2f} s)",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="300,1000,3000,10000,30000")
    parser.add_argument("--time-limit-s", type=float, default=10.0)
    parser.add_argument(
        "--output", default="plan_scale.json", help="name under benchmarks/results/"
    )
    args = parser.parse_args()
    rows = [run(int(s), args.time_limit_s) for s in args.sizes.split(",")]
    write_result(
        args.output,
        {
            "machine": machine(),
            "time_limit_s": args.time_limit_s,
            "kinds": list(KINDS),
            "instance_types": list(TYPES),
            "runs": rows,
        },
    )


if __name__ == "__main__":
    main()
