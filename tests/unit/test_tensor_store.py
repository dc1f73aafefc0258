"""The weight store: identical weights are held once, reference-counted per holder, found
by content, never written; the torch backend loads through it and says what it shares."""

from __future__ import annotations

import gc
import threading
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from inferpack.backends.tensor_store import MIN_SHARED_BYTES, StoreStats, TensorStore
from inferpack.backends.torch_backend import TorchBackend, module_tensors, storage_bytes
from inferpack.config.control import ControlConfig, ControlMode
from inferpack.config.model_config import InstanceConfig, ModelConfig, TensorSpec
from inferpack.repository import LocalRepository, ModelSource
from inferpack.repository.init import init_repository
from inferpack.runtime.manager import ModelManager
from inferpack.runtime.metrics import ServingMetrics
from inferpack.runtime.residency import ModelState
from inferpack.workloads import get_workload
from inferpack.workloads.weights import build_seeded
from tests.backbones import HEAD_PREFIX, Tenant, write_head_variants
from tests.helpers import edit_model

IMAGES = np.random.default_rng(0).standard_normal((4, 3, 64, 64)).astype(np.float32)


def _weigh(module: nn.Module) -> int:
    return storage_bytes(module_tensors(module))


def _cnn(seed: int) -> nn.Module:
    return build_seeded(get_workload("small-cnn"), {"seed": seed})


def _with_head(backbone_seed: int, head_seed: int) -> nn.Module:
    module = _cnn(backbone_seed)
    module[-1] = _cnn(head_seed)[-1]
    return module


def _run(module: nn.Module) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(IMAGES)).numpy()


def _prove(module: nn.Module) -> None:
    """The warm-up the store runs before it shares (the backend's: a batch of zeros)."""
    _run(module)


def _shareable(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name: tensor
        for name, tensor in module.state_dict(keep_vars=True).items()
        if tensor.untyped_storage().nbytes() >= MIN_SHARED_BYTES
    }


def test_identical_modules_hold_one_storage_per_weight_until_the_last_release() -> None:
    store = TensorStore()
    expected = _run(_cnn(0))
    first = store.lease_module(None, lambda: _cnn(0), _weigh)
    second = store.lease_module(None, lambda: _cnn(0), _weigh)
    shared = _shareable(first.module)
    assert len(shared) >= 3  # three convolutions and the final layer
    for name, tensor in _shareable(second.module).items():
        assert tensor.data_ptr() == shared[name].data_ptr(), name
    assert first.shared_weights == second.shared_weights
    stats = store.stats()
    assert stats.storages == len(first.shared_weights)
    assert stats.storage_bytes == sum(t.untyped_storage().nbytes() for t in shared.values())
    first.release()
    first.release()  # idempotent: the second holder's count is not taken
    assert store.stats() == stats
    np.testing.assert_allclose(_run(second.module), expected, rtol=1e-6)
    second.release()
    assert store.stats().storages == 0


def test_a_shared_backbone_is_held_once_and_each_head_apart() -> None:
    store = TensorStore()
    expected = {seed: _run(_with_head(0, seed)) for seed in (1, 2)}
    leases = {
        seed: store.lease_module(None, lambda s=seed: _with_head(0, s), _weigh) for seed in (1, 2)
    }
    one, two = (_shareable(lease.module) for lease in leases.values())
    for name in one:
        same = one[name].data_ptr() == two[name].data_ptr()
        assert same is not name.startswith(HEAD_PREFIX), name
    heads = sum(t.untyped_storage().nbytes() for n, t in one.items() if n.startswith(HEAD_PREFIX))
    backbone = sum(t.untyped_storage().nbytes() for t in one.values()) - heads
    assert store.stats().storage_bytes == backbone + 2 * heads
    for seed, lease in leases.items():
        np.testing.assert_allclose(_run(lease.module), expected[seed], rtol=1e-6)
        assert not any(t.requires_grad for t in _shareable(lease.module).values())


