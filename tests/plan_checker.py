"""An independent feasibility checker for plan.yaml documents.

It reads the plan as plain data and recomputes every constraint from the profiles, the
demand and the prices, sharing no code with the planner beyond the file formats' names.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Mapping
from typing import Any

TOLERANCE = 1e-6


def violations(
    plan: Mapping[str, Any],
    profiles: list[dict[str, Any]],
    demand: dict[str, tuple[str, float]],
    prices_usd_per_hour: Mapping[str, float],
    memory_mb: Mapping[str, float],
    max_memory_utilization: float = 0.9,
    max_compute_utilization: float = 0.8,
    overhead_mb: float = 600.0,
) -> list[str]:
    """Every broken constraint of ``plan`` (empty when the plan is feasible)."""
    found: list[str] = []
    entries: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for p in profiles:
        entries[(p["kind"], p["instance_type"])].append(p)
    served: dict[str, float] = defaultdict(float)
    total_usd = 0.0
    for server in plan["servers"]:
        name, kind_of_server = server["name"], server["instance_type"]
        price = prices_usd_per_hour[kind_of_server]
        total_usd += price
        if not math.isclose(server["usd_per_hour"], price, rel_tol=1e-9):
            found.append(f"{name}: price {server['usd_per_hour']} != {price}")
        mem = compute = slots = 0.0
        names = [m["name"] for m in server["models"]]
        if len(names) != len(set(names)):
            found.append(f"{name}: a model appears twice")
        for model in server["models"]:
            kind, _ = demand[model["name"]]
            key = (kind, kind_of_server)
            if key not in entries:
                found.append(f"{name}: {model['name']} ({kind}) has no profile on {kind_of_server}")
                continue
            p = entries[key][0]
            mem += max(e["model_memory_mb"] for e in entries[key])
            compute += model["rps"] / _capacity(entries[key], len(names))
            slots += 1 / p["max_models"] if p.get("max_models") else 0.0
            served[model["name"]] += model["rps"]
        room = memory_mb[kind_of_server] * max_memory_utilization - overhead_mb
        if mem > room * (1 + TOLERANCE):
            found.append(f"{name}: memory {mem:.1f} MB > {room:.1f} MB")
        if compute > max_compute_utilization * (1 + TOLERANCE):
            found.append(f"{name}: compute {compute:.4f} > {max_compute_utilization}")
        if slots > 1 + TOLERANCE:
            found.append(f"{name}: {slots:.3f} of max_models")
    return found + _total_violations(plan, demand, served, total_usd)


def _total_violations(
    plan: Mapping[str, Any],
    demand: dict[str, tuple[str, float]],
    served: Mapping[str, float],
    total_usd: float,
) -> list[str]:
    found = []
    for model, (_, rps) in demand.items():
        if not math.isclose(served.get(model, -1.0), rps, rel_tol=1e-4, abs_tol=1e-4):
            found.append(f"{model}: served {served.get(model)} rps of {rps}")
    if not math.isclose(total_usd, plan["plan"]["objective_usd_per_hour"], rel_tol=1e-6):
        found.append(f"objective {plan['plan']['objective_usd_per_hour']} != sum {total_usd}")
    if plan["plan"]["lower_bound_usd_per_hour"] > total_usd * (1 + 1e-9):
        found.append("lower bound above the objective")
    return found


def _capacity(entries: list[dict[str, Any]], models: int) -> float:
    """capacity_rps of a server holding ``models`` models: one entry reads the same at every
    count; entries by models_per_server are interpolated linearly in log(count), clamped to
    the counts measured."""
    if len(entries) == 1:
        return float(entries[0]["capacity_rps"])
    ranked = sorted((e["models_per_server"], e["capacity_rps"]) for e in entries)
    if models <= ranked[0][0]:
        return float(ranked[0][1])
    for (n0, c0), (n1, c1) in itertools.pairwise(ranked):
        if models <= n1:
            share = (math.log(models) - math.log(n0)) / (math.log(n1) - math.log(n0))
            return float(c0 + share * (c1 - c0))
    return float(ranked[-1][1])
