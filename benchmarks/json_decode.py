"""JSON request decoding: the old path (json.loads + nested np.asarray) against the v2 codec.

Bodies: the small CNN's 1x3x64x64 FP32 input with short numbers (3 decimals, ~90 KB, the
"85 KB" image request) and full float32 precision (what ``tolist()`` writes, ~250 KB), flat
and nested, plus the tiny MLP's 1x16 request. For each: decode time (the minimum over
repeats of the mean of a batch of calls, so a busy 2-core host shows its quiet moments;
every sample is kept), peak Python memory during one decode (tracemalloc), and the ratio.
Then whether decoding on a worker thread helps: the event loop's worst stall while 8
concurrent large decodes run inline or through ``asyncio.to_thread``.

Writes benchmarks/results/json_decode.json.  Run: python -m benchmarks.json_decode
"""

from __future__ import annotations

import asyncio
import json
import time
import timeit
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks.common import write_result
from inferpack.protocol.v2_codec import decode_infer_request

REPEATS = 15
CALLS_PER_REPEAT = 20
CNN_SHAPE = (1, 3, 64, 64)


def old_decode(body: bytes) -> dict[str, np.ndarray]:
    """The decoder as it was: the whole body into Python objects, then nested np.asarray."""
    header = json.loads(body)
    tensors = {}
    for item in header["inputs"]:
        parsed = np.asarray(item["data"])
        tensors[item["name"]] = parsed.astype(np.float32).reshape(item["shape"])
    return tensors


def new_decode(body: bytes) -> dict[str, np.ndarray]:
    return decode_infer_request(body, None, "m", None)[0].inputs


def _body(shape: tuple[int, ...], digits: int | None, nested: bool) -> bytes:
    values = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    wide = values.astype(np.float64)
    if digits is not None:
        wide = np.round(wide, digits)
    data = wide.tolist() if nested else wide.reshape(-1).tolist()
    item = {"name": "input", "datatype": "FP32", "shape": list(shape), "data": data}
    return json.dumps({"inputs": [item]}).encode()


def _times_ms(decode: Callable[[bytes], Any], body: bytes) -> list[float]:
    samples = timeit.repeat(lambda: decode(body), number=CALLS_PER_REPEAT, repeat=REPEATS)
    return [round(s / CALLS_PER_REPEAT * 1e3, 4) for s in samples]


def _peak_bytes(decode: Callable[[bytes], Any], body: bytes) -> int:
    decode(body)
    tracemalloc.start()
    try:
        decode(body)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def measure_body(name: str, body: bytes) -> dict[str, Any]:
    old, new = old_decode(body)["input"], new_decode(body)["input"]
    assert old.dtype == new.dtype and np.array_equal(old, new), name
    old_ms, new_ms = _times_ms(old_decode, body), _times_ms(new_decode, body)
    old_peak, new_peak = _peak_bytes(old_decode, body), _peak_bytes(new_decode, body)
    return {
        "body": name,
        "body_bytes": len(body),
        "old_ms_samples": old_ms,
        "new_ms_samples": new_ms,
        "old_ms": min(old_ms),
        "new_ms": min(new_ms),
        "speedup": round(min(old_ms) / min(new_ms), 2),
        "old_peak_bytes": old_peak,
        "new_peak_bytes": new_peak,
        "old_peak_x_body": round(old_peak / len(body), 2),
        "new_peak_x_body": round(new_peak / len(body), 2),
    }


async def _worst_stall_ms(body: bytes, offload: bool, concurrent: int) -> float:
    """The longest the loop went without running a 1 ms ticker while decodes ran."""
    stalls: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            stalls.append(now - last)
            last = now

    async def one() -> None:
        if offload:
            await asyncio.to_thread(new_decode, body)
        else:
            new_decode(body)
            await asyncio.sleep(0)

    tick = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    await asyncio.gather(*(one() for _ in range(concurrent)))
    done.set()
    await tick
    return round(max(stalls) * 1e3, 2)


def measure_offload(body: bytes, concurrent: int = 8) -> dict[str, Any]:
    inline = [asyncio.run(_worst_stall_ms(body, False, concurrent)) for _ in range(5)]
    thread = [asyncio.run(_worst_stall_ms(body, True, concurrent)) for _ in range(5)]
    return {
        "body_bytes": len(body),
        "concurrent_decodes": concurrent,
        "worst_loop_stall_ms_inline": inline,
        "worst_loop_stall_ms_thread": thread,
    }


def main() -> None:
    bodies = {
        "small-cnn 1x3x64x64, 3 decimals, flat": _body(CNN_SHAPE, 3, nested=False),
        "small-cnn 1x3x64x64, 3 decimals, nested": _body(CNN_SHAPE, 3, nested=True),
        "small-cnn 1x3x64x64, full precision, flat": _body(CNN_SHAPE, None, nested=False),
        "small-cnn 1x3x64x64, full precision, nested": _body(CNN_SHAPE, None, nested=True),
        "tiny-mlp 1x16, full precision, flat": _body((1, 16), None, nested=False),
    }
    rows = [measure_body(name, body) for name, body in bodies.items()]
    for row in rows:
        print(
            f"{row['body']:45s} {row['body_bytes']:8d} B  old {row['old_ms']:7.3f} ms  "
            f"new {row['new_ms']:7.3f} ms  x{row['speedup']:5.2f}  peak "
            f"{row['old_peak_x_body']:5.2f} -> {row['new_peak_x_body']:5.2f} x body"
        )
    large = _body((16, 3, 64, 64), None, nested=False)  # ~4 MB: above OFFLOAD_BYTES
    offload = measure_offload(large)
    print(f"offload {offload}")
    path = write_result(
        "json_decode.json",
        {
            "benchmark": "JSON request decode: json.loads + np.asarray vs v2_codec",
            "method": f"min over {REPEATS} repeats of the mean of {CALLS_PER_REPEAT} calls; "
            "peak = tracemalloc peak during one decode (Python and numpy allocations)",
            "bodies": rows,
            "offload": offload,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