def test_tied_weights_stay_tied_and_equal_copies_in_one_module_stay_apart() -> None:
    """Two storages of one module are never merged, even with equal bytes (a module may
    write one, or rely on them being apart); a tensor in two places (tied) stays one."""
    store = TensorStore()
    layer, tied, twin = nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 32)
    tied.weight = layer.weight  # one parameter in two layers
    twin.load_state_dict(layer.state_dict())  # equal bytes, a copy of its own
    module = nn.Sequential(layer, tied, twin)
    expected = _linear_chain(module)
    lease = store.lease_module(None, lambda: module, _weigh)
    assert module[0].weight is module[1].weight
    assert module[2].weight.data_ptr() != module[0].weight.data_ptr()
    assert store.stats().storage_bytes == 32 * 32 * 4  # one key; biases below the minimum
    assert lease.weight_bytes == 2 * 32 * 32 * 4 + 3 * 32 * 4
    np.testing.assert_allclose(_linear_chain(module), expected, rtol=1e-6)
    lease.release()


def _linear_chain(module: nn.Module) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.ones(2, 32)).numpy()


def test_one_module_per_key_built_once_even_when_asked_concurrently() -> None:
    store = TensorStore()
    builds = []
    gate = threading.Event()

    def build() -> nn.Module:
        builds.append(1)
        gate.wait(10)
        return _cnn(0)

    with ThreadPoolExecutor(8) as pool:
        futures = [pool.submit(store.lease_module, "key", build, _weigh, _prove) for _ in range(8)]
        gate.set()
        leases = [future.result() for future in futures]
    assert len(builds) == 1
    assert all(lease.module is leases[0].module for lease in leases)
    assert all(lease.shared_weights is leases[0].shared_weights for lease in leases)
    for lease in leases[1:]:
        lease.release()
    assert store.stats().modules == 1
    leases[0].release()
    assert store.stats() == StoreStats(0, 0, 0)


def test_a_failed_build_fails_its_waiters_and_the_next_lease_builds_again() -> None:
    store = TensorStore()

    def broken() -> nn.Module:
        raise RuntimeError("corrupt artifact")

    with pytest.raises(RuntimeError, match="corrupt artifact"):
        store.lease_module("key", broken, _weigh)
    lease = store.lease_module("key", lambda: _cnn(0), _weigh, _prove)
    assert store.stats().modules == 1
    lease.release()


def _stored_bytes(shared_weights: Mapping[str, int]) -> int:
    return sum(size for key, size in shared_weights.items() if not key.startswith("module/"))


def _copies(root: Path, count: int) -> list[str]:
    """``count`` models with the same weights file content (copies, not links)."""
    init_repository(root, ["small-cnn"], seed=0)
    return [edit_model(root, "small-cnn", f"copy-{i}").name for i in range(count)]


def test_backends_of_identical_models_share_one_module_and_say_so(tmp_path: Path) -> None:
    store = TensorStore()
    repository = LocalRepository(tmp_path)
    names = _copies(tmp_path, 3)
    backends = [
        TorchBackend.load_instances(repository.sources(name)[0], store)[0] for name in names
    ]
    assert all(b.module is backends[0].module for b in backends)
    assert all(b.shared_weights is backends[0].shared_weights for b in backends)
    # The stored storages, and the tensors below the sharing minimum under the module key.
    assert sum(backends[0].shared_weights.values()) == backends[0].memory_bytes
    assert store.stats().storage_bytes == _stored_bytes(backends[0].shared_weights)
    expected = _run(_cnn(0))
    backends[0].close()
    backends[1].close()
    np.testing.assert_allclose(backends[2].run({"input": IMAGES})["logits"], expected, rtol=1e-6)
    backends[2].close()
    assert store.stats().storages == 0


def test_a_module_shared_whole_is_warmed_up_once_per_input_signature(tmp_path: Path) -> None:
    store = TensorStore()
    repository = LocalRepository(tmp_path)
    names = _copies(tmp_path, 2)
    edit_model(tmp_path, "small-cnn", "bigger-batches", max_batch_size=8)
    first, second, bigger = (
        TorchBackend.load_instances(repository.sources(name)[0], store)[0]
        for name in (*names, "bigger-batches")
    )
    assert first.module is second.module is bigger.module
    batches = []
    first.module.register_forward_pre_hook(lambda module, args: batches.append(len(args[0])))
    inputs = {"input": IMAGES[:1]}
    first.warm_up(inputs)
    second.warm_up(inputs)  # same module, same inputs and specs: nothing to learn
    assert batches == [1]
    bigger.warm_up(inputs)  # another max batch size: warmed up on its own
    assert batches == [1, 1]


