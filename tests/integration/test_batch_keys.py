"""Requests of different shapes queue under different batch keys on the real server: a
full batch of one shape leaves at once, whatever another shape's queue delay."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import numpy as np

from inferpack.config import ServerConfig
from tests.helpers import ServerThread, edit_model

DELAY_S = 5.0
MAX_BATCH = 4


async def _infer(session: aiohttp.ClientSession, url: str, length: int) -> None:
    """One request of one row of ``length`` values; the sleep model returns it as sent."""
    row = list(range(length))
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, length], "data": row}
    async with session.post(f"{url}/v2/models/padded/infer", json={"inputs": [tensor]}) as r:
        assert r.status == 200, await r.text()
        output = (await r.json())["outputs"][0]
    np.testing.assert_array_equal(output["data"], row)


async def test_a_full_batch_of_one_length_is_not_held_by_a_lone_request_of_another(
    tmp_path: Path,
) -> None:
    """A text model's padded lengths are batch keys. One request of length 3 waits out its
    queue delay; a full batch of length 5 queued behind it runs on the idle second
    instance and is answered long before (today it waited for the length-3 request)."""
    from inferpack.repository.init import init_repository

    init_repository(tmp_path, ["sleep"])
    edit_model(
        tmp_path,
        "sleep",
        "padded",
        max_batch_size=MAX_BATCH,
        workload_options={"sleep_ms": 1},
        dynamic_batching={"max_queue_delay_us": int(DELAY_S * 1e6)},
        instances={"count": 2, "device": "cpu"},
    )
    server = ServerThread(ServerConfig(str(tmp_path), http_port=0, grpc_port=0)).start()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
            lone = asyncio.create_task(_infer(session, server.url, 3))
            await asyncio.sleep(0.2)  # queued first: the oldest request, not due for 5 s
            loop = asyncio.get_running_loop()
            started = loop.time()
            await asyncio.gather(*(_infer(session, server.url, 5) for _ in range(MAX_BATCH)))
            full_s = loop.time() - started
            assert not lone.done(), "the full batch waited for the lone request's delay"
            await lone
    finally:
        server.stop()
    assert full_s < DELAY_S / 2, full_s
