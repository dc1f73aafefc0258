"""TorchServe-style predictions, raw binary requests, versions, metadata and metrics."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import numpy as np

from tests.helpers import ServerThread, reference_outputs
from tests.integration.conftest import fetch_metrics, metric_value


async def test_predictions_takes_bare_and_named_inputs(
    server: ServerThread, model_repo: Path
) -> None:
    rows = np.random.default_rng(5).standard_normal((2, 16)).astype(np.float32)
    expected = reference_outputs(model_repo, "tiny-mlp", rows)[0]
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{server.url}/predictions/tiny-mlp", json=rows[0].tolist()) as r:
            assert r.status == 200
            single = await r.json()
        body = {"inputs": {"input": rows.tolist()}}
        async with session.post(f"{server.url}/predictions/tiny-mlp/1", json=body) as r:
            assert r.status == 200
            batch = await r.json()
    np.testing.assert_allclose(single, expected[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(batch, expected, rtol=1e-5, atol=1e-6)


async def test_raw_binary_request(server: ServerThread, model_repo: Path) -> None:
    row = np.arange(16, dtype=np.float32)[None, :] / 10
    expected = reference_outputs(model_repo, "tiny-mlp", row)[0]
    headers = {"Inference-Header-Content-Length": "0", "Content-Type": "application/octet-stream"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{server.url}/v2/models/tiny-mlp/infer", data=row.tobytes(), headers=headers
        ) as response,
    ):
        assert response.status == 200, await response.text()
        length = int(response.headers["Inference-Header-Content-Length"])
        body = await response.read()
    header = json.loads(body[:length])
    assert header["outputs"][0]["parameters"]["binary_data_size"] == 16
    got = np.frombuffer(body[length:], dtype=np.float32).reshape(1, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


async def test_request_id_and_output_selection(server: ServerThread) -> None:
    body = {
        "id": "req-42",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [4, 4], "data": list(range(16))}],
        "outputs": [{"name": "y"}],
    }
    url = f"{server.url}/v2/models/poison/infer"
    async with aiohttp.ClientSession() as session, session.post(url, json=body) as response:
        payload = await response.json()
    assert payload["id"] == "req-42"
    assert payload["outputs"][0]["data"] == [2.0 * v for v in range(16)]


async def test_metrics_count_requests_failures_and_latency(server: ServerThread) -> None:
    good = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [1.0] * 16}]}
    async with aiohttp.ClientSession() as session:
        before = await fetch_metrics(session, server.url)
        for _ in range(3):
            async with session.post(f"{server.url}/v2/models/tiny-mlp/infer", json=good) as r:
                assert r.status == 200
        async with session.post(f"{server.url}/v2/models/tiny-mlp/infer", data=b"{") as r:
            assert r.status == 400
        after = await fetch_metrics(session, server.url)

    def delta(name: str, **labels: str) -> float:
        return metric_value(after, name, **labels) - metric_value(before, name, **labels)

    assert delta("inferpack_requests_total", model="tiny-mlp") == 3
    assert delta("inferpack_request_failures_total", model="tiny-mlp", reason="invalid_input") == 1
    assert delta("inferpack_request_duration_seconds_count", model="tiny-mlp") == 3
    assert delta("inferpack_queue_duration_seconds_count", model="tiny-mlp") == 3
    assert delta("inferpack_compute_duration_seconds_count", model="tiny-mlp") >= 1
    assert 'inferpack_inflight_requests{model="tiny-mlp"} 0.0' in after
