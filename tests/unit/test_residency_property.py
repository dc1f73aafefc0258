"""Property: under any interleaving of loads, evictions, unloads and requests, the bytes the
model manager accounts equal the bytes resident, each shared weight once, and every request
is answered exactly once with its own rows.

Models share weights as the tensor store shares them: a fake store leases content keys by
reference count (a key is resident while any model, READY or loading, holds it). Each load
leases its weights, then waits at a gate the scenario opens (a warm-up in progress), so
loads stay in flight while other loads evict the models whose weights they rely on."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferpack.config.control import ControlConfig, ControlMode
from inferpack.repository import ModelSource
from inferpack.runtime.manager import ModelManager
from inferpack.runtime.metrics import ServingMetrics
from inferpack.runtime.served_model import ServedModel
from inferpack.runtime.workers import DevicePools
from inferpack.types import InferRequest, Tensor
from tests.unit.test_model_manager import NAMES, FakeRepository

# Per model: its own bytes and the content keys it shares (key -> bytes). Backbones are
# shared by several models; each model also stores a head of its own in the store.
OWN_BYTES = {name: 40 + 10 * index for index, name in enumerate(NAMES)}
BACKBONES = {"backbone-a": 1000, "backbone-b": 700}
SHARED = {
    name: {
        **({"backbone-a": 1000} if index < 3 else {"backbone-b": 700} if index < 6 else {}),
        f"head-{name}": 100,
    }
    for index, name in enumerate(NAMES)
}
# How long the scenario's own waits may take: a failure, not a timing assumption.
SETTLE_S = 10.0


@dataclass
class FakeStore:
    """Content keys leased by reference count, and the own bytes of open backends."""

    own_bytes: int = 0
    keys: dict[str, list[int]] = field(default_factory=dict)  # key -> [bytes, holders]
    lock: threading.Lock = field(default_factory=threading.Lock)

    def lease(self, own: int, shared: Mapping[str, int]) -> None:
        with self.lock:
            self.own_bytes += own
            for key, size in shared.items():
                self.keys.setdefault(key, [size, 0])[1] += 1

    def release(self, own: int, shared: Mapping[str, int]) -> None:
        with self.lock:
            self.own_bytes -= own
            for key in shared:
                self.keys[key][1] -= 1
                if self.keys[key][1] == 0:
                    del self.keys[key]

    @property
    def resident_bytes(self) -> int:
        with self.lock:
            return self.own_bytes + sum(size for size, _ in self.keys.values())


class SharingBackend:
    """A backend whose weights live in the fake store (see ``SharesWeights``)."""

    device = "cpu"

    def __init__(self, store: FakeStore, name: str) -> None:
        self._store, self._own = store, OWN_BYTES[name]
        self.shared_weights: Mapping[str, int] = MappingProxyType(SHARED[name])
        store.lease(self._own, self.shared_weights)

    @property
    def memory_bytes(self) -> int:
        return self._own + sum(self.shared_weights.values())

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"y": inputs["x"]}

    def warm_up(self, inputs: dict[str, Tensor]) -> None:
        pass

    def close(self) -> None:
        self._store.release(self._own, self.shared_weights)


@dataclass
class GatedLoader:
    """Leases a model's weights, then waits at its gate (opened by the scenario)."""

    store: FakeStore = field(default_factory=FakeStore)
    gates: dict[str, threading.Event] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)  # loads holding their weights at the gate
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(
        self, source: ModelSource, metrics: ServingMetrics, pools: DevicePools
    ) -> ServedModel:
        name = source.config.name
        backend = SharingBackend(self.store, name)
        with self.lock:
            gate = self.gates.setdefault(name, threading.Event())
            self.waiting.add(name)
        try:
            gate.wait(SETTLE_S)
        finally:
            with self.lock:
                self.waiting.discard(name)
        return ServedModel(source, [backend], metrics, pools)


@dataclass(frozen=True)
class Request:
    model: int
    hold: bool  # a load it starts waits at the model's gate until an Open


@dataclass(frozen=True)
class Open:
    model: int  # let this model's loads past their gate


@dataclass(frozen=True)
class Unload:
    model: int


Operation = Request | Open | Unload
MODELS = st.integers(0, len(NAMES) - 1)
OPERATIONS = st.one_of(
    st.builds(Request, MODELS, st.booleans()),
    st.builds(Request, MODELS, st.booleans()),
    MODELS.map(Open),
    MODELS.map(Unload),
)


async def _settle(manager: ModelManager, loader: GatedLoader) -> None:
    """Run the loop until nothing moves on its own: every load either waits for room (holds
    nothing yet) or holds its weights at its gate, and every eviction has closed."""

    def moving() -> bool:
        with loader.lock:
            waiting = set(loader.waiting)
        return bool(manager._closing) or any(
            entry.loading is not None
            and entry.reserved is not None
            and not (name in waiting and not loader.gates[name].is_set())
            for name, entry in manager.entries.items()
        )

    async with asyncio.timeout(SETTLE_S):
        quiet = 0
        while quiet < 3:  # quiet three checks in a row: a load may be between threads
            quiet = 0 if moving() else quiet + 1
            await asyncio.sleep(0.001)
        while moving():  # the caller checks right after: no await from the last check
            await asyncio.sleep(0.001)


async def _infer(manager: ModelManager, name: str, row: float) -> Tensor:
    async with manager.use(name, None) as model:
        request = InferRequest(name, inputs={"x": np.full((1, 2), row, np.float32)})
        outputs = await model.infer(request)
    return outputs["y"]


async def _play(root: Path, operations: list[Operation], budget_bytes: int) -> None:
    loader = GatedLoader()
    control = ControlConfig(ControlMode.LRU, memory_budget_bytes=budget_bytes, load_threads=16)
    manager = ModelManager(FakeRepository(root, NAMES), ServingMetrics(), control, loader)
    await manager.start()
    for name in NAMES:  # a measured first load of each: later estimates are exact
        loader.gates[name] = threading.Event()
        loader.gates[name].set()
        await manager.load(name)
    requests: dict[int, tuple[str, asyncio.Task[Tensor]]] = {}
    for operation in operations:
        name = NAMES[operation.model]
        if isinstance(operation, Request):
            if operation.hold and loader.gates[name].is_set():  # a closed gate stays closed
                loader.gates[name] = threading.Event()
            row = float(len(requests))
            requests[len(requests)] = name, asyncio.create_task(_infer(manager, name, row))
        elif isinstance(operation, Open):
            loader.gates[name].set()
        elif manager.entries[name].loading is None:  # Unload: never waits on a held load
            await manager.unload(name)
        await _settle(manager, loader)
        assert manager.used_bytes() == loader.store.resident_bytes, operation
    for gate in loader.gates.values():
        gate.set()
    async with asyncio.timeout(SETTLE_S):
        answers = await asyncio.gather(*(task for _, task in requests.values()))
    for index, answer in enumerate(answers):
        np.testing.assert_array_equal(answer, np.full((1, 2), float(index), np.float32))
    await _settle(manager, loader)
    assert manager.used_bytes() == loader.store.resident_bytes
    await manager.close()
    assert loader.store.resident_bytes == 0


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    operations=st.lists(OPERATIONS, min_size=5, max_size=30),
    budget_models=st.sampled_from([1.2, 2.0, 3.0]),
)
def test_accounted_bytes_equal_resident_bytes_under_random_interleavings(
    tmp_path: Path, operations: list[Operation], budget_models: float
) -> None:
    budget_bytes = int(budget_models * (sum(BACKBONES.values()) / 2 + 200))
    asyncio.run(_play(tmp_path, operations, budget_bytes))
