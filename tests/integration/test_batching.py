"""Concurrent requests meet in server-side batches and each gets its own rows back."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiohttp
import numpy as np

from tests.helpers import ServerThread, reference_outputs
from tests.integration.conftest import fetch_metrics, metric_value

CONCURRENCY = 64


async def _infer(session: aiohttp.ClientSession, url: str, row: np.ndarray) -> np.ndarray:
    body = {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": row.tolist()}]
    }
    async with session.post(f"{url}/v2/models/tiny-mlp-b16/infer", json=body) as response:
        assert response.status == 200, await response.text()
        payload = await response.json()
    return np.asarray(payload["outputs"][0]["data"], dtype=np.float32)


async def test_concurrent_requests_form_batches_without_mixing_rows(
    server: ServerThread, model_repo: Path
) -> None:
    rows = np.random.default_rng(1).standard_normal((CONCURRENCY, 16)).astype(np.float32)
    expected = reference_outputs(model_repo, "tiny-mlp-b16", rows)[0]
    async with aiohttp.ClientSession() as session:
        before = await fetch_metrics(session, server.url)
        results = await asyncio.gather(*(_infer(session, server.url, row) for row in rows))
        after = await fetch_metrics(session, server.url)

    for index, result in enumerate(results):
        np.testing.assert_allclose(result, expected[index], rtol=1e-5, atol=1e-6)

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    batches = delta("inferpack_batch_size_count")  # server-wide: only this model runs
    inferred = delta("inferpack_batch_size_sum")
    single = delta("inferpack_batch_size_bucket", le="1.0")
    assert inferred == CONCURRENCY
    assert batches < CONCURRENCY, "no two requests shared a batch"
    assert single < batches, "every batch had one row"
    assert delta("inferpack_batch_size_bucket", le="16.0") == batches
    assert delta("inferpack_execution_count_total", model="tiny-mlp-b16") == batches
