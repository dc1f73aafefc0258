"""/metrics on a real server: unloaded models leave no series, a big scrape stalls nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import aiohttp
import pytest

from inferpack.config import ServerConfig
from inferpack.config.control import ControlConfig, ControlMode
from inferpack.runtime.metrics import ServingMetrics
from tests.helpers import ServerThread, edit_model
from tests.integration.conftest import fetch_metrics

TINY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [1.0] * 16}]}
# Synthetic models for the scrape test: enough series that rendering takes about a second.
SYNTHETIC_MODELS = 5_000


@pytest.fixture(scope="module")
def explicit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    from inferpack.repository.init import init_repository

    root = tmp_path_factory.mktemp("metrics-repo")
    init_repository(root, ["tiny-mlp"], seed=0)
    edit_model(root, "tiny-mlp", "idle")
    control = ControlConfig(ControlMode.EXPLICIT, startup_models=("tiny-mlp", "idle"))
    thread = ServerThread(ServerConfig(str(root), http_port=0, grpc_port=None, control=control))
    yield thread.start()
    thread.stop()


def _model_lines(text: str, model: str) -> list[str]:
    return [line for line in text.splitlines() if f'model="{model}"' in line]


async def test_an_unloaded_model_leaves_no_series(explicit: ServerThread) -> None:
    url = explicit.url
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.post(f"{url}/v2/models/tiny-mlp/infer", json=TINY) as response:
                assert response.status == 200
        before = await fetch_metrics(session, url)
        async with session.post(f"{url}/v2/repository/models/tiny-mlp/unload") as response:
            assert response.status == 200
        after = await fetch_metrics(session, url)
        async with session.post(f"{url}/v2/repository/models/tiny-mlp/load") as response:
            assert response.status == 200  # leave the module's server as it was
    assert len(_model_lines(before, "tiny-mlp")) > 10
    assert _model_lines(after, "tiny-mlp") == []
    # A resident model that served nothing costs one series.
    assert _model_lines(after, "idle") == ['inferpack_model_loads_total{model="idle"} 1.0']


def _fill(metrics: ServingMetrics, models: int) -> None:
    for index in range(models):
        name = f"synthetic-{index:05d}"
        metrics.loads.labels(name).inc()
        metrics.record_load(0.1)
        metrics.requests.labels(name).inc()
        metrics.record_request(name, 0.01)
        metrics.queue_s.labels(name).observe(0.001)
        metrics.record_batch(name, 1, 0.005)


async def test_a_large_scrape_does_not_stall_the_event_loop(explicit: ServerThread) -> None:
    assert explicit.server is not None
    metrics = explicit.server.engine.metrics
    _fill(metrics, SYNTHETIC_MODELS)
    url = explicit.url
    latencies_s: list[float] = []
    try:
        async with aiohttp.ClientSession() as session:
            started = time.perf_counter()
            scrape = asyncio.create_task(fetch_metrics(session, url))
            await asyncio.sleep(0.01)  # the scrape reaches the server first
            while not scrape.done():
                sent = time.perf_counter()
                async with session.get(f"{url}/v2/health/live") as response:
                    assert response.status == 200
                latencies_s.append(time.perf_counter() - sent)
            text = await scrape
            scrape_s = time.perf_counter() - started
    finally:
        for index in range(SYNTHETIC_MODELS):
            metrics.forget(f"synthetic-{index:05d}")
    assert "synthetic-04999" in text
    # Rendered on the loop, the first probe waited for the whole render (~ the scrape); on
    # a thread the loop answers between GIL switches (every 5 ms) while the render goes on.
    # The median, not the max: one probe can meet a GC pause or a busy CI core; on the loop
    # every probe would wait for the render (and there would hardly be 3 of them).
    assert len(latencies_s) >= 3, (scrape_s, latencies_s)
    median_s = sorted(latencies_s)[len(latencies_s) // 2]
    assert median_s < scrape_s / 4, (scrape_s, median_s, latencies_s)
