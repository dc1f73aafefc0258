"""The packing problem the planner solves, in numbers: server types and model sizes.

A server of type ``t`` holds a set of models when three sums stay within one:

- memory:  sum of model memory / (server memory x max_memory_utilization)
- compute: sum of rps / capacity_rps(kind, t) / max_compute_utilization
- slots:   sum of 1 / max_models(kind, t)   (only for profiles that state max_models)

so every model has, per type, a size vector ``(memory, compute, slots)`` as shares of one
server. A model whose compute share exceeds one needs replicas: ``replicas(m, t)`` copies,
its rps split evenly, each copy paying the full memory and slot.

Capacity at the plan's SLO comes from the profile's measured points where it has them: the
highest *answered* rate of a level whose p90 met the SLO with < 1 % errors and that answered
at least 90 % of its offered rate (a level that fell behind proves nothing about the rate it
was offered); a hand-written profile without points is usable only at an SLO at least as
loose as its own.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from inferpack.errors import ConfigError
from inferpack.plan.formats import Demand, Profile

# The process itself (Python, torch, server) takes memory no model can use.
DEFAULT_SERVER_OVERHEAD_MB = 600.0
MAX_ERROR_PCT = 1.0


@dataclass(frozen=True)
class PlanOptions:
    slo_p90_ms: float
    max_memory_utilization: float = 0.9
    max_compute_utilization: float = 0.8
    time_limit_s: float = 10.0
    server_overhead_mb: float = DEFAULT_SERVER_OVERHEAD_MB
    instance_types: tuple[str, ...] | None = None  # None: every type some profile names


@dataclass(frozen=True)
class ServerType:
    """An instance type the plan may buy, from the price catalogue."""

    name: str
    usd_per_hour: float
    memory_mb: float  # where models live: accelerator memory if it has one, else RAM
    accelerator: str | None = None


@dataclass
class Problem:
    """Sizes as shares of one server: ``memory[m, t]``, ``compute[m, t]``, ``slots[m, t]``
    (inf where model m cannot run on type t)."""

    models: list[Demand]
    types: list[ServerType]
    memory: np.ndarray
    compute: np.ndarray
    slots: np.ndarray
    memory_mb: np.ndarray  # [m, t] model memory in MB (for the plan file)
    profiles: dict[tuple[str, str], Profile] = field(default_factory=dict)
    capacity_rps: dict[tuple[str, str], float] = field(default_factory=dict)

    usable: np.ndarray = field(init=False)  # [m, t]: model m can run on type t

    def __post_init__(self) -> None:
        self.usable = np.isfinite(self.memory) & (self.memory <= 1.0) & (self.slots <= 1.0)

    def replicas(self, m: int, t: int, max_share: float = 1.0) -> int:
        """Copies of model m on type t so that each copy's compute share is at most
        ``max_share`` of a server (1: the fewest copies that fit at all)."""
        return max(1, math.ceil(float(self.compute[m, t]) / max_share - 1e-12))

    def prices(self) -> np.ndarray:
        return np.array([t.usd_per_hour for t in self.types])


def capacity_at_slo(profile: Profile, slo_p90_ms: float) -> float | None:
    """Total rps one server sustains for the profile's kind with p90 within the SLO."""
    if not profile.points:
        return profile.capacity_rps if profile.slo_p90_ms <= slo_p90_ms else None
    met = [
        p.sustained_rps
        for p in profile.points
        if p.p90_ms <= slo_p90_ms and p.error_pct < MAX_ERROR_PCT and p.answered()
    ]
    if not met:
        return None
    best = max(met)
    # The profile's own capacity was searched at its SLO: use it when it is the tighter one.
    return min(best, profile.capacity_rps) if slo_p90_ms <= profile.slo_p90_ms else best


def build_problem(
    profiles: Sequence[Profile],
    demand: Sequence[Demand],
    types: Iterable[ServerType],
    options: PlanOptions,
) -> Problem:
    """Size every model on every type; a model that fits nowhere is an error naming it."""
    types = [t for t in types if options.instance_types is None or t.name in options.instance_types]
    if not types:
        raise ConfigError(["no instance type left to plan with (check --instance-types)"])
    by_key = {(p.kind, p.instance_type): p for p in profiles}
    capacity: dict[tuple[str, str], float] = {}
    for key, profile in by_key.items():
        rps = capacity_at_slo(profile, options.slo_p90_ms)
        if rps is not None and rps > 0:  # a profile that sustains nothing cannot be used
            capacity[key] = rps
    shape = (len(demand), len(types))
    memory, compute, slots, memory_mb = (np.full(shape, np.inf) for _ in range(4))
    for t, server in enumerate(types):
        room_mb = server.memory_mb * options.max_memory_utilization - options.server_overhead_mb
        for m, model in enumerate(demand):
            key = (model.kind, server.name)
            if key not in capacity or room_mb <= 0:
                continue
            profile = by_key[key]
            memory_mb[m, t] = profile.model_memory_mb
            memory[m, t] = profile.model_memory_mb / room_mb
            compute[m, t] = model.rps / (capacity[key] * options.max_compute_utilization)
            slots[m, t] = 1.0 / profile.max_models if profile.max_models else 0.0
    problem = Problem(list(demand), types, memory, compute, slots, memory_mb, by_key, capacity)
    _check_placeable(problem, options)
    return problem


def _check_placeable(problem: Problem, options: PlanOptions) -> None:
    usable = problem.usable
    stuck = [problem.models[m] for m in np.flatnonzero(~usable.any(axis=1))]
    if not stuck:
        return
    known = sorted({t.name for t in problem.types})
    lines = []
    for model in stuck[:10]:
        kinds = [t for t in known if (model.kind, t) in problem.capacity_rps]
        why = (
            f"its memory does not fit any server of {', '.join(kinds)}"
            if kinds
            else f"no profile of kind {model.kind} meets p90 {options.slo_p90_ms:g} ms on "
            f"{', '.join(known)}"
        )
        lines.append(f"{model.model} ({model.kind}): {why}")
    more = f" (and {len(stuck) - 10} more)" if len(stuck) > 10 else ""
    raise ConfigError([f"{len(stuck)} model(s) fit nowhere{more}", *lines])


def server_types_from_catalog(
    catalog: Iterable[object], names: Iterable[str], region: str | None = None
) -> list[ServerType]:
    """ServerTypes for the instance types the profiles name, priced from the catalogue."""
    from inferpack.bench.catalog import Catalog

    assert isinstance(catalog, Catalog)
    types = []
    for name in sorted(set(names)):
        entry = catalog.get(name, region)
        on_device = entry.accelerator_memory_gib if entry.accelerator else None
        types.append(
            ServerType(
                name=entry.name,
                usd_per_hour=entry.price_usd_per_hour,
                memory_mb=(on_device or entry.memory_gib) * 1024,
                accelerator=entry.accelerator,
            )
        )
    return types


def profile_kinds(profiles: Iterable[Profile]) -> Mapping[str, set[str]]:
    kinds: dict[str, set[str]] = {}
    for profile in profiles:
        kinds.setdefault(profile.kind, set()).add(profile.instance_type)
    return kinds
