"""The interface every backend implements."""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Executor
from typing import Protocol, runtime_checkable

import numpy as np

from inferpack.backends.python.instances import PythonRequest
from inferpack.config.model_config import ModelConfig
from inferpack.datatypes import numpy_dtype
from inferpack.errors import InferpackError
from inferpack.types import Tensor


class Backend(Protocol):
    """A model loaded on one device. ``run`` is called from instance worker threads only,
    never from the event loop; it takes and returns whole batches keyed by tensor name."""

    device: str

    @property
    def memory_bytes(self) -> int:
        """Bytes the loaded model uses on its device: its weights (every distinct tensor
        storage it keeps, shared ones included) plus the workspace measured by
        :meth:`warm_up`. The LRU memory budget counts this, less what :class:`SharesWeights`
        says other models may hold too."""

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]: ...

    def warm_up(self, inputs: dict[str, Tensor]) -> None:
        """Run ``inputs`` (batch 1) once; where the device has a workspace to measure, add
        that of the model's largest batch to ``memory_bytes``. Blocking (worker thread)."""

    def close(self) -> None: ...


@runtime_checkable
class RunsRequests(Protocol):
    """A backend that takes a batch as its requests (python models): each request's inputs
    with its id, custom parameters and requested outputs (``PythonRequest``), one result
    per request, the outputs or the InferpackError that request alone failed with. The
    server neither joins the requests' rows nor pads them."""

    def run_requests(
        self, requests: list[PythonRequest]
    ) -> list[dict[str, Tensor] | InferpackError]: ...


@runtime_checkable
class OwnsThread(Protocol):
    """A backend whose batches run on an executor of its own, not the device's shared
    worker threads (python models: a model that calls other models blocks its thread)."""

    executor: Executor


@runtime_checkable
class SharesWeights(Protocol):
    """A backend whose weights may be held by other loaded models too (same bytes, stored
    once: see ``backends/tensor_store.py``). Optional: a backend without it holds all of
    its ``memory_bytes`` alone.

    ``shared_weights`` maps each content key of a stored weight the backend uses to its
    bytes (all of them counted in ``memory_bytes``). Equal keys are the same bytes in
    memory, so the budget counts a key once however many models hold it; backends sharing
    a whole module return the same mapping object. Fixed once loaded."""

    @property
    def shared_weights(self) -> Mapping[str, int]: ...


def warmup_inputs(config: ModelConfig) -> dict[str, Tensor]:
    """What :meth:`Backend.warm_up` runs: zeros of the smallest batch the model runs at (1,
    or its smallest bucket: a model compiled per bucket may run no other size), variable
    dims as 1, for every input."""
    inputs = {}
    rows = config.compile.bucket_for(1)
    for spec in config.inputs:
        dims = tuple(d if d > 0 else 1 for d in spec.dims)
        shape = (rows, *dims) if config.batching else dims
        inputs[spec.name] = np.zeros(shape, dtype=numpy_dtype(spec.datatype))
    return inputs
