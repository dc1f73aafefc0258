"""A named tensor of a model's signature: the one type model and processing configs share.

Its own module so that ``model_config`` (which holds it in inputs and outputs) and
``processing_config`` (which checks pre/post-processing against it) both import it
without importing each other.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """A named tensor; ``dims`` excludes the batch dimension; -1 marks a variable dim."""

    name: str
    datatype: str
    dims: tuple[int, ...]