def test_copies_of_a_frozen_torchscript_module_share_it_whole(tmp_path: Path) -> None:
    """Its weights are graph constants, outside the store: the module key names them."""
    path = tmp_path / "model.pt"
    torch.jit.freeze(torch.jit.script(_cnn(0))).save(str(path))
    store = TensorStore()
    backends = []
    for name in ("a", "b"):
        config = ModelConfig(
            name,
            "torchscript",
            (TensorSpec("input", "FP32", (3, 64, 64)),),
            (TensorSpec("logits", "FP32", (10,)),),
            max_batch_size=4,
            artifact="model.pt",
            instances=InstanceConfig(1, "cpu"),
        )
        backends += TorchBackend.load_instances(ModelSource(config, "1", path), store)
    first, second = backends
    assert first.module is second.module
    assert first.shared_weights is second.shared_weights
    assert sum(first.shared_weights.values()) == first.weight_bytes > 0
    assert any(key.startswith("module/") for key in first.shared_weights)


def test_a_backend_never_closed_releases_its_weights_when_collected(tmp_path: Path) -> None:
    store = TensorStore()
    (source,) = LocalRepository(tmp_path).sources(_copies(tmp_path, 1)[0])
    TorchBackend.load_instances(source, store)  # dropped at once, as after a failed warm-up
    gc.collect()
    assert store.stats().storages == 0


def test_concurrent_batches_on_models_sharing_weights_read_them_only(tmp_path: Path) -> None:
    store = TensorStore()
    repository = LocalRepository(tmp_path)
    names = write_head_variants(tmp_path, [1, 2])
    backends = [
        TorchBackend.load_instances(repository.sources(name)[0], store)[0] for name in names
    ]
    reference = {name: _run(_with_head(0, int(name.split("-")[1]))) for name in names}

    def run(index: int) -> None:
        backend = backends[index % 2]
        got = backend.run({"input": IMAGES})["logits"]
        np.testing.assert_allclose(got, reference[backend.config.name], rtol=1e-5, atol=1e-6)

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(run, range(40)))
    assert store.verify() == []
    backends[0].close()  # its head goes; the backbone stays for the other model
    assert store.stats().storage_bytes == _stored_bytes(backends[1].shared_weights)
    run(1)


def _manager(root: Path, control: ControlConfig) -> ModelManager:
    return ModelManager(LocalRepository(root), ServingMetrics(), control)


def _logits(manager: ModelManager, name: str) -> np.ndarray:
    return manager.get(name).backends[0].run({"input": IMAGES})["logits"]


async def test_the_manager_counts_weights_of_identical_models_once(tmp_path: Path) -> None:
    names = _copies(tmp_path, 4)
    manager = _manager(tmp_path, ControlConfig(ControlMode.EXPLICIT))
    await manager.start()
    try:
        for name in names:
            await manager.load(name)
        one = manager.entry(names[0]).memory_bytes
        shared = sum(manager.get(names[0]).backends[0].shared_weights.values())
        assert shared > one / 2  # the convolutions and the final layer: most of the bytes
        assert manager.used_bytes() == one + 3 * (one - shared)
        expected = _run(_cnn(0))
        await manager.unload(names[0])
        assert manager.used_bytes() == one + 2 * (one - shared)
        for name in names[1:]:
            np.testing.assert_allclose(_logits(manager, name), expected, rtol=1e-6)
    finally:
        await manager.close()


async def test_lru_budget_holds_models_that_fit_only_with_their_backbone_counted_once(
    tmp_path: Path,
) -> None:
    names = write_head_variants(tmp_path, [1, 2, 3, 4])
    probe = _manager(tmp_path, ControlConfig(ControlMode.EXPLICIT))
    await probe.start()
    first, second = [
        (await probe.load(name)).latest().backends[0].shared_weights for name in names[:2]
    ]
    one = probe.entry(names[0]).memory_bytes
    own = one - sum(size for key, size in first.items() if key in second)  # all but backbone
    await probe.close()
    artifact = (tmp_path / names[0] / "1" / "model.safetensors").stat().st_size
    # Room for the backbone once, each model's own bytes, and one first-load estimate (the
    # artifact's size, before the load knows what it shares): counted unshared, the last
    # two loads would each evict.
    budget = one + artifact + 4 * own
    assert 3 * one + artifact > budget
    manager = _manager(tmp_path, ControlConfig(ControlMode.LRU, memory_budget_bytes=budget))
    await manager.start()
    try:
        for name in names:
            async with manager.use(name, None):
                pass
        assert all(manager.entry(name).state is ModelState.READY for name in names)
        assert manager.used_bytes() <= budget
        assert manager.metrics.registry.get_sample_value("inferpack_model_evictions_total") == 0
    finally:
        await manager.close()


