"""Work proportional to a request's body runs off the event loop once the body is large.

Decoding and encoding tensors (JSON text, BYTES elements, typed gRPC contents) costs time in
proportion to the body; on the event loop that time stalls every other request of the
server (health probes included). From OFFLOAD_BYTES up it runs on a worker thread; smaller
bodies are handled inline, where the hand-off would cost more than the loop waits (~5 ms
of decoding per MiB). A thread still shares the GIL: the v2 JSON decoder
(:mod:`inferpack.protocol.json_data`) and the JSON encoder
(:func:`inferpack.protocol.tensors_json.json_text`) work a piece at a time, so the loop gets
the GIL back between pieces (Python's switch interval, 5 ms); the TorchServe route's parse
is one msgspec call (~5 ms per MB).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, TypeVar

from inferpack.types import InferResponse

R = TypeVar("R")

# Bodies (and responses) from 1 MiB up (~5 ms of decoding) are decoded (encoded) on a worker
# thread. 8 concurrent 4 MB decodes stalled the loop 130 ms inline, 70-105 ms on threads
# (benchmarks/results/json_decode.json).
OFFLOAD_BYTES = 1024 * 1024
# A value written as JSON text: ~16 bytes (a float32's shortest repr and a comma), ~60 ns.
JSON_VALUE_BYTES = 16


async def off_loop(size: int, work: Callable[..., R], *args: Any) -> R:
    """``work(*args)``, on a worker thread when ``size`` (about the bytes it reads or
    writes) is OFFLOAD_BYTES or more."""
    if size < OFFLOAD_BYTES:
        return work(*args)
    return await asyncio.to_thread(work, *args)


def output_bytes(response: InferResponse, is_binary: Callable[[str], bool]) -> int:
    """About the bytes encoding ``response`` writes: a binary output its own, a JSON one
    JSON_VALUE_BYTES per value (what its text, and the time to write it, scale with)."""
    return sum(
        array.nbytes if is_binary(name) else array.size * JSON_VALUE_BYTES
        for name, array in response.outputs.items()
    )
