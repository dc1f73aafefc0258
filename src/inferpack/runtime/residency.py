"""Which models are resident, what memory they hold, and which to evict for a load (pure).

A model entry is LOADING, READY or UNAVAILABLE (with a reason). Under a memory budget the
bytes *held* are the measured bytes of READY models plus the bytes *reserved* by loads in
flight (their estimate), so two loads running at once never both count on the same room.

:func:`plan_room` decides, without side effects, which models a load must evict::

    held = measured(READY) + reserved(LOADING)
    if held + needed <= budget or held == 0:  return []         # fits (or alone: must load)
    for entry in evictable entries, least recently used first:
        victims += entry; held -= entry.memory_bytes
        if held + needed <= budget or held == 0: return victims
    return None                                                  # cannot fit yet: wait

Trade-off: all or nothing. A load evicts only when that makes it fit; otherwise it evicts
nothing and waits, so models stay servable while they cannot help. Only READY, idle (no
request in flight, none waiting on its load) entries that are not loading are evictable:
eviction never waits on a load or on a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

from inferpack.runtime.served_model import ServedModel

NOT_LOADED = "unloaded"
EVICTED = "evicted (least recently used)"
SHUTTING_DOWN = "server is shutting down"


class ModelState(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(slots=True, eq=False)
class ModelEntry:
    """One model of the repository and its serving state (owned by the ModelManager).

    ``loading`` is the load in flight, if any; its result is ``None`` on success or the
    failure reason. It is set from the moment the entry turns LOADING until the load has
    ended (READY or UNAVAILABLE) and made room; while set, the entry is never evicted.
    """

    name: str
    state: ModelState = ModelState.UNAVAILABLE
    reason: str = NOT_LOADED
    versions: dict[str, ServedModel] = field(default_factory=dict)
    loading: asyncio.Task[str | None] | None = None
    waiters: int = 0  # requests waiting for this model's load
    inflight: int = 0  # requests holding a loaded version
    last_used_s: float = 0.0
    reserved_bytes: int = 0  # estimate held by the load in flight
    measured_bytes: int = 0  # memory of the last successful load: the next load's estimate

    @property
    def memory_bytes(self) -> int:
        return sum(model.memory_bytes for model in self.versions.values())

    @property
    def evictable(self) -> bool:
        """READY, idle, not loading and awaited by no request: safe to drop at once."""
        return (
            self.state is ModelState.READY
            and self.loading is None
            and self.inflight == 0
            and self.waiters == 0
        )

    def latest(self) -> ServedModel:
        return self.versions[max(self.versions, key=int)]


def held_bytes(entries: Iterable[ModelEntry]) -> int:
    """Measured bytes of READY models plus the bytes reserved by loads in flight."""
    total = 0
    for entry in entries:
        if entry.state is ModelState.READY:
            total += entry.memory_bytes
        total += entry.reserved_bytes
    return total


def plan_room(
    entries: Iterable[ModelEntry], budget_bytes: int, needed_bytes: int
) -> list[ModelEntry] | None:
    """Victims (least recently used first) whose eviction lets ``needed_bytes`` fit in the
    budget; ``[]`` when it already fits; ``None`` when it cannot fit until some model goes
    idle or a load finishes. A model larger than the whole budget fits once nothing else is
    held (it is loaded alone rather than never)."""
    entries = list(entries)
    held = held_bytes(entries)
    if held + needed_bytes <= budget_bytes or held == 0:
        return []
    victims: list[ModelEntry] = []
    for entry in sorted((e for e in entries if e.evictable), key=lambda e: e.last_used_s):
        victims.append(entry)
        held -= entry.memory_bytes
        if held + needed_bytes <= budget_bytes or held <= 0:
            return victims
    return None
