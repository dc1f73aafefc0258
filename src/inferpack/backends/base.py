"""The interface every backend implements."""

from __future__ import annotations

from typing import Protocol

from inferpack.types import Tensor


class Backend(Protocol):
    """A model loaded on one device. ``run`` is called from instance worker threads only,
    never from the event loop; it takes and returns whole batches keyed by tensor name."""

    device: str

    @property
    def memory_bytes(self) -> int:
        """Bytes the loaded model holds on its device: its weights (every distinct tensor
        storage it keeps) plus the workspace measured by :meth:`warm_up`. The LRU memory
        budget counts this."""

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]: ...

    def warm_up(self, inputs: dict[str, Tensor]) -> None:
        """Run ``inputs`` (batch 1) once; where the device has a workspace to measure, add
        that of the model's largest batch to ``memory_bytes``. Blocking (worker thread)."""

    def close(self) -> None: ...
