"""Model control: explicit load/unload over REST and gRPC, LRU loading under a budget."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from inferpack.config import ServerConfig
from inferpack.config.control import ControlConfig, ControlMode
from inferpack.workloads import get_workload
from inferpack.workloads.weights import build_seeded, save_weights
from tests.helpers import ServerThread, edit_model, reference_outputs
from tests.integration.conftest import fetch_metrics, metric_value

TINY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]}
BUDGET_BYTES = 7000
SLEEP = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}


def _repo(root: Path) -> Path:
    from inferpack.repository.init import init_repository

    init_repository(root, ["tiny-mlp", "sleep"], seed=0)
    for index in range(3):
        folder = edit_model(root, "tiny-mlp", f"tiny-{index}", workload_options={"seed": index})
        # Weights of its own seed: byte-identical copies would be held once (weight sharing).
        weights = build_seeded(get_workload("tiny-mlp"), {"seed": index})
        save_weights(weights, folder / "1" / "model.safetensors")
    # Warm-up sleeps too, so loading this model takes >= 0.4 s: time for requests to pile up.
    edit_model(root, "sleep", "slow-load", workload_options={"sleep_ms": 400})
    edit_model(root, "sleep", "slow", workload_options={"sleep_ms": 300}, max_batch_size=1)
    broken = edit_model(root, "tiny-mlp", "broken")
    (broken / "1" / "model.safetensors").write_bytes(b"not safetensors at all")
    return root


def _start(root: Path, control: ControlConfig) -> ServerThread:
    return ServerThread(
        ServerConfig(str(_repo(root)), http_port=0, grpc_port=0, control=control)
    ).start()


@pytest.fixture(scope="module")
def explicit(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    thread = _start(tmp_path_factory.mktemp("explicit"), ControlConfig(ControlMode.EXPLICIT))
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def lru(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    # A tiny model measures 2,704 bytes (676 fp32 weights): the budget holds two of them.
    control = ControlConfig(ControlMode.LRU, memory_budget_bytes=BUDGET_BYTES, max_load_waiters=4)
    thread = _start(tmp_path_factory.mktemp("lru"), control)
    yield thread
    thread.stop()


async def _post(
    session: aiohttp.ClientSession, url: str, body: object = None
) -> tuple[int, object]:
    async with session.post(url, json=body) as response:
        return response.status, await response.json()


async def _index(session: aiohttp.ClientSession, url: str) -> dict[str, dict[str, Any]]:
    status, rows = await _post(session, f"{url}/v2/repository/index", {})
    assert status == 200 and isinstance(rows, list)
    return {row["name"]: row for row in rows}


async def test_explicit_load_infer_unload_over_rest(explicit: ServerThread) -> None:
    url = explicit.url
    async with aiohttp.ClientSession() as session:
        index = await _index(session, url)
        assert index["tiny-0"] == {"name": "tiny-0", "state": "UNAVAILABLE", "reason": "unloaded"}
        status, body = await _post(session, f"{url}/v2/models/tiny-0/infer", TINY)
        assert status == 503 and "unloaded" in body["error"]  # type: ignore[index]

        assert (await _post(session, f"{url}/v2/repository/models/tiny-0/load"))[0] == 200
        row = (await _index(session, url))["tiny-0"]
        assert row["state"] == "READY" and row["version"] == "1" and row["memory_bytes"] > 0
        assert (await _post(session, f"{url}/v2/models/tiny-0/infer", TINY))[0] == 200

        assert (await _post(session, f"{url}/v2/repository/models/tiny-0/unload"))[0] == 200
        assert (await _index(session, url))["tiny-0"]["state"] == "UNAVAILABLE"
        assert (await _post(session, f"{url}/v2/models/tiny-0/infer", TINY))[0] == 503
        status, body = await _post(session, f"{url}/v2/repository/models/nope/load")
        assert status == 404 and "nope" in body["error"]  # type: ignore[index]


def test_explicit_load_unload_over_grpc(explicit: ServerThread) -> None:
    client = grpcclient.InferenceServerClient(explicit.grpc_address)
    client.load_model("tiny-1")
    assert client.is_model_ready("tiny-1")
    data = np.full((1, 16), 0.5, np.float32)
    item = grpcclient.InferInput("input", [1, 16], "FP32")
    item.set_data_from_numpy(data)
    assert client.infer("tiny-1", [item]).as_numpy("output").shape == (1, 4)
    client.unload_model("tiny-1")
    assert not client.is_model_ready("tiny-1")
    with pytest.raises(InferenceServerException) as raised:
        client.infer("tiny-1", [item])
    assert raised.value.status() == "StatusCode.UNAVAILABLE"


async def test_failed_load_is_503_with_reason_in_index(explicit: ServerThread) -> None:
    async with aiohttp.ClientSession() as session:
        status, body = await _post(session, f"{explicit.url}/v2/repository/models/broken/load")
        assert status == 503
        assert "failed to load model 'broken'" in body["error"]  # type: ignore[index]
        row = (await _index(session, explicit.url))["broken"]
    assert row["state"] == "UNAVAILABLE" and row["reason"]
    client = grpcclient.InferenceServerClient(explicit.grpc_address)
    with pytest.raises(InferenceServerException) as raised:
        client.load_model("broken")
    assert raised.value.status() == "StatusCode.UNAVAILABLE"


REQUESTS = "inferpack_requests_total"


async def test_unload_waits_for_in_flight_requests(explicit: ServerThread) -> None:
    url = explicit.url
    async with aiohttp.ClientSession() as session:
        assert (await _post(session, f"{url}/v2/repository/models/slow/load"))[0] == 200
        received = metric_value(await fetch_metrics(session, url), REQUESTS, model="slow")
        in_flight = [
            asyncio.create_task(_post(session, f"{url}/v2/models/slow/infer", SLEEP))
            for _ in range(3)
        ]
        async with asyncio.timeout(30):  # all three received (queued or running)
            while metric_value(await fetch_metrics(session, url), REQUESTS, model="slow") < (
                received + 3
            ):
                await asyncio.sleep(0.005)
        unload = await _post(session, f"{url}/v2/repository/models/slow/unload")
        results = await asyncio.gather(*in_flight)
        after = await _post(session, f"{url}/v2/models/slow/infer", SLEEP)
    assert unload[0] == 200
    assert [status for status, _ in results] == [200, 200, 200]
    assert after[0] == 503


async def test_lru_concurrent_first_requests_cause_one_load(lru: ServerThread) -> None:
    url = lru.url
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(_post(session, f"{url}/v2/models/slow-load/infer", SLEEP) for _ in range(4))
        )
        metrics = await fetch_metrics(session, url)
    assert [status for status, _ in results] == [200] * 4
    assert metric_value(metrics, "inferpack_model_loads_total", model="slow-load") == 1


async def test_lru_bounds_requests_waiting_for_a_load(lru: ServerThread) -> None:
    url = lru.url
    async with aiohttp.ClientSession() as session:
        await _post(session, f"{url}/v2/repository/models/slow-load/unload")
        results = await asyncio.gather(
            *(_post(session, f"{url}/v2/models/slow-load/infer", SLEEP) for _ in range(8))
        )
    statuses = sorted(status for status, _ in results)
    assert statuses.count(429) >= 3 and 200 in statuses, statuses


async def test_lru_evicts_least_recently_used_idle_model(lru: ServerThread) -> None:
    url = lru.url
    async with aiohttp.ClientSession() as session:
        await _post(session, f"{url}/v2/repository/models/slow-load/unload")
        for name in ("tiny-0", "tiny-1", "tiny-0", "tiny-2"):
            status, _ = await _post(session, f"{url}/v2/models/{name}/infer", TINY)
            assert status == 200
        index = await _index(session, url)
        metrics = await fetch_metrics(session, url)
    assert index["tiny-0"]["state"] == "READY"
    assert index["tiny-2"]["state"] == "READY"
    assert index["tiny-1"]["state"] == "UNAVAILABLE"
    assert "evicted" in index["tiny-1"]["reason"]
    assert metric_value(metrics, "inferpack_model_evictions_total") == 1
    assert 'model="tiny-1"' not in metrics  # an evicted model's series are gone
    loaded = sum(row.get("memory_bytes", 0) for row in index.values())
    assert index["tiny-0"]["memory_bytes"] == 2704
    assert loaded <= BUDGET_BYTES


async def test_lru_metadata_and_config_come_from_the_repository_without_loading(
    lru: ServerThread,
) -> None:
    url = lru.url
    async with aiohttp.ClientSession() as session:
        await _post(session, f"{url}/v2/repository/models/tiny-1/unload")
        async with session.get(f"{url}/v2/models/tiny-1") as response:
            assert response.status == 200, await response.text()
            metadata = await response.json()
        async with session.get(f"{url}/v2/models/tiny-1/versions/1/config") as response:
            assert response.status == 200, await response.text()
            config = await response.json()
        async with session.get(f"{url}/v2/models/tiny-1/versions/7") as response:
            missing = response.status
        index = await _index(session, url)
    assert metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}]
    assert config["max_batch_size"] == 64 and config["input"][0]["dims"] == [16]
    assert missing == 404
    assert index["tiny-1"]["state"] == "UNAVAILABLE"  # reading metadata loads nothing
    client = grpcclient.InferenceServerClient(lru.grpc_address)
    grpc_metadata = client.get_model_metadata("tiny-1", as_json=True)
    assert grpc_metadata["versions"] == ["1"]
    assert grpc_metadata["outputs"] == [
        {"name": "output", "datatype": "FP32", "shape": ["-1", "4"]}
    ]


async def test_lru_predictions_and_raw_binary_load_their_model(lru: ServerThread) -> None:
    url, repo = lru.url, Path(lru.config.model_repository)
    row = np.linspace(-1, 1, 16, dtype=np.float32)[None, :]
    expected = reference_outputs(repo, "tiny-2", row)[0]
    raw = {"Inference-Header-Content-Length": "0", "Content-Type": "application/octet-stream"}
    async with aiohttp.ClientSession() as session:
        await _post(session, f"{url}/v2/repository/models/tiny-2/unload")
        async with session.post(f"{url}/predictions/tiny-2", json=row[0].tolist()) as response:
            assert response.status == 200, await response.text()
            predicted = await response.json()
        await _post(session, f"{url}/v2/repository/models/tiny-2/unload")
        infer_url = f"{url}/v2/models/tiny-2/infer"
        async with session.post(infer_url, data=row.tobytes(), headers=raw) as response:
            assert response.status == 200, await response.text()
            length = int(response.headers["Inference-Header-Content-Length"])
            body = await response.read()
    assert json.loads(body[:length])["outputs"][0]["shape"] == [1, 4]
    np.testing.assert_allclose(predicted, expected[0], rtol=1e-5, atol=1e-6)
    got = np.frombuffer(body[length:], dtype=np.float32).reshape(1, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


async def test_lru_request_for_a_broken_model_is_503_with_the_load_reason(
    lru: ServerThread,
) -> None:
    async with aiohttp.ClientSession() as session:
        status, body = await _post(session, f"{lru.url}/v2/models/broken/infer", TINY)
    assert status == 503
    message = body["error"]  # type: ignore[index]
    assert message.startswith("model 'broken' failed to load: ")
    assert "model.safetensors: safetensors header" in message  # the load's own reason
