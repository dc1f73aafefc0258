"""LRU under churn on a real server: many models, a budget of about three, a dozen clients
on every route; and shutdown while loads and requests are in flight."""

from __future__ import annotations

import asyncio
import json
import random
import re
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import tritonclient.grpc.aio as grpcclient
import yaml

from inferpack.backends.tensor_store import default_store
from inferpack.config import ServerConfig
from inferpack.config.control import ControlConfig, ControlMode
from tests.helpers import ServerThread, StressQuota, edit_model, reference_outputs

MODELS = [f"tiny-{index:02d}" for index in range(24)]
CLIENTS = 12
MIN_REQUESTS = 10 * CLIENTS
STRESS_S = 10.0
HEADER_LENGTH = "Inference-Header-Content-Length"
Rows = np.ndarray
Route = Callable[["Clients", str, Rows], Awaitable[Rows]]


def _write_tiny_models(root: Path) -> Path:
    """Copies of tiny-mlp, each with its own seeded weights (a mixed-up model shows)."""
    from inferpack.config.model_config import model_config_to_dict
    from inferpack.workloads import get_workload
    from inferpack.workloads.weights import build_seeded, save_weights

    spec = get_workload("tiny-mlp")
    for seed, name in enumerate(MODELS):
        config = spec.default_config(name=name, seed=seed)
        (root / name / "1").mkdir(parents=True)
        (root / name / "model.yaml").write_text(yaml.safe_dump(model_config_to_dict(config)))
        module = build_seeded(spec, config.workload_options)
        save_weights(module, root / name / "1" / config.artifact)
    return root


def _server(root: Path, control: ControlConfig) -> ServerThread:
    return ServerThread(ServerConfig(str(root), http_port=0, grpc_port=0, control=control)).start()


async def _index(session: aiohttp.ClientSession, url: str) -> list[dict[str, object]]:
    async with session.post(f"{url}/v2/repository/index", json={}) as response:
        assert response.status == 200
        rows: list[dict[str, object]] = await response.json()
        return rows


def _evictions(metrics: str) -> float:
    found = re.search(r"^inferpack_model_evictions_total(?:\{\})? (\S+)$", metrics, re.MULTILINE)
    return float(found.group(1)) if found else 0.0


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _write_tiny_models(tmp_path_factory.mktemp("lru-stress"))


@pytest.fixture(scope="module")
def model_bytes(repo: Path) -> int:
    """One model's memory as the server measures it (index of a server that loaded it)."""
    server = _server(repo, ControlConfig(ControlMode.EXPLICIT, startup_models=(MODELS[0],)))

    async def measure() -> int:
        async with aiohttp.ClientSession() as session:
            rows = await _index(session, server.url)
        return next(int(str(r["memory_bytes"])) for r in rows if r["name"] == MODELS[0])

    try:
        return asyncio.run(measure())
    finally:
        server.stop()


@dataclass
class Clients:
    """What a client needs: the server, one HTTP session and one gRPC channel."""

    url: str
    session: aiohttp.ClientSession
    grpc: grpcclient.InferenceServerClient
    statuses: list[int] = field(default_factory=list)

    async def post(self, path: str, data: bytes, headers: dict[str, str]) -> tuple[bytes, int]:
        async with self.session.post(f"{self.url}{path}", data=data, headers=headers) as r:
            body = await r.read()
            self.statuses.append(r.status)
            assert r.status == 200, (path, r.status, body[:300])
            return body, int(r.headers.get(HEADER_LENGTH, len(body)))


def _binary_output(body: bytes, header_length: int) -> Rows:
    header = json.loads(body[:header_length])
    (output,) = header["outputs"]
    data = np.frombuffer(body[header_length:], dtype=np.float32)
    return data.reshape(output["shape"])


async def _v2_json(clients: Clients, name: str, rows: Rows) -> Rows:
    tensor = {"name": "input", "datatype": "FP32", "shape": list(rows.shape)}
    body = json.dumps({"inputs": [{**tensor, "data": rows.ravel().tolist()}]}).encode()
    reply, _ = await clients.post(f"/v2/models/{name}/infer", body, {})
    (output,) = json.loads(reply)["outputs"]
    return np.asarray(output["data"], np.float32).reshape(output["shape"])


