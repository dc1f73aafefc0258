"""A planned fleet, simulated: router, then each server's frontend, batchers and workers.

    for every model: arrivals over the run (Poisson at its rate, or piecewise by a trace)
    router: one FIFO stage for the whole fleet (``router_ms`` of CPU per request)
    split each model's requests among its replicas by the plan's shares (weighted random)
    per server: simulate_server (frontend, per-model batchers, shared workers)
    latency = answer - arrival + network_ms (router <-> server and back) + overhead_ms

The router's least-outstanding tie-break is not modelled: replicas are chosen by planned
share, which keeps each replica's arrivals Poisson (thinning) and the servers independent,
so they are simulated one at a time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from inferpack.errors import ConfigError
from inferpack.plan.counts import ProfileFamily, families
from inferpack.plan.formats import Plan, Profile, ServerPlan
from inferpack.plan.server_model import ServerModel, shared_server
from inferpack.plan.tail import sim_model
from inferpack.queueing.server import frontend_departures, piecewise_arrivals, simulate_server

# rate of each model (by name) over [start_s, end_s): the demand or a trace step
RateSteps = Mapping[str, Sequence[tuple[float, float, float]]]


@dataclass(frozen=True)
class FleetOptions:
    duration_s: float = 600.0
    network_ms: float = 0.0
    router_ms: float = 0.0
    seed: int = 0


@dataclass(frozen=True)
class Arrivals:
    """Every request of the run: arrival time (s) and model index, sorted by time."""

    time_s: np.ndarray
    model: np.ndarray
    names: tuple[str, ...]


@dataclass(frozen=True)
class ServerOutcome:
    server: ServerPlan
    latency_ms: np.ndarray
    model: np.ndarray  # global model index per request
    busy_share: float  # compute busy / (workers x duration)
    batches: int


def generate(steps: RateSteps, rng: np.random.Generator) -> Arrivals:
    """Poisson arrivals, piecewise constant in rate, for every model of ``steps``."""
    names = tuple(sorted(steps))
    time_s, model = piecewise_arrivals([steps[name] for name in names], rng)
    return Arrivals(time_s, model, names)


def server_parts(
    server: ServerPlan, profiles: Mapping[tuple[str, str], ProfileFamily]
) -> tuple[ServerModel, dict[str, ServerModel]]:
    """(the server part, each kind's block): the server blocks of this server's kinds,
    measured with at least as many models as the server holds where the profiles have
    counts (plan/counts.py); workers and frontend from the most conservative of them."""
    blocks: dict[str, ServerModel] = {}
    for kind in sorted({m.kind for m in server.models}):
        family = profiles.get((kind, server.instance_type))
        profile = None if family is None else family.at(len(server.models))
        if profile is None or profile.server is None:
            raise ConfigError(
                [
                    f"server {server.name}: the profile of {kind} on {server.instance_type} "
                    "has no 'server' block (workers, batching, batch_service_ms) to simulate"
                ]
            )
        blocks[kind] = profile.server
    return shared_server(blocks.values()), blocks


def route(
    plan: Plan, arrivals: Arrivals, rng: np.random.Generator
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Request indices and replica rows per server: each request of a model goes to one of
    its replicas with probability proportional to the replica's planned rate."""
    replicas: dict[str, list[tuple[str, int, float]]] = defaultdict(list)
    for server in plan.servers:
        for row, share in enumerate(server.models):
            replicas[share.name].append((server.name, row, share.rps))
    picked: dict[str, list[np.ndarray]] = defaultdict(list)
    rows: dict[str, list[np.ndarray]] = defaultdict(list)
    for k, name in enumerate(arrivals.names):
        where = np.flatnonzero(arrivals.model == k)
        targets = replicas.get(name)
        if not targets or len(where) == 0:
            continue
        weights = np.array([max(t[2], 0.0) for t in targets]) + 1e-12
        choice = rng.choice(len(targets), size=len(where), p=weights / weights.sum())
        for j, (target, row, _) in enumerate(targets):
            mine = where[choice == j]
            picked[target].append(mine)
            rows[target].append(np.full(len(mine), row, dtype=np.int32))
    routed = {}
    for target, parts in picked.items():
        index = np.concatenate(parts)
        order = np.argsort(index, kind="stable")  # time order (arrivals are sorted)
        routed[target] = (index[order], np.concatenate(rows[target])[order])
    return routed


def simulate_fleet(
    plan: Plan,
    profiles: Sequence[Profile],
    steps: RateSteps,
    options: FleetOptions,
    progress: Callable[[ServerOutcome], None] | None = None,
) -> tuple[Arrivals, list[ServerOutcome]]:
    """Simulate every server of ``plan`` under ``steps``; see the module docstring."""
    rng = np.random.default_rng(options.seed)
    by_key = families(profiles)
    blocks = {s.name: server_parts(s, by_key) for s in plan.servers}  # fail before running
    unplanned = sorted(set(steps) - {m.name for s in plan.servers for m in s.models})
    if unplanned:
        shown = ", ".join(unplanned[:5]) + (" ..." if len(unplanned) > 5 else "")
        raise ConfigError([f"{len(unplanned)} model(s) have demand but no server: {shown}"])
    arrivals = generate(steps, rng)
    ready_s = frontend_departures(arrivals.time_s, options.router_ms / 1e3)
    routed = route(plan, arrivals, rng)
    outcomes = []
    for server in plan.servers:
        index, rows = routed.get(server.name, (np.empty(0, np.int64), np.empty(0, np.int32)))
        block, kinds = blocks[server.name]
        models = [sim_model(share.name, 0.0, kinds[share.kind]) for share in server.models]
        result = simulate_server(
            models,
            ready_s[index],
            rows,
            block.workers,
            block.frontend_ms / 1e3,
            service_cv=block.cv_at(len(index) / options.duration_s),
            seed=options.seed,
        )
        latency_ms = (result.done_s - arrivals.time_s[index]) * 1e3 + options.network_ms
        latency_ms += block.overhead_ms
        busy = result.busy_s / (block.workers * options.duration_s)
        outcome = ServerOutcome(server, latency_ms, arrivals.model[index], busy, result.batches)
        outcomes.append(outcome)
        if progress is not None:
            progress(outcome)
    return arrivals, outcomes
