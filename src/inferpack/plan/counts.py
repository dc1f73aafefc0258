"""Profiles measured at several model counts, read at the count a server actually holds.

``inferpack profile --models-per-server 1,4,16,64`` writes one entry per count for a (kind,
instance type): batching is per model, so one server's capacity and latency at a total rate
depend on how many models share it. The planner and ``simulate`` read them here:

    capacity at n models: capacity_at_slo of the entries measured just below and just
        above n, interpolated linearly in log(count); below the smallest count measured,
        the smallest's (more models never batch better, so this is conservative only if
        the smallest count is 1; profile with 1 in the list)
    latency, server block at n: the entry of the smallest measured count >= n (the
        measurement with at least as many models as the server holds)
    beyond the largest count measured: the largest's numbers, and an extrapolation note
        that plan.yaml carries

A profile file without counts (hand-written, or measured before counts existed) has one
entry per (kind, instance type) and reads the same at every count.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from dataclasses import dataclass

from inferpack.plan.formats import Profile

MAX_ERROR_PCT = 1.0


def capacity_at_slo(profile: Profile, slo_p90_ms: float) -> float | None:
    """Total rps one server sustains for the profile's kind with p90 within the SLO: the
    highest answered rate of a level that met it (formats.RatePoint.answered), never above
    the profile's own capacity when the plan's SLO is at least as tight as the profile's."""
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
    return min(best, profile.capacity_rps) if slo_p90_ms <= profile.slo_p90_ms else best


@dataclass(frozen=True)
class ProfileFamily:
    """Every entry of one (kind, instance type), by model count."""

    entries: tuple[Profile, ...]  # sorted by models_per_server; one entry may have None

    @property
    def kind(self) -> str:
        return self.entries[0].kind

    @property
    def instance_type(self) -> str:
        return self.entries[0].instance_type

    @property
    def counts(self) -> list[int]:
        return [p.models_per_server or 1 for p in self.entries]

    @property
    def counted(self) -> bool:
        """Whether the entries say how many models they measured."""
        return all(p.models_per_server is not None for p in self.entries)

    @property
    def max_models(self) -> int | None:
        stated = [p.max_models for p in self.entries if p.max_models is not None]
        return min(stated) if stated else None

    @property
    def model_memory_mb(self) -> float:
        return max(p.model_memory_mb for p in self.entries)

    def at(self, models: int) -> Profile:
        """The entry measured with the fewest models >= ``models`` (the largest if none)."""
        if len(self.entries) == 1:
            return self.entries[0]
        index = bisect.bisect_left(self.counts, models)
        return self.entries[min(index, len(self.entries) - 1)]

    def capacity_at(self, models: int, slo_p90_ms: float) -> float | None:
        """Capacity at the SLO for a server of ``models`` models (module docstring)."""
        counts = self.counts
        if len(self.entries) == 1 or models <= counts[0]:
            return capacity_at_slo(self.entries[0], slo_p90_ms)
        if models >= counts[-1]:
            return capacity_at_slo(self.entries[-1], slo_p90_ms)
        high = bisect.bisect_left(counts, models)
        low = high - 1
        below = capacity_at_slo(self.entries[low], slo_p90_ms)
        above = capacity_at_slo(self.entries[high], slo_p90_ms)
        if below is None or above is None:
            return above  # never more than the measurement with more models sustained
        share = (math.log(models) - math.log(counts[low])) / (
            math.log(counts[high]) - math.log(counts[low])
        )
        return below + share * (above - below)

    def extrapolation(self, models: int) -> str | None:
        """A note when ``models`` is past the largest count measured (None within it)."""
        if not self.counted or models <= self.counts[-1]:
            return None
        return (
            f"{self.kind} on {self.instance_type}: servers may hold up to {models} models, "
            f"profiled up to {self.counts[-1]}; capacity and latency at {self.counts[-1]} "
            "are used beyond it (extrapolated: profile with a larger --models-per-server)"
        )


def families(profiles: Iterable[Profile]) -> dict[tuple[str, str], ProfileFamily]:
    """Profiles grouped by (kind, instance type), each family sorted by model count."""
    grouped: dict[tuple[str, str], list[Profile]] = {}
    for profile in profiles:
        grouped.setdefault((profile.kind, profile.instance_type), []).append(profile)
    return {
        key: ProfileFamily(tuple(sorted(group, key=lambda p: p.models_per_server or 0)))
        for key, group in grouped.items()
    }