async def _v2_binary(clients: Clients, name: str, rows: Rows) -> Rows:
    tensor = {"name": "input", "datatype": "FP32", "shape": list(rows.shape)}
    header = json.dumps(
        {
            "inputs": [{**tensor, "parameters": {"binary_data_size": rows.nbytes}}],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    headers = {HEADER_LENGTH: str(len(header)), "Content-Type": "application/octet-stream"}
    reply, length = await clients.post(f"/v2/models/{name}/infer", header + rows.tobytes(), headers)
    return _binary_output(reply, length)


async def _raw_binary(clients: Clients, name: str, rows: Rows) -> Rows:
    headers = {HEADER_LENGTH: "0", "Content-Type": "application/octet-stream"}
    reply, length = await clients.post(f"/v2/models/{name}/infer", rows[:1].tobytes(), headers)
    return _binary_output(reply, length)


async def _predictions(clients: Clients, name: str, rows: Rows) -> Rows:
    body = json.dumps({"inputs": {"input": rows.tolist()}}).encode()
    reply, _ = await clients.post(f"/predictions/{name}", body, {})
    return np.asarray(json.loads(reply), np.float32)


async def _grpc(clients: Clients, name: str, rows: Rows) -> Rows:
    item = grpcclient.InferInput("input", list(rows.shape), "FP32")
    item.set_data_from_numpy(rows)
    result = await clients.grpc.infer(name, [item], client_timeout=30)
    clients.statuses.append(200)
    output: Rows = result.as_numpy("output")
    return output


async def _metadata_then_json(clients: Clients, name: str, rows: Rows) -> Rows:
    """What `inferpack loadtest` does first: read metadata (never loads), then infer."""
    async with clients.session.get(f"{clients.url}/v2/models/{name}") as response:
        assert response.status == 200, await response.text()
        assert (await response.json())["inputs"][0]["shape"] == [-1, 16]
    return await _v2_json(clients, name, rows)


ROUTES: tuple[Route, ...] = (_v2_json, _v2_binary, _raw_binary, _predictions, _grpc)
ROUTES_WITH_METADATA = (*ROUTES, _metadata_then_json)


@pytest.fixture(scope="module")
def inputs(repo: Path) -> dict[str, list[tuple[Rows, Rows]]]:
    """Per model: (rows, expected outputs) pairs, computed in-process from stored weights."""
    rng = np.random.default_rng(7)
    cases: dict[str, list[tuple[Rows, Rows]]] = {}
    for name in MODELS:
        cases[name] = []
        for count in (1, 2, 1):
            rows = rng.standard_normal((count, 16)).astype(np.float32)
            cases[name].append((rows, reference_outputs(repo, name, rows)[0]))
    return cases


async def _client(
    clients: Clients,
    cases: dict[str, list[tuple[Rows, Rows]]],
    seed: int,
    quota: StressQuota,
) -> None:
    """Requests while the quota goes on (nearly every request loads a model)."""
    rng = random.Random(seed)
    while quota.going():
        name = rng.choice(MODELS)
        rows, expected = rng.choice(cases[name])
        route = rng.choice(ROUTES_WITH_METADATA)
        if route is _raw_binary:
            rows, expected = rows[:1], expected[:1]
        got = await route(clients, name, rows)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=f"{name}")
        quota.answered += 1


async def _watch_memory(session: aiohttp.ClientSession, url: str, samples: list[int]) -> None:
    """Bytes of READY models (index), sampled until cancelled."""
    while True:
        rows = await _index(session, url)
        samples.append(sum(int(str(row.get("memory_bytes", 0))) for row in rows))
        await asyncio.sleep(0.05)


async def test_lru_serves_every_route_under_churn_within_budget(
    repo: Path, model_bytes: int, inputs: dict[str, list[tuple[Rows, Rows]]]
) -> None:
    budget_bytes = 3 * model_bytes + model_bytes // 2  # three resident, with slack
    server = _server(repo, ControlConfig(ControlMode.LRU, memory_budget_bytes=budget_bytes))
    samples: list[int] = []
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            grpcclient.InferenceServerClient(server.grpc_address) as grpc,
        ):
            clients = Clients(server.url, session, grpc)
            watcher = asyncio.create_task(_watch_memory(session, server.url, samples))
            quota = StressQuota.starting_now(STRESS_S, MIN_REQUESTS)
            async with asyncio.timeout(STRESS_S + 60):
                await asyncio.gather(
                    *(_client(clients, inputs, seed, quota) for seed in range(CLIENTS))
                )
            watcher.cancel()
            async with session.get(f"{server.url}/metrics") as response:
                metrics = await response.text()
        written = default_store().verify()  # while the last models are still resident
    finally:
        server.stop()
    assert written == [], "a shared weight was written while serving"
    assert set(clients.statuses) == {200}
    assert _evictions(metrics) >= len(MODELS), metrics[-400:]
    assert samples and max(samples) <= budget_bytes + model_bytes, (max(samples), budget_bytes)


