"""make_plan: profiles + demand + server types + options → the cheapest Plan found, with
its lower bound and gap.

    problem  = sizes of every model on every type          (problem.py)
    bound, z = aggregated MILP: server counts per type     (milp.py; any size)
    plans    = FFD on the cheapest-share assignment, on the bound's assignment, and on each
               type alone; each improved (close emptiest servers, downsize)   (packing.py)
    best     = the cheapest of them
    if the exact assignment model is small enough and a gap remains:
        best, bound = exact MILP warm-started by best, within the time left
    best     = servers whose simulated p90 misses the SLO shed replicas   (tail.py)
    gap      = (cost - bound) / cost

Pure: no files, no clock but the one timing the solve, no printing.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from inferpack.plan.formats import Demand, ModelShare, Plan, PlanSummary, Profile, ServerPlan
from inferpack.plan.milp import (
    EXACT_MAX_ASSIGNMENTS,
    aggregated_bound,
    exact_assignment,
    exact_size,
)
from inferpack.plan.packing import (
    Bin,
    PackingTimeoutError,
    balanced_fill,
    cheapest_share_assignment,
    cost_of,
    first_fit_decreasing,
    improve,
)
from inferpack.plan.problem import PlanOptions, Problem, ServerType, build_problem
from inferpack.plan.tail import TailCheck, enforce_tail

# Gap below which the exact model is not worth starting (solver tolerance).
GAP_TOLERANCE = 1e-6
# Largest compute share of one replica tried when packing (see packing.balanced_fill), in
# the order tried. At 30,000 models (benchmarks/plan_scale.py, the bound 197.04 USD/h):
# 0.9 packs 199.21 (gap 1.1 %), 0.75 201.24, 0.6 204.06, 0.5 203.25, 1.0 211.50 — a hot
# replica at 0.9 of a server's compute leaves room for memory-heavy cold models beside it
# (1.0 strands that memory; 0.5 doubles the hot models' copies, each paying memory). At
# 3,000 1.0 was the better one; every share fits the time limit there.
REPLICA_SHARES = (0.9, 0.5, 1.0)
# Share of the time limit the aggregated bound may take; packings end by the second share
# (the single-type comparisons and the tail check still need their seconds), the exact
# model gets the rest.
BOUND_TIME_SHARE = 0.4
HEURISTIC_TIME_SHARE = 0.85
# The tail constraint simulates servers until this share of the limit (then notes the rest).
TAIL_TIME_SHARE = 0.97


def make_plan(
    profiles: Sequence[Profile],
    demand: Sequence[Demand],
    types: Sequence[ServerType],
    options: PlanOptions,
) -> Plan:
    started = time.perf_counter()
    problem = build_problem(profiles, demand, types, options)
    bound_result, z = aggregated_bound(problem, options.time_limit_s * BOUND_TIME_SHARE)
    lower = bound_result.bound
    notes: list[str] = []
    deadline_s = started + options.time_limit_s * HEURISTIC_TIME_SHARE
    candidates = _heuristic_plans(problem, z, deadline_s, notes)
    by_cost = sorted(candidates, key=lambda name: cost_of(problem, candidates[name]))
    best = candidates[by_cost[0]]
    solver = f"{by_cost[0]} packing + highs aggregated bound ({bound_result.status.lower()})"
    cost = cost_of(problem, best)
    counts = _candidate_counts(problem, cost)
    if cost - lower > GAP_TOLERANCE * cost and exact_size(problem, counts) <= EXACT_MAX_ASSIGNMENTS:
        left_s = options.time_limit_s - (time.perf_counter() - started)
        result, bins = exact_assignment(problem, counts, best, left_s)
        if result.objective is not None and cost_of(problem, bins) < cost - 1e-9:
            best, cost = bins, cost_of(problem, bins)
        proven = result.status == "Optimal"
        lower = max(lower, cost if proven else min(result.bound, cost))
        solver = f"highs exact assignment MILP, ffd warm start ({result.status.lower()})"
    elif cost - lower > GAP_TOLERANCE * cost:
        notes.append(
            f"exact model too large ({exact_size(problem, counts):,} assignments > "
            f"{EXACT_MAX_ASSIGNMENTS:,}): ffd packing, gap against the aggregated bound"
        )
    tail_deadline_s = started + options.time_limit_s * TAIL_TIME_SHARE
    best, checks, tail_notes = enforce_tail(
        problem, best, options.slo_p90_ms, tail_deadline_s, options.slowdown_margin
    )
    notes += tail_notes
    cost = cost_of(problem, best)
    lower = min(lower, cost)
    summary = PlanSummary(
        slo_p90_ms=options.slo_p90_ms,
        solver=solver,
        solve_seconds=round(time.perf_counter() - started, 3),
        objective_usd_per_hour=round(cost, 6),
        lower_bound_usd_per_hour=round(lower, 6),
        gap=round((cost - lower) / cost, 6) if cost else 0.0,
        status="optimal" if cost - lower <= GAP_TOLERANCE * cost else "feasible",
        notes=tuple(notes),
        max_memory_utilization=options.max_memory_utilization,
        max_compute_utilization=options.max_compute_utilization,
        server_overhead_mb=options.server_overhead_mb,
        slowdown_margin=options.slowdown_margin,
    )
    used = {problem.types[b.type_index].name for b in best}
    extrapolated = tuple(note for name, note in problem.notes if name in used)
    summary = dataclasses.replace(summary, notes=extrapolated + summary.notes)
    servers = _server_plans(problem, best, options, checks)
    return Plan(summary, tuple(servers), tuple(_alternatives(problem, candidates)))


def _heuristic_plans(
    problem: Problem, z: np.ndarray, deadline_s: float, notes: list[str]
) -> dict[str, list[Bin]]:
    """Improved packings keyed by how types were chosen: the mixed candidates, then each
    type alone (kept for the comparison the report shows).

    The time limit is a promise: a fast first-fit packing of the bound's assignment comes
    first and always finishes; the balanced fills (better, quadratic) run while time is
    left and are dropped, with a note, when the deadline passes during one."""
    cheapest = cheapest_share_assignment(problem)
    guided = cheapest
    if z.any():
        guided = [int(np.argmax(row)) if row.max() > 0 else cheapest[m] for m, row in enumerate(z)]
    plans = {"first-fit": improve(problem, first_fit_decreasing(problem, guided))}
    if guided != cheapest:
        fast = first_fit_decreasing(problem, cheapest)
        plans["first-fit/cheapest-share"] = improve(problem, fast)
    # Single-type plans are for comparison: first-fit decreasing, fast at any size.
    for t, server in enumerate(problem.types):
        if problem.usable[:, t].all():
            alone = first_fit_decreasing(problem, [t] * len(problem.models))
            plans[server.name] = improve(problem, alone, downsize=False)
    mixed: dict[str, tuple[list[int], float]] = {}
    for share in REPLICA_SHARES:
        mixed[f"bound-guided/{share:g}"] = (guided, share)
    mixed["cheapest-share"] = (cheapest, 1.0)
    for name, (assignment, share) in mixed.items():
        try:
            filled = balanced_fill(problem, assignment, share, deadline_s)
        except PackingTimeoutError:
            notes.append(f"time limit: the {name} balanced packing was not finished")
            break
        plans[name] = improve(problem, filled)
    return plans


def _candidate_counts(problem: Problem, cost: float) -> list[int]:
    """Servers per type an optimum could use: no more than ``cost`` buys, no more than
    there are replicas that may run there."""
    counts = []
    for t, server in enumerate(problem.types):
        affordable = math.floor(cost / server.usd_per_hour + 1e-9)
        usable = np.flatnonzero(problem.usable[:, t])
        replicas = sum(problem.replicas(int(m), t) for m in usable)
        counts.append(min(affordable, replicas))
    return counts


def _server_plans(
    problem: Problem, bins: list[Bin], options: PlanOptions, checks: dict[int, TailCheck]
) -> list[ServerPlan]:
    ordered = sorted(bins, key=lambda b: (problem.types[b.type_index].name, -b.used.max()))
    numbers: dict[str, int] = {}
    servers = []
    for server in ordered:
        kind = problem.types[server.type_index]
        numbers[kind.name] = numbers.get(kind.name, 0) + 1
        check = checks.get(id(server))
        servers.append(server_plan(problem, server, options, numbers[kind.name], check))
    return servers


def server_plan(
    problem: Problem, server: Bin, options: PlanOptions, number: int, check: TailCheck | None
) -> ServerPlan:
    t = server.type_index
    kind = problem.types[t]
    shares = []
    memory_mb = 0.0
    load: dict[str, float] = {}  # kind → rps
    utilization = 0.0  # shares of the capacities the plan was packed with, summed
    for m, fraction in sorted(server.members.items(), key=lambda kv: problem.models[kv[0]].model):
        model = problem.models[m]
        rps = model.rps * fraction
        shares.append(ModelShare(model.model, model.kind, round(rps, 6)))
        memory_mb += float(problem.memory_mb[m, t])
        utilization += rps / problem.capacity_rps[(model.kind, kind.name)]
        load[model.kind] = load.get(model.kind, 0.0) + rps
    return ServerPlan(
        name=f"{kind.name.replace('.', '-')}-{number:03d}",
        instance_type=kind.name,
        usd_per_hour=kind.usd_per_hour,
        models=tuple(shares),
        memory_mb=round(memory_mb, 3),
        memory_utilization=round((memory_mb + options.server_overhead_mb) / kind.memory_mb, 4),
        compute_utilization=round(utilization, 4),
        predicted_p90_ms=(
            check.p90_ms
            if check is not None
            else _predicted_p90_ms(problem, kind.name, load, len(server.members))
        ),
        tolerated_slowdown=None if check is None else check.tolerated_slowdown,
    )


def _predicted_p90_ms(
    problem: Problem, type_name: str, load: dict[str, float], models: int
) -> float | None:
    """Where the server was not simulated (plan/tail.py: its profiles lack server blocks),
    the worst kind's p90 at the server's load, from its profile's measured points at the
    server's model count (plan/counts.py).

    A server running at a fraction u of capacity is taken to behave like a server of one
    kind at u x that kind's capacity (capacity shares add up, which is how the planner
    packs them), u counted against each kind's capacity at ``models`` models. None when a
    profile has no measured points."""
    capacity = {}
    for kind in load:
        family = problem.families[(kind, type_name)]
        at_count = family.capacity_at(models, problem.slo_p90_ms)
        capacity[kind] = at_count or problem.capacity_rps[(kind, type_name)]
    utilization = sum(rps / capacity[kind] for kind, rps in load.items())
    worst = None
    for kind in load:
        profile = problem.families[(kind, type_name)].at(models)
        p90 = profile.p90_at_ms(utilization * capacity[kind])
        if p90 is None:
            return None
        worst = p90 if worst is None else max(worst, p90)
    return None if worst is None else round(worst, 3)


def _alternatives(problem: Problem, plans: dict[str, list[Bin]]) -> list[dict[str, Any]]:
    """The cheapest plan on each instance type alone, beside its own bound."""
    rows: list[dict[str, Any]] = []
    count = len(problem.models)
    for t, server in enumerate(problem.types):
        if server.name not in plans:
            missing = int((~problem.usable[:, t]).sum())
            rows.append(
                {
                    "instance_type": server.name,
                    "feasible": False,
                    "reason": f"{missing} of {count} models cannot run on it",
                }
            )
            continue
        bins = plans[server.name]
        replicas = np.maximum(1.0, problem.compute[:, t])
        need = max(
            float((problem.memory[:, t] * replicas).sum()),
            float(problem.compute[:, t].sum()),
            float((problem.slots[:, t] * replicas).sum()),
        )
        usd = cost_of(problem, bins)
        rows.append(
            {
                "instance_type": server.name,
                "feasible": True,
                "servers": len(bins),
                "usd_per_hour": round(usd, 6),
                "usd_per_model_hour": round(usd / count, 8),
                "lower_bound_usd_per_hour": round(math.ceil(need - 1e-9) * server.usd_per_hour, 6),
            }
        )
    return rows
