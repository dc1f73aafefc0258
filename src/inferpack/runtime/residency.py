"""Which models are resident, what memory they hold, and which to evict for a load (pure).

A model entry is LOADING, READY or UNAVAILABLE (with a reason). Under a memory budget the
bytes *held* are what READY models hold plus what loads in flight *reserved* (their
estimate), so two loads running at once never both count on the same room.

What a READY model holds is its :class:`Footprint`, measured when its load ends: bytes of
its own, and groups of *shared* weights named by content key (see
``backends/tensor_store.py``). A key is in memory once however many models hold it, so held
bytes count each key once, and evicting a model frees a shared key only when no other
holder still holds it (:class:`Holdings`). A load's reservation is a footprint too, and its
shared keys are held like a READY model's: a load relying on weights a READY model holds
*pins* them (it leases them from the store while it loads), so evicting that model frees
only its own bytes, as in memory, where the loading model keeps the weights.

:func:`plan_room` decides, without side effects, which models a load must evict::

    held = own(READY) + own(reserved) + shared keys of READY and reserved, each once
    need = needed own bytes + needed shared keys not held now
    if held + need <= budget or held == 0:  return []          # fits (or alone: must load)
    for entry in evictable entries, least recently used first:
        victims += entry
        held -= entry's own bytes + its keys that no other holder (READY or loading) holds
        need += those freed keys the load needs (it must bring them back)
        if held + need <= budget or held == 0: return victims
    return None                                                 # cannot fit yet: wait

Trade-off: all or nothing. A load evicts only when that makes it fit; otherwise it evicts
nothing and waits, so models stay servable while they cannot help. Only READY, idle (no
request in flight, none waiting on its load) entries that are not loading are evictable:
eviction never waits on a load or on a request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from inferpack.backends.base import SharesWeights
from inferpack.runtime.served_model import ServedModel

NOT_LOADED = "unloaded"
EVICTED = "evicted (least recently used)"
SHUTTING_DOWN = "server is shutting down"

SharedWeights = Mapping[str, int]
"""Content key -> bytes of weights that several models may hold (one group per backend)."""


class ModelState(StrEnum):
    LOADING = "LOADING"
    READY = "READY"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class Footprint:
    """What a loaded model holds: ``own_bytes`` that only it holds (workspace, weights
    outside the store) and ``shared`` groups of content-keyed weights other models may hold
    too. Alone it holds ``own_bytes`` plus each shared key once."""

    own_bytes: int = 0
    shared: tuple[SharedWeights, ...] = ()

    def shared_sizes(self) -> dict[str, int]:
        """Every shared key of the footprint, once, with its bytes."""
        sizes: dict[str, int] = {}
        for group in self.shared:
            sizes.update(group)
        return sizes

    @property
    def alone_bytes(self) -> int:
        return self.own_bytes + sum(self.shared_sizes().values())


def measure_footprint(models: Iterable[ServedModel]) -> Footprint:
    """The footprint of loaded model versions, from their distinct backends (a backend
    without :class:`SharesWeights` holds all of its memory alone)."""
    own = 0
    groups: dict[int, SharedWeights] = {}
    for model in models:
        for backend in {id(b): b for b in model.backends}.values():
            own += backend.memory_bytes
            if isinstance(backend, SharesWeights):
                shared = backend.shared_weights
                own -= sum(shared.values())
                groups.setdefault(id(shared), shared)
    return Footprint(own, tuple(groups.values()))


class Holdings:
    """The bytes held by a set of footprints, each shared key counted once, and what
    removing one really frees.

    Counts are kept per group (holders of one mapping object: models sharing a whole module
    report the same one, so thousands of copies cost one group) and per key (held groups
    containing it); a key's bytes are freed when its last held group goes."""

    def __init__(self, footprints: Iterable[Footprint] = ()) -> None:
        self.own_bytes = 0
        self.shared_bytes = 0
        self._groups: dict[int, tuple[int, SharedWeights]] = {}  # id -> (holders, group)
        self._keys: dict[str, int] = {}  # key -> held groups containing it
        for footprint in footprints:
            self.add(footprint)

    @property
    def bytes(self) -> int:
        return self.own_bytes + self.shared_bytes

    def add(self, footprint: Footprint) -> None:
        self.own_bytes += footprint.own_bytes
        for group in footprint.shared:
            holders, _ = self._groups.get(id(group), (0, group))
            self._groups[id(group)] = (holders + 1, group)
            if holders == 0:
                for key, size in group.items():
                    count = self._keys.get(key, 0)
                    self.shared_bytes += size if count == 0 else 0
                    self._keys[key] = count + 1

    def remove(self, footprint: Footprint) -> SharedWeights:
        """Forget one holder of ``footprint`` (added before); the shared keys that no
        holder has any more, with their bytes."""
        self.own_bytes -= footprint.own_bytes
        freed: dict[str, int] = {}
        for group in footprint.shared:
            holders, _ = self._groups[id(group)]
            if holders > 1:
                self._groups[id(group)] = (holders - 1, group)
                continue
            del self._groups[id(group)]
            for key, size in group.items():
                self._keys[key] -= 1
                if self._keys[key] == 0:
                    del self._keys[key]
                    freed[key] = size
        self.shared_bytes -= sum(freed.values())
        return freed

    def missing_bytes(self, shared: Sequence[SharedWeights]) -> int:
        """Bytes of the keys in ``shared`` that are not held: what loading them would add."""
        missing: dict[str, int] = {}
        for group in shared:
            if id(group) not in self._groups:
                missing.update((k, v) for k, v in group.items() if k not in self._keys)
        return sum(missing.values())

    def held_elsewhere_bytes(self, footprint: Footprint) -> int:
        """Bytes of ``footprint``'s shared keys that another holder holds too (it was added:
        a key held only through its own groups is its own)."""
        alone = [g for g in footprint.shared if self._groups[id(g)][0] == 1]
        return sum(
            size
            for key, size in footprint.shared_sizes().items()
            if self._keys[key] > sum(key in group for group in alone)
        )


