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
        """Weights (parameters + buffers) plus the measured workspace."""

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]: ...

    def warm_up(self, inputs: dict[str, Tensor]) -> None:
        """Run one batch and add the device workspace it needed to ``memory_bytes``."""

    def close(self) -> None: ...
