"""The model manager under churn, with fake models: LRU without deadlock, within budget,
requests that load their model, and shutdown while loads and requests are in flight."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferpack.config.control import ControlConfig, ControlMode
from inferpack.config.model_config import ModelConfig, TensorSpec
from inferpack.errors import ConfigError, UnavailableError
from inferpack.repository import ModelSource
from inferpack.runtime.manager import ModelManager
from inferpack.runtime.metrics import ServingMetrics
from inferpack.runtime.residency import EVICTED, Footprint, ModelEntry, ModelState, plan_room
from inferpack.runtime.served_model import ServedModel
from inferpack.runtime.workers import DevicePools
from inferpack.types import Tensor

MODEL_BYTES = 1000
NAMES = [f"m{i}" for i in range(8)]


@dataclass
class Resident:
    """Bytes of fake models loaded and not yet closed, and the most seen at once."""

    bytes: int = 0
    peak: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, delta: int) -> None:
        with self.lock:
            self.bytes += delta
            self.peak = max(self.peak, self.bytes)


class FakeBackend:
    device = "cpu"

    def __init__(self, resident: Resident) -> None:
        self._resident = resident
        resident.add(MODEL_BYTES)

    @property
    def memory_bytes(self) -> int:
        return MODEL_BYTES

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"y": inputs["x"]}

    def warm_up(self, inputs: dict[str, Tensor]) -> None:
        pass

    def close(self) -> None:
        self._resident.add(-MODEL_BYTES)


class FakeRepository:
    """Models of MODEL_BYTES each; an artifact of that size makes the estimate exact."""

    def __init__(self, root: Path, names: list[str]) -> None:
        self.root = root
        for name in names:
            (root / name).mkdir(parents=True, exist_ok=True)
            (root / name / "model.bin").write_bytes(b"\0" * MODEL_BYTES)
        self.names = names

    def model_names(self) -> list[str]:
        return list(self.names)

    def config(self, name: str) -> ModelConfig:
        spec = (TensorSpec("x", "FP32", (2,)),)
        return ModelConfig(name, "workload", spec, (TensorSpec("y", "FP32", (2,)),), 4, "model.bin")

    def versions(self, name: str) -> list[str]:
        return ["1"]

    def sources(self, name: str) -> list[ModelSource]:
        return [ModelSource(self.config(name), "1", self.root / name / "model.bin")]


@dataclass
class FakeLoader:
    """Builds fake models; ``delay_s`` holds the loader thread, ``gate`` (if set) blocks it,
    ``broken`` names models whose load fails."""

    resident: Resident = field(default_factory=Resident)
    delay_s: float = 0.0
    gate: threading.Event | None = None
    broken: set[str] = field(default_factory=set)
    loads: int = 0

    def __call__(
        self, source: ModelSource, metrics: ServingMetrics, pools: DevicePools
    ) -> ServedModel:
        self.loads += 1
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(self.delay_s)
        if source.config.name in self.broken:
            raise ConfigError([f"{source.config.name}: broken artifact"])
        return ServedModel(source, [FakeBackend(self.resident)], metrics, pools)


def _manager(
    root: Path, loader: FakeLoader, mode: ControlMode = ControlMode.LRU, budget_models: float = 2.5
) -> ModelManager:
    control = ControlConfig(mode, memory_budget_bytes=int(budget_models * MODEL_BYTES))
    return ModelManager(FakeRepository(root, NAMES), ServingMetrics(), control, loader)


@pytest.fixture
def root(tmp_path: Path) -> Iterator[Path]:
    yield tmp_path


def _evictions(manager: ModelManager) -> float:
    value = manager.metrics.registry.get_sample_value("inferpack_model_evictions_total")
    return value or 0.0


async def _serve(manager: ModelManager, name: str, hold_s: float) -> None:
    async with manager.use(name, None) as model:
        entry = manager.entries[name]
        assert entry.state is ModelState.READY and model in entry.versions.values()
        budget = manager.control.memory_budget_bytes
        assert budget is not None and manager.used_bytes() <= budget
        await asyncio.sleep(hold_s)


async def test_lru_churn_from_many_clients_never_deadlocks(root: Path) -> None:
    """8 models, a 2.5-model budget, 6 clients: the configuration that deadlocked."""
    loader = FakeLoader(delay_s=0.002)
    manager = _manager(root, loader)
    await manager.start()
    rng = np.random.default_rng(0)

    async def client(picks: list[int]) -> None:
        for pick in picks:
            await _serve(manager, NAMES[pick], 0.001 * (pick % 3))

    async with asyncio.timeout(20):
        await asyncio.gather(*(client(list(rng.integers(0, 8, 40))) for _ in range(6)))
    evicted = _evictions(manager)
    await manager.close()
    assert evicted > 10
    assert loader.resident.peak <= 2.5 * MODEL_BYTES  # loads wait for their victims' close
    assert loader.resident.bytes == 0


@settings(
    max_examples=50, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    picks=st.lists(st.tuples(st.integers(0, 7), st.integers(0, 2)), min_size=8, max_size=60),
    clients=st.integers(1, 8),
    budget_models=st.sampled_from([1.0, 1.5, 2.5, 4.0]),
    delay_ms=st.integers(0, 2),
    broken=st.booleans(),
)
def test_random_churn_serves_every_request_within_budget(
    root: Path,
    picks: list[tuple[int, int]],
    clients: int,
    budget_models: float,
    delay_ms: int,
    broken: bool,
) -> None:
    """Every request is served, or (only for the broken model) fails with its reason."""
    loader = FakeLoader(delay_s=delay_ms / 1000, broken={NAMES[7]} if broken else set())
    manager = _manager(root, loader, budget_models=budget_models)

    async def client(index: int) -> None:
        for model, hold_ms in picks[index::clients]:
            if NAMES[model] in loader.broken:
                with pytest.raises(UnavailableError, match="broken artifact"):
                    await _serve(manager, NAMES[model], 0)
            else:
                await _serve(manager, NAMES[model], hold_ms / 1000)

    async def scenario() -> None:
        await manager.start()
        async with asyncio.timeout(20):
            await asyncio.gather(*(client(i) for i in range(clients)))
        await manager.close()

    asyncio.run(scenario())
    assert loader.resident.peak <= budget_models * MODEL_BYTES
    assert loader.resident.bytes == 0


async def test_request_reloads_when_evicted_and_reloading_before_its_turn(root: Path) -> None:
    """Evicted right after its load, and a reload already under way (reason reset) when
    the waiting request runs: it waits for that reload and is served, never a 503."""
    manager = _manager(root, FakeLoader(delay_s=0.01))
    await manager.start()
    entry = manager.entries["m0"]
    request = asyncio.create_task(_serve(manager, "m0", 0))
    while entry.loading is None:
        await asyncio.sleep(0)

    closes: list[asyncio.Future[None]] = []

    def evict_and_reload(_: object) -> None:  # runs before the request resumes
        closes.extend(asyncio.ensure_future(model.close()) for model in entry.versions.values())
        entry.versions, entry.state, entry.reason = {}, ModelState.UNAVAILABLE, EVICTED
        entry.state, entry.reason = ModelState.LOADING, ""
        entry.loading = asyncio.ensure_future(manager._load(entry))

    entry.loading.add_done_callback(evict_and_reload)
    async with asyncio.timeout(5):
        await request
    await asyncio.gather(*closes)
    await manager.close()


async def test_failed_load_answers_with_its_reason(root: Path) -> None:
    manager = _manager(root, FakeLoader(broken={"m1"}))
    await manager.start()
    with pytest.raises(UnavailableError, match="m1: broken artifact"):
        await _serve(manager, "m1", 0)
    assert manager.entries["m1"].state is ModelState.UNAVAILABLE
    await manager.close()


async def test_two_loads_do_not_both_take_the_last_room(root: Path) -> None:
    """Budget 1.5 models: of two concurrent first loads, the second waits for the first's
    request to end and then evicts it; both requests are served."""
    loader = FakeLoader(delay_s=0.01)
    manager = _manager(root, loader, budget_models=1.5)
    await manager.start()
    async with asyncio.timeout(5):
        await asyncio.gather(_serve(manager, "m0", 0.02), _serve(manager, "m1", 0.02))
    await manager.close()
    assert loader.resident.peak == MODEL_BYTES


async def test_close_ends_loads_in_flight_and_answers_waiting_requests_503(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("inferpack.runtime.manager.SHUTDOWN_LOAD_WAIT_S", 0.05)
    gate = threading.Event()
    manager = _manager(root, FakeLoader(gate=gate))
    await manager.start()
    waiting = [asyncio.create_task(_serve(manager, "m0", 0)) for _ in range(3)]
    while manager.entries["m0"].loading is None:
        await asyncio.sleep(0)
    async with asyncio.timeout(5):
        await manager.close()
    gate.set()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(r, UnavailableError) for r in results), results
    assert all("shutting down" in str(r) for r in results)
    assert manager.entries["m0"].loading is None
    assert manager.entries["m0"].state is ModelState.UNAVAILABLE
    with pytest.raises(UnavailableError, match="shutting down"):
        await manager.load("m1")


async def test_request_during_shutdown_is_unavailable_not_internal(root: Path) -> None:
    """A READY model being closed (draining a request) answers new requests 503."""
    manager = _manager(root, FakeLoader(), mode=ControlMode.EXPLICIT)
    await manager.start()
    await manager.load("m0")
    release = asyncio.Event()

    async def long_request() -> None:
        async with manager.use("m0", None):
            await release.wait()

    running = asyncio.create_task(long_request())
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(manager.close())
    await asyncio.sleep(0.01)
    with pytest.raises(UnavailableError):
        async with manager.use("m0", None):
            pass
    release.set()
    async with asyncio.timeout(5):
        await asyncio.gather(running, closing)


def _entry(name: str, state: ModelState, last_used_s: float, **fields: object) -> ModelEntry:
    entry = ModelEntry(name, state=state, last_used_s=last_used_s)
    for key, value in fields.items():
        setattr(entry, key, value)
    return entry


class _Sized:
    """Stands in for a loaded version in pure planning tests: only memory_bytes matters."""

    memory_bytes = MODEL_BYTES


def _ready(name: str, last_used_s: float, **fields: object) -> ModelEntry:
    entry = _entry(name, ModelState.READY, last_used_s, **fields)
    entry.versions = {"1": _Sized()}  # type: ignore[dict-item]
    return entry


def test_plan_room_evicts_least_recently_used_idle_models_only() -> None:
    busy = _ready("busy", 0.0, inflight=1)
    old, new = _ready("old", 1.0), _ready("new", 2.0)
    awaited = _ready("awaited", 0.5, waiters=1)
    assert plan_room([busy, old, new, awaited], 4 * MODEL_BYTES, MODEL_BYTES) == [old]
    assert plan_room([busy, old, new, awaited], 5 * MODEL_BYTES, MODEL_BYTES) == []


def test_plan_room_counts_reservations_and_waits_rather_than_evicts_in_vain() -> None:
    loading = _entry("loading", ModelState.LOADING, 0.0, reserved=Footprint(MODEL_BYTES))
    busy, idle = _ready("busy", 0.0, inflight=1), _ready("idle", 1.0)
    # held: 3 models; budget 2.5 with one more needed cannot fit even evicting "idle".
    assert plan_room([loading, busy, idle], int(2.5 * MODEL_BYTES), MODEL_BYTES) is None
    assert plan_room([loading, busy, idle], 3 * MODEL_BYTES, MODEL_BYTES) == [idle]


def test_plan_room_lets_a_model_larger_than_the_budget_load_alone() -> None:
    assert plan_room([], MODEL_BYTES, 5 * MODEL_BYTES) == []
    idle = _ready("idle", 0.0)
    assert plan_room([idle], MODEL_BYTES, 5 * MODEL_BYTES) == [idle]


async def test_loads_run_torch_on_their_share_of_the_cpu_threads(root: Path) -> None:
    """Each loader thread computes with N // load_threads intra-op threads (a team kept for
    the thread's life), not torch's every-core default: 8 threads, 2 loaders -> 4 each."""
    torch = pytest.importorskip("torch")
    default = torch.get_num_threads()
    seen: list[tuple[str, int]] = []
    fake = FakeLoader(delay_s=0.02)

    def recording(source: ModelSource, metrics: ServingMetrics, pools: DevicePools) -> ServedModel:
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return fake(source, metrics, pools)

    control = ControlConfig(ControlMode.EXPLICIT, load_threads=2, cpu_threads=8)
    manager = ModelManager(FakeRepository(root, NAMES), ServingMetrics(), control, recording)
    await manager.start()
    try:
        await asyncio.gather(*(manager.load(name) for name in NAMES))
        assert len(seen) == len(NAMES)
        assert {threads for _, threads in seen} == {4}
        assert {name for name, _ in seen} <= {"loader_0", "loader_1"}
    finally:
        await manager.close()
        torch.set_num_threads(default)  # process-wide: leave it as found
