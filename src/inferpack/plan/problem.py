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
loose as its own. Profiles measured at several model counts are read at the most models a
server of the type may hold (counts.py: ``packing_count``), so every server as packed holds
at most that many and sustains at least that capacity.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from inferpack.errors import ConfigError
from inferpack.plan.counts import ProfileFamily, capacity_at_slo, families
from inferpack.plan.formats import Demand, Profile

__all__ = ["PlanOptions", "Problem", "ServerType", "build_problem", "capacity_at_slo"]

# The process itself (Python, torch, server) takes memory no model can use.
DEFAULT_SERVER_OVERHEAD_MB = 600.0


@dataclass(frozen=True)
class PlanOptions:
    slo_p90_ms: float
    max_memory_utilization: float = 0.9
    max_compute_utilization: float = 0.8
    time_limit_s: float = 10.0
    server_overhead_mb: float = DEFAULT_SERVER_OVERHEAD_MB
    instance_types: tuple[str, ...] | None = None  # None: every type some profile names
    # The tail constraint holds on a host this many times slower than profiled (plan/tail.py).
    slowdown_margin: float = 1.0


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
    # Per (kind, type): the entry read at the most models a server may hold (the packing
    # count), the capacity used to size models, every entry by count, and what is assumed.
    profiles: dict[tuple[str, str], Profile] = field(default_factory=dict)
    capacity_rps: dict[tuple[str, str], float] = field(default_factory=dict)
    families: dict[tuple[str, str], ProfileFamily] = field(default_factory=dict)
    notes: list[tuple[str, str]] = field(default_factory=list)  # (instance type, note)
    slo_p90_ms: float = math.inf

    usable: np.ndarray = field(init=False)  # [m, t]: model m can run on type t

    def __post_init__(self) -> None:
        self.usable = np.isfinite(self.memory) & (self.memory <= 1.0) & (self.slots <= 1.0)

    def replicas(self, m: int, t: int, max_share: float = 1.0) -> int:
        """Copies of model m on type t so that each copy's compute share is at most
        ``max_share`` of a server (1: the fewest copies that fit at all)."""
        return max(1, math.ceil(float(self.compute[m, t]) / max_share - 1e-12))

    def prices(self) -> np.ndarray:
        return np.array([t.usd_per_hour for t in self.types])


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
    by_family = families(profiles)
    per_kind = Counter(model.kind for model in demand)
    chosen: dict[tuple[str, str], Profile] = {}
    capacity: dict[tuple[str, str], float] = {}
    notes: list[tuple[str, str]] = []
    for server in types:
        room_mb = server.memory_mb * options.max_memory_utilization - options.server_overhead_mb
        for kind, count in per_kind.items():
            family = by_family.get((kind, server.name))
            if family is None or room_mb <= 0:
                continue
            models = packing_count(family, room_mb, count)
            rps = family.capacity_at(models, options.slo_p90_ms)
            if rps is None or rps <= 0:  # a profile that sustains nothing cannot be used
                continue
            chosen[(kind, server.name)] = family.at(models)
            capacity[(kind, server.name)] = rps
            note = family.extrapolation(models)
            if note is not None:
                notes.append((server.name, note))
    shape = (len(demand), len(types))
    memory, compute, slots, memory_mb = (np.full(shape, np.inf) for _ in range(4))
    for t, server in enumerate(types):
        room_mb = server.memory_mb * options.max_memory_utilization - options.server_overhead_mb
        for m, model in enumerate(demand):
            key = (model.kind, server.name)
            if key not in capacity:
                continue
            family = by_family[key]
            memory_mb[m, t] = family.model_memory_mb
            memory[m, t] = family.model_memory_mb / room_mb
            compute[m, t] = model.rps / (capacity[key] * options.max_compute_utilization)
            slots[m, t] = 1.0 / family.max_models if family.max_models else 0.0
    problem = Problem(
        list(demand),
        types,
        memory,
        compute,
        slots,
        memory_mb,
        chosen,
        capacity,
        by_family,
        notes,
        options.slo_p90_ms,
    )
    _check_placeable(problem, options)
    return problem


def packing_count(family: ProfileFamily, room_mb: float, models_of_kind: int) -> int:
    """The most models of the family's kind one server may hold: its memory, the profile's
    max_models, and how many models of the kind the demand has (replicas may add more; the
    tail constraint checks the servers as packed)."""
    by_memory = max(1, math.floor(room_mb / family.model_memory_mb))
    limit = min(by_memory, models_of_kind)
    return min(limit, family.max_models) if family.max_models else limit


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
