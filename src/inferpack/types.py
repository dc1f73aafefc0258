"""The one internal request and response type that every protocol adapter translates to.

Tensors are numpy arrays; their v2 datatype follows from the dtype
(see :mod:`inferpack.datatypes`). Adapters never reach past these types into the engine.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

Tensor = npt.NDArray[np.generic]
Parameters = dict[str, Any]


@dataclass(slots=True)
class InferRequest:
    """One inference request: named input tensors for one model (and optionally a version).

    ``requested_outputs`` is None when the client wants every output; ``classification``
    maps an output to k: answer its top-k as Triton's classification extension does.
    ``charge``, when the adapter sets it, counts bytes that serving the request allocates
    beyond its body (decoded images) in the server's in-flight cap, before they are
    allocated (raising OverloadedError when they do not fit); a negative charge gives back
    what was freed. It may be called from worker threads.
    """

    model_name: str
    inputs: dict[str, Tensor]
    model_version: str | None = None
    id: str | None = None
    requested_outputs: list[str] | None = None
    parameters: Parameters = field(default_factory=dict)
    classification: dict[str, int] = field(default_factory=dict)
    charge: Callable[[int], None] | None = field(default=None, repr=False, compare=False)


@dataclass(slots=True)
class InferResponse:
    """Named output tensors of one request, in the order the model declares them."""

    model_name: str
    model_version: str
    outputs: dict[str, Tensor]
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