SLEEP = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 2], "data": [1, 2]}]}
SLOW_MODELS = [f"slow-{index}" for index in range(6)]


@pytest.fixture
def slow_repo(tmp_path: Path) -> Iterator[Path]:
    """Models whose warm-up sleeps 300 ms: loads stay in flight long enough to stop under."""
    from inferpack.repository.init import init_repository

    init_repository(tmp_path, ["sleep"])
    for name in SLOW_MODELS:
        edit_model(tmp_path, "sleep", name, workload_options={"sleep_ms": 300})
    yield tmp_path


async def _status(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.post(url, json=SLEEP) as response:
        return response.status, await response.text()


async def test_engine_stop_with_loads_and_requests_in_flight_answers_503_not_500(
    slow_repo: Path,
) -> None:
    """The engine stops while HTTP still takes requests: loads in flight end (bounded),
    requests behind them and after get 503, never 500, and nothing hangs."""
    server = _server(slow_repo, ControlConfig(ControlMode.LRU))
    loop = server._loop
    assert server.server is not None
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            urls = [f"{server.url}/v2/models/{name}/infer" for name in SLOW_MODELS]
            first = [asyncio.create_task(_status(session, url)) for url in urls * 3]
            await asyncio.sleep(0.15)  # the first loads are warming up, the others queued
            stopping = asyncio.run_coroutine_threadsafe(server.server.engine.stop(), loop)
            await asyncio.sleep(0.05)
            during = [asyncio.create_task(_status(session, url)) for url in urls]
            async with asyncio.timeout(30):
                results = await asyncio.gather(*first, *during)
                await asyncio.wrap_future(stopping)
            after = await _status(session, urls[0])
    finally:
        server.stop()
    statuses = [status for status, _ in results]
    assert set(statuses) <= {200, 503}, results
    assert 503 in statuses
    assert after[0] == 503 and "shutting down" in after[1]


async def test_server_stop_with_loads_and_requests_in_flight_does_not_hang(
    slow_repo: Path,
) -> None:
    server = _server(slow_repo, ControlConfig(ControlMode.LRU))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        urls = [f"{server.url}/v2/models/{name}/infer" for name in SLOW_MODELS]
        requests = [asyncio.create_task(_status(session, url)) for url in urls * 3]
        await asyncio.sleep(0.15)
        started = time.monotonic()
        async with asyncio.timeout(60):
            await asyncio.to_thread(server.stop)
            results = await asyncio.gather(*requests, return_exceptions=True)
    assert time.monotonic() - started < 30
    statuses = [r[0] for r in results if isinstance(r, tuple)]
    failures = [r for r in results if not isinstance(r, tuple)]
    assert set(statuses) <= {200, 503}, results
    assert all(isinstance(f, aiohttp.ClientError) for f in failures), failures
