"""A process-wide, content-addressed store of read-only weights shared between models.

Identical weights are stored once, found by the hash of their bytes at load, at two levels:

* **Modules.** Loads with the same :data:`ModuleKey` (the artifact's content hash and every
  setting that shapes the loaded module, see ``TorchBackend``) share one loaded module: the
  3,000 copies of one BERT are one module, loaded once. Instances of different models then
  run the same module from several threads: inference on an eval module mutates nothing.
* **Storages.** After a module is loaded, every tensor storage of at least
  :data:`MIN_SHARED_BYTES` that inference cannot write is hashed; where an equal storage is
  already stored, the module's tensors are re-pointed at it and its own copy is freed (a
  shared backbone with per-customer heads keeps one backbone). TorchScript modules keep
  their own tensors (their attributes live in C++); they share whole modules only. What a
  module shared whole keeps outside the store (small tensors, graph constants) is named by
  one ``module/`` key, so that it too counts once.

Only what inference cannot write is shared, so that no model can write into another's:

* Parameters are read-only while serving (the contract below).
* Buffers and plain tensor attributes are state a forward may write (a counter, a cache,
  ``copy_`` into a buffer): they are shared only once *proven* unwritten. ``prove`` (the
  backend's warm-up batch) runs the module once before anything is shared; a tensor whose
  version counter or bytes changed, or that was replaced, stays the module's own, and the
  module is *stateful*. Without a proof (model.yaml ``warmup: false``) buffers stay the
  module's own, and a module that has any is taken as stateful.
* A stateful module is never shared whole: each of its holders loads its own (two tenants'
  copies of one artifact keep their own state).
* Two storages of one module are never merged, even with equal bytes: a module may write
  one of them, or rely on them being apart. Tied weights (one storage) stay one.

The proof sees one batch of zeros: state written only by other inputs, or only after
several batches, is not seen. :meth:`TensorStore.verify` re-hashes what is stored to check.

Both levels are reference-counted per holder and released when the last holder closes::

    lease_module(key, build, prove):
        key held or being loaded? -> one more holder, wait for that load, same module
                                     (stateful: let it go, load one of its own)
        else: module = build(); before = versions and digests of its state
              prove(module); written = state whose version, digest or tensor changed
              stateful = written is not empty; stateful? no other holder gets it
              each storage of params (and, once proven, of unwritten buffers),
              one storage per key in the module:
                            content key = (device, bytes, BLAKE2b of the bytes)
                            stored already? re-point the module's tensors at it : store it
    lease.release():  holders -= 1; at 0 the module goes and its storage keys are released

Contract. Shared tensors are read-only: the store never writes them and callers must not
(TorchBackend runs under ``torch.inference_mode``; shared parameters lose ``requires_grad``);
:meth:`TensorStore.verify` re-hashes what is stored to check it. Content keys name bytes, so
the memory budget counts a key once however many models hold it. Thread-safe: one lock
guards the tables; hashing and building run outside it.

Trade-off: hashing costs about 1.5 s per GB at load (BLAKE2b and SHA-256 both hash about
0.7 GB/s on a 2-core Xeon: benchmarks/results/shared_weights.json), paid by a module's first
load only: its weights once (buffers twice: before and after the proof), and its artifact
file, whose hash is cached by the file's identity (device, inode, size, mtime), so copies
that are links to one file are read once. The proof costs one batch of the smallest size,
and only where a module keeps buffers or tensor attributes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
from collections.abc import Callable, Hashable, Iterator, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from torch import nn

from inferpack.repository import ModelSource

# Storages below this are not shared: a stored key costs about 300 bytes of bookkeeping
# (key string, table slots, storage object) and one more key in each memory plan, so
# sharing a 1 KiB tensor between two models only just pays (BatchNorm statistics of a small
# CNN are 64 bytes; a BERT LayerNorm weight is 3 KiB).
MIN_SHARED_BYTES = 1024

# ModelConfig fields that do not shape the loaded module (how it is named, fed, batched
# and run); every other field, present or future, is part of a module's identity.
_SERVING_FIELDS = frozenset(
    {
        "name",
        "artifact",
        "inputs",
        "outputs",
        "max_batch_size",
        "dynamic_batching",
        "instances",
        "version_policy",
        "warmup",
    }
)

ModuleKey = str
"""What identifies a loadable module: equal keys must load equal modules."""

Storage = tuple[str, int]
"""Which storage a tensor views (:func:`storage_identity`): its device and address."""


def _hasher() -> Any:
    # BLAKE2b-128: collisions between distinct weights are out of reach (2**64 work), and
    # it is as fast as SHA-256 here and faster where the CPU lacks SHA instructions.
    return hashlib.blake2b(digest_size=16)


def storage_key(storage: torch.UntypedStorage) -> str:
    """The content key of a storage: ``device/bytes/hash`` of its bytes."""
    data = torch.empty(0, dtype=torch.uint8, device=storage.device).set_(storage).cpu()
    digest = _hasher()
    digest.update(data.numpy().data)  # the bytes in place (a device storage: a host copy)
    return f"{storage.device}/{storage.nbytes()}/{digest.hexdigest()}"


@dataclass(eq=False, slots=True)
class ModuleLease:
    """One holder's hold on a loaded module and the stored weights it uses.

    ``weight_bytes`` is every distinct storage the module keeps; ``shared_weights`` maps
    the content keys of those that other holders may hold too to their bytes: the storages
    in the store and, for a module shared whole, the rest of it under one module key (a
    frozen TorchScript module's constants). Holders of one module get the same mapping
    object, and the same ``warm_ups``: workspace bytes measured by warm-ups of the module,
    by input signature, so that it is warmed up once. ``release`` is idempotent."""

    module: nn.Module
    shared_weights: Mapping[str, int]
    weight_bytes: int
    warm_ups: dict[Hashable, int]
    _release: Callable[[], None]
    _released: bool = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._release()


@dataclass(eq=False, slots=True)
class _Stored:
    storage: torch.UntypedStorage
    holders: int = 1


@dataclass(frozen=True, slots=True)
class _Loaded:
    module: nn.Module
    stored: Mapping[str, int]  # store keys acquired for the module: released with it
    shared_weights: Mapping[str, int]
    weight_bytes: int
    stateful: bool  # its forward may write its own state: never shared whole
    warm_ups: dict[Hashable, int] = field(default_factory=dict)

    def lease(self, release: Callable[[], None]) -> ModuleLease:
        weights, size = self.shared_weights, self.weight_bytes
        return ModuleLease(self.module, weights, size, self.warm_ups, release)


@dataclass(eq=False, slots=True)
class _SharedModule:
    loaded: Future[_Loaded] = field(default_factory=Future)
    holders: int = 1


@dataclass(frozen=True, slots=True)
class StoreStats:
    """What the store holds now: distinct storages, their bytes, and shared modules."""

    storages: int
    storage_bytes: int
    modules: int


Weigh = Callable[[nn.Module], int]
"""Bytes of every distinct storage a module keeps (``torch_backend.module_tensors``)."""

Prove = Callable[[nn.Module], None]
"""Runs a just-built module once, as its warm-up would (the store then sees what a forward
writes); ``None``: the module cannot be run at load (model.yaml ``warmup: false``)."""


class TensorStore:
    """See the module docstring. One per process (:func:`default_store`); tests make their own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._storages: dict[str, _Stored] = {}
        self._modules: dict[ModuleKey, _SharedModule] = {}
        self._file_digests: dict[tuple[int, int, int, int], str] = {}

    def lease_module(
        self,
        key: ModuleKey | None,
        build: Callable[[], nn.Module],
        weigh: Weigh,
        prove: Prove | None = None,
    ) -> ModuleLease:
        """The module for ``key``, built by ``build`` and proven by ``prove`` (once per key
        while held, unless it is stateful); ``None`` builds a module of its own, whose
        storages are still shared. Blocking: call it from a loader thread. A failed build
        raises in every caller waiting on it."""
        if key is None:
            loaded = self._load(None, build, weigh, prove)
            return loaded.lease(lambda: self._release_storages(loaded.stored))
        with self._lock:
            entry = self._modules.get(key)
            owner = entry is None
            if entry is None:
                entry = self._modules[key] = _SharedModule()
            else:
                entry.holders += 1
        if owner:
            self._build_for(key, entry, build, weigh, prove)
        loaded = entry.loaded.result()
        if loaded.stateful and not owner:  # its state is its owner's: load one of our own
            self._release_module(key, entry)
            return self.lease_module(None, build, weigh, prove)
        return loaded.lease(lambda: self._release_module(key, entry))

    def _build_for(
        self,
        key: ModuleKey,
        entry: _SharedModule,
        build: Callable[[], nn.Module],
        weigh: Weigh,
        prove: Prove | None,
    ) -> None:
        try:
            loaded = self._load(key, build, weigh, prove)
        except BaseException as error:
            with self._lock:
                if self._modules.get(key) is entry:
                    del self._modules[key]
            entry.loaded.set_exception(error)
            return
        if loaded.stateful:  # no later load joins it
            with self._lock:
                if self._modules.get(key) is entry:
                    del self._modules[key]
        entry.loaded.set_result(loaded)

    def _release_module(self, key: ModuleKey, entry: _SharedModule) -> None:
        with self._lock:
            entry.holders -= 1
            if entry.holders > 0:
                return
            if self._modules.get(key) is entry:
                del self._modules[key]
        self._release_storages(entry.loaded.result().stored)

    def _load(
        self,
        key: ModuleKey | None,
        build: Callable[[], nn.Module],
        weigh: Weigh,
        prove: Prove | None,
    ) -> _Loaded:
        module = build()
        state = _State(module)
        if prove is not None and state.mutable:
            prove(module)
        written = state.written(module) if prove is not None else state.mutable
        stored = self._share_storages(module, written, state.keys)
        try:
            weight_bytes = weigh(module)
        except BaseException:
            self._release_storages(stored)
            raise
        shared = dict(stored)
        rest = weight_bytes - sum(stored.values())
        stateful = bool(written)
        if key is not None and rest > 0 and not stateful:  # held once by all its holders
            digest = _hasher()
            digest.update(key.encode())
            shared[f"module/{digest.hexdigest()}"] = rest
        return _Loaded(module, stored, MappingProxyType(shared), weight_bytes, stateful)

    def _share_storages(
        self, module: nn.Module, written: frozenset[str], keys: Mapping[Storage, str]
    ) -> dict[str, int]:
        """Store ``module``'s storages that inference cannot write (no tensor on them is in
        ``written``, by its name in the module), or re-point its tensors at equal stored
        ones; one storage per key (the module's others stay its own). ``keys``: those
        already hashed. The keys it now holds, each once, with their bytes."""
        views: dict[Storage, list[_Slot]] = {}
        for slot in _slots(module):
            if _shareable(slot.tensor):
                views.setdefault(storage_identity(slot.tensor), []).append(slot)
        firsts: dict[str, list[_Slot]] = {}  # key -> the views of the storage stored for it
        for ident, slots in views.items():
            if not any(slot.name in written for slot in slots):
                key = keys.get(ident) or storage_key(slots[0].tensor.untyped_storage())
                firsts.setdefault(key, slots)
        with self._lock:
            stored = {
                key: self._acquire(key, slots[0].tensor.untyped_storage())
                for key, slots in firsts.items()
            }
        sizes = {key: storage.nbytes() for key, storage in stored.items()}
        replaced: dict[int, torch.Tensor] = {}  # a tensor in two slots (tied) stays one
        try:
            for key, slots in firsts.items():
                for slot in slots:
                    tensor = slot.tensor
                    if id(tensor) not in replaced:
                        replaced[id(tensor)] = _on_storage(stored[key], tensor)
                    slot.table[slot.attribute] = replaced[id(tensor)]
        except BaseException:
            self._release_storages(sizes)
            raise
        return sizes

    def _acquire(self, key: str, storage: torch.UntypedStorage) -> torch.UntypedStorage:
        held = self._storages.get(key)
        if held is None:
            self._storages[key] = held = _Stored(storage, 0)
        held.holders += 1
        return held.storage

    def _release_storages(self, keys: Mapping[str, int]) -> None:
        with self._lock:
            for key in keys:
                held = self._storages[key]
                held.holders -= 1
                if held.holders == 0:
                    del self._storages[key]

    def module_key(self, source: ModelSource, device: str) -> ModuleKey | None:
        """The artifact's content hash, the device and every loading setting of the model's
        config (all fields but :data:`_SERVING_FIELDS`); None for an artifact that is not a
        file (its module is not shared whole)."""
        path = source.artifact_path
        if not path.is_file():
            return None
        config = source.config
        loading = {
            f.name: getattr(config, f.name)
            for f in dataclasses.fields(config)
            if f.name not in _SERVING_FIELDS
        }
        settings = json.dumps(loading, sort_keys=True, default=repr)
        return f"{self.file_digest(path)}|{device}|{settings}"

    def file_digest(self, path: Path) -> str:
        """The content hash of a file, cached by the file's identity (device, inode, size,
        modification time): links to one file, or an unchanged file, are read once."""
        status = os.stat(path)
        identity = (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)
        with self._lock:
            cached = self._file_digests.get(identity)
        if cached is not None:
            return cached
        with open(path, "rb") as file:
            digest = hashlib.file_digest(file, _hasher).hexdigest()
        with self._lock:
            self._file_digests[identity] = digest
        return digest

    def stats(self) -> StoreStats:
        with self._lock:
            storages = [held.storage for held in self._storages.values()]
            modules = len(self._modules)
        return StoreStats(len(storages), sum(s.nbytes() for s in storages), modules)

    def verify(self) -> list[str]:
        """Keys whose stored bytes no longer hash to their key (written to): should be []."""
        with self._lock:
            stored = [(key, held.storage) for key, held in self._storages.items()]
        return [key for key, storage in stored if storage_key(storage) != key]


@dataclass(frozen=True, slots=True)
class _Slot:
    """Where a module keeps a tensor: ``table[attribute]``, ``name`` in the whole module."""

    table: dict[str, Any]
    attribute: str
    name: str
    tensor: torch.Tensor

    @property
    def parameter(self) -> bool:
        return isinstance(self.tensor, nn.Parameter)


def _slots(module: nn.Module) -> Iterator[_Slot]:
    """Every re-pointable tensor of an eager module: parameters, buffers and plain tensor
    attributes (torch.export lifts constants into those). TorchScript modules have none."""
    for prefix, sub in module.named_modules(remove_duplicate=False):
        if isinstance(sub, torch.jit.ScriptModule):
            continue
        for table in (sub._parameters, sub._buffers, vars(sub)):
            for attribute, value in table.items():
                if isinstance(value, torch.Tensor):
                    yield _Slot(table, attribute, f"{prefix}.{attribute}".lstrip("."), value)


def _state_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """What a forward could write, by name: buffers (a TorchScript module's too) and plain
    tensor attributes; parameters are read-only while serving."""
    state = dict(module.named_buffers(remove_duplicate=False))
    state.update((slot.name, slot.tensor) for slot in _slots(module) if not slot.parameter)
    return state


class _State:
    """A module's state before its proof: each tensor (held, so that its identity stays its
    own), its version counter (bumped by every in-place write, ``inference_mode``
    included) and a digest of its bytes (writes that bypass the counter). ``keys``: the
    content keys of its storages as last hashed, for the store to reuse."""

    def __init__(self, module: nn.Module) -> None:
        self.keys: dict[Storage, str] = {}
        self._tensors = _state_tensors(module)
        self._before = {name: self._fingerprint(t) for name, t in self._tensors.items()}

    @property
    def mutable(self) -> frozenset[str]:
        return frozenset(self._before)

    def written(self, module: nn.Module) -> frozenset[str]:
        """Names of the state the proof wrote, replaced, added or removed."""
        self.keys.clear()
        after = {name: self._fingerprint(t) for name, t in _state_tensors(module).items()}
        names = self._before.keys() | after.keys()
        return frozenset(n for n in names if self._before.get(n) != after.get(n))

    def _fingerprint(self, tensor: torch.Tensor) -> tuple[int, int, str]:
        """Which tensor, its version and its bytes' digest. An inference tensor has no
        version counter (-1), a tensor that is not plain and dense (sparse, meta) no digest
        (""): what is left tells."""
        try:
            version = tensor._version
        except RuntimeError:
            version = -1
        digest = ""
        if tensor.layout == torch.strided and tensor.device.type in ("cpu", "cuda"):
            ident = storage_identity(tensor)
            if ident not in self.keys:
                self.keys[ident] = storage_key(tensor.untyped_storage())
            digest = self.keys[ident]
        return id(tensor), version, digest


def _shareable(tensor: torch.Tensor) -> bool:
    """A plain dense tensor on CPU or CUDA, big enough to be worth a key (no subclasses,
    quantized or sparse layouts, meta tensors, or plain attributes that require grad)."""
    return (
        type(tensor) in (torch.Tensor, nn.Parameter)
        and tensor.layout == torch.strided
        and not tensor.is_quantized
        and tensor.device.type in ("cpu", "cuda")
        and (isinstance(tensor, nn.Parameter) or not tensor.requires_grad)
        and tensor.untyped_storage().nbytes() >= MIN_SHARED_BYTES
    )


def storage_identity(tensor: torch.Tensor) -> Storage:
    """Which storage ``tensor`` views: tensors with equal identities share their bytes."""
    return str(tensor.device), tensor.untyped_storage().data_ptr()


def _on_storage(storage: torch.UntypedStorage, like: torch.Tensor) -> torch.Tensor:
    """``like`` (dtype, offset, size, strides) over ``storage``; a parameter stays one,
    without gradients."""
    if like.untyped_storage().data_ptr() == storage.data_ptr():
        tensor = like.detach()
    else:
        tensor = torch.empty(0, dtype=like.dtype, device=like.device)
        tensor.set_(storage, like.storage_offset(), like.size(), like.stride())
    if isinstance(like, nn.Parameter):
        return nn.Parameter(tensor, requires_grad=False)
    return tensor


_DEFAULT_STORE = TensorStore()


def default_store() -> TensorStore:
    """The process-wide store every TorchBackend shares weights through."""
    return _DEFAULT_STORE
