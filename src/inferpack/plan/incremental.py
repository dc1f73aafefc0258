"""``plan --previous plan.yaml``: a new plan for new demand that keeps models where they are.

A fresh plan re-packs everything, so a small change of demand moves most models between
servers (each move is a load on the target and an unload on the source). Re-planning keeps
the previous placement as the starting point and moves only what must or what pays:

    demand = the new rates x (1 + headroom)
    keep: every previous server whose type is still offered, with the replicas of models
          still in the demand, each carrying the share of its model's rate it carried
          before; a server that no longer fits (its models got hotter) sheds rate until it
          does: its hottest replica keeps what fits (if that is at least a tenth of the
          server), or leaves
    place: what is not placed (new models, shed replicas, models of removed servers,
           the rate a model gained) as replicas of at most 0.9 of a server's compute on
           its cheapest-share type, first fit into the kept servers, then into new ones
    consolidate: before placing, kept servers are closed when every replica on them fits
           on the other kept ones (demand fell: fewer servers), within ``--max-moves``
           replicas moved; after placing, only servers opened by this re-plan are
           closed that way (an old server is never closed for a new one: that would
           move its replicas and save nothing); then the tail constraint as in a fresh
           plan

plan.yaml then lists the changes: ``moves`` (model, from, to: load on ``to`` before unloading
on ``from``), ``servers_added`` and ``servers_removed``. Kept servers keep their names.
The bound is the fresh plan's, so the gap includes what stability costs.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import numpy as np

from inferpack.plan.formats import Demand, Plan, PlanSummary, Profile, ServerPlan
from inferpack.plan.milp import aggregated_bound
from inferpack.plan.packing import (
    EPS,
    Bin,
    bin_usage,
    cheapest_share_assignment,
    cost_of,
    replica_vector,
    try_empty,
)
from inferpack.plan.problem import PlanOptions, Problem, ServerType, build_problem
from inferpack.plan.solve import BOUND_TIME_SHARE, TAIL_TIME_SHARE, server_plan
from inferpack.plan.tail import TailCheck, enforce_tail

REPLICA_SHARE = 0.9
# A kept replica that would carry less than this share of its server's compute is moved
# whole instead of keeping a sliver.
MIN_KEPT_SHARE = 0.1


def replan(
    previous: Plan,
    profiles: Sequence[Profile],
    demand: Sequence[Demand],
    types: Sequence[ServerType],
    options: PlanOptions,
    *,
    headroom: float = 0.0,
    max_moves: int | None = None,
) -> Plan:
    """The module docstring's re-plan of ``previous`` for ``demand``; ``max_moves`` caps the
    replicas moved by consolidation (moves that only save money), not the ones demand
    forces (a server over capacity, a new model)."""
    started = time.perf_counter()
    scaled = [dataclasses.replace(d, rps=d.rps * (1 + headroom)) for d in demand]
    problem = build_problem(profiles, scaled, types, options)
    bound, _ = aggregated_bound(problem, options.time_limit_s * BOUND_TIME_SHARE)
    bins, names = _kept(problem, previous)
    kept = set(names)
    bins, budget = _consolidate(problem, bins, max_moves, kept, victims="kept")
    _place_rest(problem, bins)
    bins, _ = _consolidate(problem, [b for b in bins if b.members], budget, kept, victims="new")
    tail_deadline_s = started + options.time_limit_s * TAIL_TIME_SHARE
    bins, checks, notes = enforce_tail(
        problem, bins, options.slo_p90_ms, tail_deadline_s, options.slowdown_margin
    )
    cost = cost_of(problem, bins)
    lower = min(bound.bound, cost)
    summary = PlanSummary(
        slo_p90_ms=options.slo_p90_ms,
        solver=f"incremental from the previous plan (headroom {headroom:g})",
        solve_seconds=round(time.perf_counter() - started, 3),
        objective_usd_per_hour=round(cost, 6),
        lower_bound_usd_per_hour=round(lower, 6),
        gap=round((cost - lower) / cost, 6) if cost else 0.0,
        status="feasible",
        notes=tuple(notes),
        max_memory_utilization=options.max_memory_utilization,
        max_compute_utilization=options.max_compute_utilization,
        server_overhead_mb=options.server_overhead_mb,
        slowdown_margin=options.slowdown_margin,
    )
    servers = _named(problem, bins, names, options, checks=checks, previous=previous)
    return Plan(summary, tuple(servers), changes=changes(previous, servers))


def options_of(summary: PlanSummary, time_limit_s: float) -> PlanOptions:
    """The options ``summary``'s plan was packed under (its SLO and caps; PlanOptions'
    defaults for a plan file written without them), to re-plan it alike."""
    default = PlanOptions(slo_p90_ms=summary.slo_p90_ms, time_limit_s=time_limit_s)
    memory, compute = summary.max_memory_utilization, summary.max_compute_utilization
    overhead, margin = summary.server_overhead_mb, summary.slowdown_margin
    return dataclasses.replace(
        default,
        max_memory_utilization=default.max_memory_utilization if memory is None else memory,
        max_compute_utilization=default.max_compute_utilization if compute is None else compute,
        server_overhead_mb=default.server_overhead_mb if overhead is None else overhead,
        slowdown_margin=default.slowdown_margin if margin is None else margin,
    )


def _kept(problem: Problem, previous: Plan) -> tuple[list[Bin], dict[int, str]]:
    """The previous servers that still fit their type, each shedding replicas until it fits;
    their names by ``id`` of the bin."""
    index = {d.model: m for m, d in enumerate(problem.models)}
    type_index = {t.name: i for i, t in enumerate(problem.types)}
    total: dict[str, float] = defaultdict(float)
    for server in previous.servers:
        for share in server.models:
            total[share.name] += share.rps
    bins: list[Bin] = []
    names: dict[int, str] = {}
    for server in previous.servers:
        t = type_index.get(server.instance_type)
        if t is None:
            continue
        members: dict[int, float] = {}
        for share in server.models:
            m = index.get(share.name)
            if m is None or not problem.usable[m, t]:
                continue
            members[m] = share.rps / total[share.name] if total[share.name] > 0 else 1.0
        used = bin_usage(problem, members, t)
        while members and np.any(used > 1.0 + EPS):
            _shed(problem, members, t, used)
            used = bin_usage(problem, members, t)
        if members:
            kept = Bin(t, members, used)
            bins.append(kept)
            names[id(kept)] = server.name
    return bins, names


def _shed(problem: Problem, members: dict[int, float], t: int, used: np.ndarray) -> None:
    """Make room on an overfull kept server: when only compute overflows, the hottest
    replica gives up the rate over capacity and stays (a replica too hot for its server
    keeps what fits rather than leave: moving it would empty the server), unless what it
    keeps is under ``MIN_KEPT_SHARE`` of the server; otherwise the hottest replica goes."""
    hottest = max(members, key=lambda m: problem.compute[m, t] * members[m])
    over = float(used[1]) - 1.0
    load = float(problem.compute[hottest, t]) * members[hottest]
    if used[0] <= 1.0 + EPS and used[2] <= 1.0 + EPS and load - over >= MIN_KEPT_SHARE:
        members[hottest] -= over / float(problem.compute[hottest, t])
        return
    del members[hottest]


def _consolidate(
    problem: Problem,
    bins: list[Bin],
    max_moves: int | None,
    kept: set[int],
    *,
    victims: str,
) -> tuple[list[Bin], int | None]:
    """Close servers of ``victims`` ("kept": the previous plan's, before placing; "new":
    those this re-plan opened, after) whose every replica fits on the others, the fewest
    replicas first (the fewest moves), then the emptiest; return the rest and the moves
    budget left. Closing a kept server saves its price and moves its replicas; closing a
    new one moves nothing (its replicas were never loaded). Closures stop before the
    moves would pass ``max_moves``."""
    closed: set[int] = set()
    budget = math.inf if max_moves is None else max_moves

    def order(server: Bin) -> tuple[bool, int, float]:
        return (id(server) in kept, len(server.members), float(server.used.max()))

    for victim in sorted(bins, key=order):
        is_kept = id(victim) in kept
        moves = len(victim.members) if is_kept else 0
        if moves > budget or is_kept != (victims == "kept"):
            continue
        others = [b for b in bins if b is not victim and id(b) not in closed]
        others.sort(key=lambda b: -float(b.used.max()))
        if try_empty(problem, victim, others):
            closed.add(id(victim))
            budget -= moves
    left = None if max_moves is None else int(budget)
    return [b for b in bins if id(b) not in closed], left


def _place_rest(problem: Problem, bins: list[Bin]) -> None:
    """Every model's rate not carried by ``bins`` as new replicas: first fit into the
    servers there are, then into new servers of the model's cheapest-share type."""
    carried = np.zeros(len(problem.models))
    for server in bins:
        for m, fraction in server.members.items():
            carried[m] += fraction
    cheapest = cheapest_share_assignment(problem)
    missing = [
        (m, float(1.0 - carried[m])) for m in range(len(problem.models)) if carried[m] < 1 - 1e-9
    ]
    missing.sort(key=lambda item: -problem.compute[item[0], cheapest[item[0]]] * item[1])
    for m, rest in missing:
        t = cheapest[m]
        copies = max(1, math.ceil(problem.compute[m, t] * rest / REPLICA_SHARE - 1e-12))
        for _ in range(copies):
            _first_fit(problem, bins, m, rest / copies, t)