@dataclass(slots=True, eq=False)
class ModelEntry:
    """One model of the repository and its serving state (owned by the ModelManager).

    ``loading`` is the load in flight, if any; its result is ``None`` on success or the
    failure reason. It is set from the moment the entry turns LOADING until the load has
    ended (READY or UNAVAILABLE) and made room; while set, the entry is never evicted.
    ``reserved`` is the estimate a load in flight holds once it has made room (its own bytes
    and its shared keys, pinned), until the load ends. ``measured`` is the footprint of the
    last successful load: what the entry holds while READY, and the next load's estimate.
    """

    name: str
    state: ModelState = ModelState.UNAVAILABLE
    reason: str = NOT_LOADED
    versions: dict[str, ServedModel] = field(default_factory=dict)
    loading: asyncio.Task[str | None] | None = None
    waiters: int = 0  # requests waiting for this model's load
    inflight: int = 0  # requests holding a loaded version
    last_used_s: float = 0.0
    reserved: Footprint | None = None
    measured_bytes: int = 0  # memory of the last successful load, alone
    measured: Footprint | None = None

    @property
    def memory_bytes(self) -> int:
        return sum(model.memory_bytes for model in self.versions.values())

    @property
    def footprint(self) -> Footprint:
        """What the loaded versions hold (all own when no measurement was taken)."""
        return self.measured if self.measured is not None else Footprint(self.memory_bytes)

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


def _holdings(entries: Iterable[ModelEntry]) -> Holdings:
    """What READY models hold and loads in flight reserved, each shared key once."""
    return Holdings(footprint for entry in entries for footprint in _held(entry))


def _held(entry: ModelEntry) -> Iterable[Footprint]:
    if entry.state is ModelState.READY:
        yield entry.footprint
    if entry.reserved is not None:
        yield entry.reserved


def held_bytes(entries: Iterable[ModelEntry]) -> int:
    """What READY models hold plus what loads in flight reserved (each shared key once)."""
    return _holdings(entries).bytes


def plan_room(
    entries: Iterable[ModelEntry],
    budget_bytes: int,
    needed_bytes: int,
    needed_shared: Sequence[SharedWeights] = (),
) -> list[ModelEntry] | None:
    """Victims (least recently used first) whose eviction lets a load fit in the budget: it
    needs ``needed_bytes`` of its own and the keys of ``needed_shared`` that are not held
    (see the module docstring). ``[]`` when it already fits; ``None`` when it cannot fit
    until some model goes idle or a load finishes. A model larger than the whole budget
    fits once nothing else is held (it is loaded alone rather than never)."""
    entries = list(entries)
    holdings = _holdings(entries)
    need = needed_bytes + holdings.missing_bytes(needed_shared)
    if holdings.bytes + need <= budget_bytes or holdings.bytes == 0:
        return []
    needed_keys = {key for group in needed_shared for key in group}
    victims: list[ModelEntry] = []
    for entry in sorted((e for e in entries if e.evictable), key=lambda e: e.last_used_s):
        victims.append(entry)
        freed = holdings.remove(entry.footprint)
        need += sum(size for key, size in freed.items() if key in needed_keys)
        if holdings.bytes + need <= budget_bytes or holdings.bytes <= 0:
            return victims
    return None


def memory_split(entries: Iterable[ModelEntry]) -> dict[tuple[str, str], tuple[int, int]]:
    """(own, shared) bytes of every READY model version: shared are the bytes of its
    weights that another loaded version holds too; own + shared is its ``memory_bytes``."""
    footprints = {
        (entry.name, version): measure_footprint([model])
        for entry in entries
        if entry.state is ModelState.READY
        for version, model in entry.versions.items()
    }
    holdings = Holdings(footprints.values())
    split = {}
    for ident, footprint in footprints.items():
        shared = holdings.held_elsewhere_bytes(footprint)
        split[ident] = (footprint.alone_bytes - shared, shared)
    return split
