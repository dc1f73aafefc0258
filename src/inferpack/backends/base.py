"""The interface every backend implements."""

from __future__ import annotations

from typing import Protocol

from inferpack.types import Tensor


class Backend(Protocol):
    """A model loaded on one device. ``run`` is called from instance worker threads only,
    never from the event loop; it takes and returns whole batches keyed by tensor name."""

    device: str
    memory_bytes: int

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]: ...

    def close(self) -> None: ...