def _first_fit(problem: Problem, bins: list[Bin], m: int, fraction: float, t_new: int) -> None:
    for server in bins:
        t = server.type_index
        if not problem.usable[m, t]:
            continue
        vector = replica_vector(problem, m, t, fraction)
        if m in server.members:  # more rate for a replica already there: compute only
            vector[0] = vector[2] = 0.0
        if np.all(server.used + vector <= 1.0 + EPS):
            server.members[m] = server.members.get(m, 0.0) + fraction
            server.used = server.used + vector
            return
    vector = replica_vector(problem, m, t_new, fraction)
    bins.append(Bin(t_new, {m: fraction}, vector))


def _named(
    problem: Problem,
    bins: list[Bin],
    names: dict[int, str],
    options: PlanOptions,
    *,
    checks: dict[int, TailCheck],
    previous: Plan,
) -> list[ServerPlan]:
    """Server plans: kept servers under their names, new ones numbered after the last."""
    taken = {s.name for s in previous.servers}
    numbers: dict[str, int] = defaultdict(int)
    for name in taken:
        head, _, tail = name.rpartition("-")
        if tail.isdigit():
            numbers[head] = max(numbers[head], int(tail))
    named = []
    for server in bins:
        plan = server_plan(problem, server, options, 0, checks.get(id(server)))
        kept = names.get(id(server))
        if kept is None:
            head = plan.instance_type.replace(".", "-")
            numbers[head] += 1
            kept = f"{head}-{numbers[head]:03d}"
        named.append(dataclasses.replace(plan, name=kept))
    return sorted(named, key=lambda s: s.name)


def changes(previous: Plan, servers: Sequence[ServerPlan]) -> dict[str, Any]:
    """What applying the plan does: replicas moved (load on ``to`` first, then unload on
    ``from``), servers added and removed."""
    before = _where(previous.servers)
    after = _where(servers)
    moves = []
    for model in sorted(set(before) | set(after)):
        gone = sorted(before.get(model, set()) - after.get(model, set()))
        new = sorted(after.get(model, set()) - before.get(model, set()))
        if gone or new:
            moves.append({"model": model, "from": gone, "to": new})
    old_names = {s.name for s in previous.servers}
    new_names = {s.name for s in servers}
    return {
        "moves": moves,
        "servers_added": sorted(new_names - old_names),
        "servers_removed": sorted(old_names - new_names),
    }


def _where(servers: Sequence[ServerPlan]) -> dict[str, set[str]]:
    hosts: dict[str, set[str]] = defaultdict(set)
    for server in servers:
        for share in server.models:
            hosts[share.name].add(server.name)
    return hosts
