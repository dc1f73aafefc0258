"""Memory planning with shared weights (pure): a weight held by several READY models counts
once, and evicting a model frees a shared weight only when its last holder goes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from inferpack.runtime.residency import (
    Footprint,
    Holdings,
    ModelEntry,
    ModelState,
    held_bytes,
    memory_split,
    plan_room,
)

BACKBONE = MappingProxyType({"backbone": 1000})  # one group: a whole module shared


def _ready(name: str, last_used_s: float, footprint: Footprint) -> ModelEntry:
    entry = ModelEntry(name, state=ModelState.READY, last_used_s=last_used_s)
    entry.measured = footprint
    return entry


def test_held_bytes_count_a_shared_group_once_however_many_hold_it() -> None:
    copies = [_ready(f"m{i}", i, Footprint(10, (BACKBONE,))) for i in range(50)]
    assert held_bytes(copies) == 50 * 10 + 1000


def test_equal_keys_in_different_groups_count_once() -> None:
    """A shared backbone with per-model heads: each model's group is its own object."""
    heads = [
        _ready(f"m{i}", i, Footprint(0, ({"backbone": 1000, f"head{i}": 7},))) for i in range(3)
    ]
    assert held_bytes(heads) == 1000 + 3 * 7
    loading = ModelEntry("l", state=ModelState.LOADING, reserved=Footprint(5))
    assert held_bytes([*heads, loading]) == 1000 + 3 * 7 + 5


def test_evicting_one_holder_frees_only_its_own_bytes() -> None:
    old = _ready("old", 0.0, Footprint(10, (BACKBONE,)))
    new = _ready("new", 1.0, Footprint(10, (BACKBONE,)))
    # Held 1020; a 100-byte load makes 1120. Evicting "old" frees its 10 bytes only ("new"
    # keeps the backbone): 1110. A planner counting 1010 freed would stop there at 1105.
    assert plan_room([old, new], 1120, 100) == []
    assert plan_room([old, new], 1115, 100) == [old]
    assert plan_room([old, new], 1105, 100) == [old, new]
    holdings = Holdings([old.footprint, new.footprint])
    assert holdings.remove(old.footprint) == {}
    assert holdings.remove(new.footprint) == {"backbone": 1000}
    assert holdings.bytes == 0


def test_a_load_of_weights_already_held_needs_only_its_own_bytes() -> None:
    resident = _ready("resident", 0.0, Footprint(10, (BACKBONE,)))
    copy = Footprint(10, (MappingProxyType({"backbone": 1000}),))  # equal keys, new object
    assert plan_room([resident], 1020, copy.own_bytes, copy.shared) == []
    assert plan_room([resident], 1020, copy.alone_bytes) == [resident]  # counted unshared
    loading = ModelEntry("copy", state=ModelState.LOADING, reserved=copy)
    assert held_bytes([resident, loading]) == 1020  # the backbone once
    assert held_bytes([loading]) == 1010  # the resident model gone: the load holds it


def test_evicting_the_holder_of_a_needed_weight_does_not_make_room_for_it() -> None:
    """Evicting frees the backbone, but the load must bring it back: need grows as much."""
    holder = _ready("holder", 0.0, Footprint(10, (BACKBONE,)))
    other = _ready("other", 1.0, Footprint(500, ()))
    needs_backbone = Footprint(10, (BACKBONE,))
    # Held 1510; the load adds 10. Evicting "holder" nets 10 bytes (the backbone leaves and
    # must come back): 1510, so at a budget of 1505 "other" must go too. A planner counting
    # the backbone as freed would stop after "holder" (510 + 10).
    assert plan_room([holder, other], 1520, 10, needs_backbone.shared) == []
    assert plan_room([holder, other], 1510, 10, needs_backbone.shared) == [holder]
    assert plan_room([holder, other], 1505, 10, needs_backbone.shared) == [holder, other]
    holder.inflight = 1  # busy: only "other" can go, and that is enough
    assert plan_room([holder, other], 1100, 10, needs_backbone.shared) == [other]


def test_unmeasured_entries_hold_their_memory_alone() -> None:
    """Entries without a measurement (fakes in older tests) count memory_bytes as own."""

    @dataclass
    class Sized:
        memory_bytes: int = 300

    entry = ModelEntry("fake", state=ModelState.READY)
    entry.versions = {"1": Sized()}  # type: ignore[dict-item]
    assert held_bytes([entry]) == 300


@dataclass
class FakeBackend:
    memory_bytes: int
    shared_weights: Mapping[str, int] = field(default_factory=dict)


@dataclass
class FakeVersion:
    backends: list[FakeBackend]

    @property
    def memory_bytes(self) -> int:
        return sum(b.memory_bytes for b in self.backends)


def _with_versions(name: str, *versions: FakeVersion) -> ModelEntry:
    entry = ModelEntry(name, state=ModelState.READY)
    entry.versions = {str(i + 1): v for i, v in enumerate(versions)}  # type: ignore[misc]
    return entry


def test_memory_split_names_bytes_held_by_another_model_as_shared() -> None:
    group = MappingProxyType({"backbone": 1000, "norm": 24})
    a = _with_versions("a", FakeVersion([FakeBackend(1100, group)]))
    b = _with_versions("b", FakeVersion([FakeBackend(1050, {"backbone": 1000, "head": 50})]))
    alone = _with_versions("alone", FakeVersion([FakeBackend(700, {"unique": 600})]))
    gone = _with_versions("gone", FakeVersion([FakeBackend(1100, group)]))
    gone.state = ModelState.UNAVAILABLE  # not loaded: holds nothing
    split = memory_split([a, b, alone, gone])
    assert split == {("a", "1"): (100, 1000), ("b", "1"): (50, 1000), ("alone", "1"): (700, 0)}
    for (name, _), (own, shared) in split.items():
        assert own + shared == {"a": 1100, "b": 1050, "alone": 700}[name]


def test_memory_split_counts_two_versions_of_a_model_sharing_a_module() -> None:
    group = MappingProxyType({"backbone": 1000})
    backend = FakeBackend(1000, group)
    entry = _with_versions("m", FakeVersion([backend]), FakeVersion([FakeBackend(1000, group)]))
    assert memory_split([entry]) == {("m", "1"): (0, 1000), ("m", "2"): (0, 1000)}


def test_a_load_pins_the_shared_weights_it_relies_on() -> None:
    """A READY model and a load in flight both hold the backbone (the load leased it from
    the store). Evicting the READY model frees its own 50 bytes, not the backbone: the
    load keeps it in memory. Counting it freed let a third load in with 1,050 bytes
    accounted and 2,050 resident."""
    ready = _ready("ready", 0.0, Footprint(50, (BACKBONE,)))
    loading = ModelEntry("loading", state=ModelState.LOADING, reserved=Footprint(50, (BACKBONE,)))
    assert held_bytes([ready, loading]) == 1100
    assert plan_room([ready, loading], 2000, 1000) is None  # must wait for room
    assert plan_room([ready, loading], 2050, 1000) == [ready]
    ready.state = ModelState.UNAVAILABLE  # evicted
    newcomer = ModelEntry("new", state=ModelState.LOADING, reserved=Footprint(1000))
    assert held_bytes([ready, loading, newcomer]) == 50 + 1000 + 1000  # what is resident
