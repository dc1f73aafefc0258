"""A REST client that disconnects takes its queued work with it, on a server and through
the router: its handler is cancelled, its request leaves the batcher's queue before it
runs, and its bytes in flight, in-flight gauge and the router's count are given back.

The model sleeps a second per batch on one instance, one request a batch: request A runs,
request B waits behind it; B's client goes away; then C is sent and answered. Had B stayed
queued it would have run between A and C: the batches executed say whether it did.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yarl

from inferpack.config import ServerConfig
from inferpack.config.control import ControlConfig, ControlMode
from inferpack.protocol.rest import INFLIGHT_BYTES
from inferpack.repository.init import init_repository
from inferpack.router import Backend, RouterConfig, RoutingTable, start_router
from inferpack.server import RunningServer, start_server
from tests.helpers import edit_model
from tests.integration.conftest import fetch_metrics, metric_value

MODEL = "slow"
SLEEP_MS = 1000
BODY = json.dumps(
    {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
).encode()
WAIT_S = 30


async def _start(repo: Path, control: ControlConfig | None = None) -> RunningServer:
    """A server of one model: a second a batch, one instance, one request a batch."""
    init_repository(repo, ["sleep"], seed=0)
    edit_model(
        repo,
        "sleep",
        MODEL,
        workload_options={"sleep_ms": SLEEP_MS},
        max_batch_size=1,
        instances={"count": 1, "device": "cpu"},
    )
    config = ServerConfig(
        str(repo), http_port=0, grpc_port=None, control=control or ControlConfig()
    )
    running = await start_server(config)
    assert await running.wait_started()
    return running


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    running = await _start(tmp_path)
    yield running
    await running.stop()


async def _metric(session: aiohttp.ClientSession, server: RunningServer, name: str) -> float:
    return metric_value(await fetch_metrics(session, server.url), name, model=MODEL)


async def _until_inflight(
    session: aiohttp.ClientSession, server: RunningServer, count: int
) -> None:
    """Wait until the server counts ``count`` requests of the model in flight."""
    deadline = time.monotonic() + WAIT_S
    while await _metric(session, server, "inferpack_inflight_requests") != count:
        assert time.monotonic() < deadline, f"never {count} requests in flight"
        await asyncio.sleep(0.01)


async def _infer(session: aiohttp.ClientSession, url: str) -> int:
    async with session.post(f"{url}/v2/models/{MODEL}/infer", data=BODY) as answer:
        await answer.read()
        return answer.status


async def _abandoned_request(
    url: str, path: str = f"/v2/models/{MODEL}/infer", body: bytes = BODY
) -> asyncio.StreamWriter:
    """Send a request over a raw connection; the caller closes it unanswered."""
    address = yarl.URL(url)
    _, writer = await asyncio.open_connection(address.host, address.port)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {address.host}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    writer.write(head.encode() + body)
    await writer.drain()
    return writer


async def _disconnect_while_queued(server: RunningServer, client_url: str) -> None:
    """A runs, B queues and disconnects, C is answered; B must never have run."""
    async with aiohttp.ClientSession() as session:
        first = asyncio.create_task(_infer(session, client_url))
        await _until_inflight(session, server, 1)
        abandoned = await _abandoned_request(client_url)
        await _until_inflight(session, server, 2)
        abandoned.close()
        await abandoned.wait_closed()
        await _until_inflight(session, server, 1)  # B left at once, while A still runs
        assert not first.done()
        assert await first == 200
        assert await _infer(session, client_url) == 200
        assert await _metric(session, server, "inferpack_execution_count_total") == 2
        text = await fetch_metrics(session, server.url)
        failures = "inferpack_request_failures_total"
        assert metric_value(text, failures, model=MODEL, reason="cancelled") == 1
        assert metric_value(text, "inferpack_inflight_requests", model=MODEL) == 0
    assert server.runner.app[INFLIGHT_BYTES].in_flight_bytes == 0


async def test_queued_work_of_a_disconnected_client_is_dropped(server: RunningServer) -> None:
    await _disconnect_while_queued(server, server.url)


async def test_through_the_router_the_backend_drops_it_too(server: RunningServer) -> None:
    backend = Backend("s0", server.url, "127.0.0.1:1")  # gRPC unused here
    table = RoutingTable({MODEL: [backend]})
    router = await start_router(RouterConfig(table, http_port=0, grpc_port=None))
    try:
        await _disconnect_while_queued(server, router.url)
        assert router.picker.outstanding == {backend: 0}
    finally:
        await router.stop()


async def test_an_unload_whose_client_disconnects_still_drains_the_model(tmp_path: Path) -> None:
    """Its handler is cancelled, not the unload: the request running is answered."""
    server = await _start(tmp_path, ControlConfig(ControlMode.EXPLICIT, startup_models=(MODEL,)))
    try:
        async with aiohttp.ClientSession() as session:
            running = asyncio.create_task(_infer(session, server.url))
            await _until_inflight(session, server, 1)
            unload = await _abandoned_request(
                server.url, f"/v2/repository/models/{MODEL}/unload", b"{}"
            )
            while server.engine.model_ready(MODEL):
                await asyncio.sleep(0.01)
            unload.close()
            await unload.wait_closed()
            assert await running == 200
    finally:
        await server.stop()
