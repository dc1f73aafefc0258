"""Weights kept narrower than they are computed in (model.yaml ``storage_precision``).

Every floating parameter and buffer at the compute dtype is stored at the storage dtype
(bf16/fp16, half the bytes) under its own name, and reading it gives it widened, so the
cast runs when a layer reads its weight::

    for each submodule holding such tensors:
        its tensors t -> t.to(storage dtype)             # the only copy that stays resident
        its class -> a subclass whose __getattr__ widens those names on every read

Trade-off, measured by ``benchmarks/storage_precision.py``:

* Materialising all widened weights once per batch (``torch.func.functional_call``) holds
  a full compute-dtype copy while a batch runs, and swaps the module's attributes in place,
  which instances sharing the module on several threads cannot do safely.
* ``torch.nn.utils.parametrize`` widens on read too, but adds a class per module instance
  and a module per tensor: more bytes than bf16 saves on a small model.
* Here: at rest only the narrow tensors, while running one layer's widened weights at a
  time, nothing mutated while running; one subclass per (class, dtype), shared. The price
  is one cast per read (a weight read twice in a forward is cast twice).

Only modules whose weights are attributes read at call time can do this: eager modules and
programs unlifted from ``torch.export``; a frozen TorchScript module's weights are
constants inside its graph (model.yaml validation refuses ``torchscript``).
"""

from __future__ import annotations

import threading
from typing import Any

import torch
from torch import nn

# (class, compute dtype) -> its widening subclass. Classes defined inside a function (one
# per instance, as torch.fx makes for each GraphModule) get an uncached subclass, which
# goes with the instance instead of being kept here forever.
_SUBCLASSES: dict[tuple[type[nn.Module], torch.dtype], type[nn.Module]] = {}
_SUBCLASSES_LOCK = threading.Lock()  # models load on several threads at once
_NARROW_NAMES = "_inferpack_narrow_names"


def keep_narrow(module: nn.Module, storage: torch.dtype, compute: torch.dtype) -> nn.Module:
    """Store ``module``'s ``compute``-dtype parameters and buffers as ``storage`` (in place);
    reading them still gives ``compute`` tensors. A tensor registered in several submodules
    (tied weights) keeps one narrow copy. Returns ``module``."""
    # id(original) -> (original, narrow copy); the original is held so its id stays unique.
    narrow: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    for sub in module.modules():
        names = []
        for table in (sub._parameters, sub._buffers):
            for name, original in table.items():
                if original is None or original.dtype != compute:
                    continue
                if id(original) not in narrow:
                    narrow[id(original)] = (original, _narrowed(original, storage))
                table[name] = narrow[id(original)][1]  # type: ignore[assignment]
                names.append(name)
        if names:
            setattr(sub, _NARROW_NAMES, frozenset(names))
            sub.__class__ = _widening(type(sub), compute)
    return module


def _narrowed(tensor: torch.Tensor, storage: torch.dtype) -> torch.Tensor:
    with torch.no_grad():
        stored = tensor.detach().to(storage)
    if isinstance(tensor, nn.Parameter):
        return nn.Parameter(stored, requires_grad=False)
    return stored


def _widening(cls: type[nn.Module], compute: torch.dtype) -> type[nn.Module]:
    """``cls`` whose reads of the instance's narrow tensors give them as ``compute``."""
    if cls.__dict__.get(_NARROW_NAMES + "_class"):
        return cls  # already widening
    key = (cls, compute)
    with _SUBCLASSES_LOCK:
        cached = _SUBCLASSES.get(key)
    if cached is not None:
        return cached
    base_getattr = cls.__getattr__

    def __getattr__(self: nn.Module, name: str) -> Any:  # noqa: N807
        # Only names not found the usual way come here: nn.Module keeps parameters and
        # buffers in tables, not in the instance dict, so each read of one passes here.
        value = base_getattr(self, name)
        if name in self.__dict__.get(_NARROW_NAMES, ()):
            return value.to(compute)
        return value

    namespace = {"__getattr__": __getattr__, _NARROW_NAMES + "_class": True}
    subclass = type(f"Narrow{cls.__name__}", (cls,), namespace)
    if "<locals>" not in cls.__qualname__:
        with _SUBCLASSES_LOCK:
            subclass = _SUBCLASSES.setdefault(key, subclass)
    return subclass