ROWS = torch.randn(3, 16, generator=torch.Generator().manual_seed(5))


def _prove_tenant(module: nn.Module) -> None:
    with torch.inference_mode():
        module(torch.zeros(1, 16))


def _answer(module: nn.Module) -> torch.Tensor:
    with torch.inference_mode():
        out: torch.Tensor = module(ROWS)
    return out


def test_a_model_that_writes_its_buffer_never_writes_another_models() -> None:
    """Two tenants' zero buffers are equal bytes; the writer's proof shows it writes its
    own, so it is never stored: the reader's answers stay its own, and what is stored
    still hashes to its key."""
    store = TensorStore()
    writer = store.lease_module(None, lambda: Tenant(2, writes=True), _weigh, _prove_tenant)
    reader = store.lease_module(None, lambda: Tenant(1, writes=False), _weigh, _prove_tenant)
    expected = _answer(Tenant(1, writes=False))
    _answer(writer.module)  # copies a row into its buffer
    torch.testing.assert_close(_answer(reader.module), expected, rtol=0, atol=0)
    assert writer.module.seen.data_ptr() != reader.module.seen.data_ptr()
    assert writer.module.backbone.weight.data_ptr() == reader.module.backbone.weight.data_ptr()
    assert store.verify() == []
    assert sum(writer.shared_weights.values()) == 16 * 16 * 4  # the backbone weight only


def test_buffers_proven_unwritten_are_shared_and_unproven_ones_are_not() -> None:
    store = TensorStore()
    proven = [
        store.lease_module(None, lambda s=s: Tenant(s, writes=False), _weigh, _prove_tenant)
        for s in (1, 2)
    ]
    assert proven[0].module.seen.data_ptr() == proven[1].module.seen.data_ptr()
    unproven = [
        store.lease_module(None, lambda s=s: Tenant(s, writes=False), _weigh) for s in (3, 4)
    ]  # warmup: false: nothing has shown that the forward leaves its buffers alone
    assert unproven[0].module.seen.data_ptr() != unproven[1].module.seen.data_ptr()
    assert unproven[0].module.seen.data_ptr() != proven[0].module.seen.data_ptr()
    assert (
        unproven[0].module.backbone.weight.data_ptr() == proven[0].module.backbone.weight.data_ptr()
    )


@pytest.mark.parametrize("script", [False, True])
def test_a_module_whose_forward_writes_its_state_is_never_shared_whole(script: bool) -> None:
    """Copies of one artifact are one module, unless its forward writes its state: then each
    holder gets its own, however many ask at once (TorchScript modules too, whose buffers
    the store sees but never re-points)."""
    store = TensorStore()
    builds: list[int] = []

    def build(writes: bool) -> nn.Module:
        builds.append(1)
        module = Tenant(1, writes).eval()
        return torch.jit.script(module) if script else module

    with ThreadPoolExecutor(4) as pool:
        futures = [
            pool.submit(store.lease_module, "writer", lambda: build(True), _weigh, _prove_tenant)
            for _ in range(4)
        ]
        writers = [future.result() for future in futures]
    assert len(builds) == 4 and len({id(lease.module) for lease in writers}) == 4
    assert not any(key.startswith("module/") for key in writers[0].shared_weights)
    readers = [
        store.lease_module("reader", lambda: build(False), _weigh, _prove_tenant) for _ in range(3)
    ]
    assert len(builds) == 5 and all(lease.module is readers[0].module for lease in readers)
    assert len({lease.module.seen.data_ptr() for lease in writers}) == 4
    for lease in (*writers, *readers):
        lease.release()
    assert store.stats() == StoreStats(0, 0, 0)
