"""Tenants on one server cannot write into each other's models.

Every tenant's torch.export program has the same backbone (shared by the weight store) and
a zero-initialised 1 KiB buffer: equal bytes in every model. Writers copy each batch's first
row into theirs; readers add theirs to their answer. Under LRU churn and concurrent
clients, every reader answers exactly as its own module does (no writer's row ever shows),
and what the store holds still hashes to its keys (``TensorStore.verify``)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import aiohttp
import numpy as np
import pytest
import torch

from inferpack.backends.tensor_store import default_store
from inferpack.config import ServerConfig
from inferpack.config.control import ControlConfig, ControlMode
from tests.backbones import Tenant, write_tenants
from tests.helpers import ServerThread, StressQuota
from tests.integration.conftest import repository_index

READERS, WRITERS = 3, 3
CLIENTS = 8
STRESS_S = 4.0
MIN_REQUESTS = 10 * CLIENTS


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Tenant]]:
    root = tmp_path_factory.mktemp("tenants")
    return root, write_tenants(root, READERS, WRITERS)


def _server(root: Path, control: ControlConfig) -> ServerThread:
    config = ServerConfig(str(root), http_port=0, grpc_port=0, control=control)
    return ServerThread(config).start()


async def _infer(
    session: aiohttp.ClientSession, url: str, name: str, rows: np.ndarray
) -> np.ndarray:
    tensor = {"name": "input", "datatype": "FP32", "shape": list(rows.shape)}
    body = {"inputs": [{**tensor, "data": rows.ravel().tolist()}]}
    async with session.post(f"{url}/v2/models/{name}/infer", json=body) as response:
        assert response.status == 200, await response.text()
        output = (await response.json())["outputs"][0]
    return np.asarray(output["data"], np.float32).reshape(output["shape"])


def _expected(module: Tenant, rows: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = module(torch.from_numpy(rows)).numpy()
    return out


async def _client(url: str, tenants: dict[str, Tenant], seed: int, quota: StressQuota) -> None:
    """Requests while the quota goes on, each answer checked against the tenant's module."""
    rng = random.Random(seed)
    values = np.random.default_rng(seed)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        while quota.going():
            name = rng.choice(sorted(tenants))
            rows = values.standard_normal((rng.randint(1, 3), 16)).astype(np.float32)
            got = await _infer(session, url, name, rows)
            expected = _expected(tenants[name], rows)
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=name)
            quota.answered += 1


async def test_tenants_writing_their_buffers_never_change_another_tenants_answers(
    tenants: tuple[Path, dict[str, Tenant]],
) -> None:
    root, modules = tenants
    probe = _server(root, ControlConfig(ControlMode.EXPLICIT, startup_models=("reader-0",)))
    try:
        async with aiohttp.ClientSession() as session:
            one = int(str((await repository_index(session, probe.url))["reader-0"]["memory_bytes"]))
    finally:
        probe.stop()
    # Two or three tenants resident at once: loads evict, and reload with a proof.
    control = ControlConfig(ControlMode.LRU, memory_budget_bytes=int(1.5 * one))
    server = _server(root, control)
    try:
        quota = StressQuota.starting_now(STRESS_S, MIN_REQUESTS)
        async with asyncio.timeout(STRESS_S + 60):
            await asyncio.gather(
                *(_client(server.url, modules, seed, quota) for seed in range(CLIENTS))
            )
        async with aiohttp.ClientSession() as session:
            index = await repository_index(session, server.url)
            for name in sorted(modules, reverse=True):  # writers write just before the check
                await _infer(session, server.url, name, np.ones((1, 16), np.float32))
        problems = default_store().verify()
    finally:
        server.stop()
    assert sum(row["state"] == "READY" for row in index.values()) < len(modules)
    assert problems == []
