"""``inferpack serve`` with torch.export programs whose shapes model.yaml must respect, and
models that fail while running: every 500 is in the server's log with its cause.

A program exported with a static batch dimension of 1 under ``max_batch_size: 32`` used to
be served and answered 500 whenever two requests met in a batch, with nothing logged. It is
refused at load with a reason naming the dimension; with ``max_batch_size: 1`` (what the
reason says to set) the same artifact is served."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import yaml
from torch import nn

from tests.integration.cli_server import CliServer, serve
from tests.integration.conftest import repository_index

REQUESTS = 4  # sent at once: with a long queue delay they meet in one batch


class _NegativeFails(nn.Module):
    """Raises on a negative first value: a model failing while it runs (a 500)."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool(x[0, 0] < 0):
            raise RuntimeError("negative input reached the model")
        return self.linear(x)


def _write(root: Path, name: str, platform: str, max_batch_size: int) -> Path:
    config: dict[str, Any] = {
        "name": name,
        "platform": platform,
        "max_batch_size": max_batch_size,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [16]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [4]}],
        "instances": {"count": 1, "device": "cpu"},
    }
    if max_batch_size > 1:
        config["dynamic_batching"] = {"max_queue_delay_us": 300_000}
    (root / name / "1").mkdir(parents=True)
    (root / name / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root / name / "1"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export-shapes")
    program = torch.export.export(nn.Linear(16, 4).eval(), (torch.zeros(1, 16),))  # static 1
    for name, max_batch_size in (("static-batch", 32), ("static-batch-1", 1)):
        torch.export.save(
            program, str(_write(root, name, "torch_export", max_batch_size) / "model.pt2")
        )
    scripted = torch.jit.script(_NegativeFails().eval())
    scripted.save(str(_write(root, "fails", "torchscript", 8) / "model.pt"))
    return root


@pytest.fixture(scope="module")
def server(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    log = tmp_path_factory.mktemp("logs") / "serve.log"
    with serve(log, "--model-repository", str(repo), "--http-port", "0", "--grpc-port", "0") as s:
        yield s


async def _infer(session: aiohttp.ClientSession, url: str, first: float) -> int:
    row = [first, *[0.5] * 15]
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": row}]}
    async with session.post(url, json=body) as response:
        await response.read()
        return response.status


async def _burst(url: str, first: float) -> list[int]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        return await asyncio.gather(*(_infer(session, url, first) for _ in range(REQUESTS)))


async def _index(url: str) -> dict[str, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        return await repository_index(session, url)


def test_a_static_batch_dimension_is_refused_at_load_naming_it(server: CliServer) -> None:
    index = asyncio.run(_index(server.url))
    refused = index["static-batch"]
    assert refused["state"] == "UNAVAILABLE"
    reason = "dim 0 (the batch dimension) is static at 1 in the exported program"
    assert reason in refused["reason"]
    assert "max_batch_size 32" in refused["reason"]
    assert "set max_batch_size: 1" in refused["reason"]
    assert reason in " ".join(server.output().split())  # rich may wrap the logged line
    statuses = asyncio.run(_burst(f"{server.url}/v2/models/static-batch/infer", 1.0))
    assert statuses == [503] * REQUESTS


def test_the_same_program_at_max_batch_size_1_is_served(server: CliServer) -> None:
    assert asyncio.run(_index(server.url))["static-batch-1"]["state"] == "READY"
    statuses = asyncio.run(_burst(f"{server.url}/v2/models/static-batch-1/infer", 1.0))
    assert statuses == [200] * REQUESTS


def test_every_500_is_logged_once_per_batch_with_the_model_and_its_cause(
    server: CliServer,
) -> None:
    statuses = asyncio.run(_burst(f"{server.url}/v2/models/fails/infer", -1.0))
    assert statuses == [500] * REQUESTS
    assert server.grpc_address is not None
    with grpcclient.InferenceServerClient(server.grpc_address) as client:
        item = grpcclient.InferInput("input", [1, 16], "FP32")
        item.set_data_from_numpy(np.full((1, 16), -1.0, np.float32))
        with pytest.raises(grpcclient.InferenceServerException, match="negative input") as error:
            client.infer("fails", [item])
        assert error.value.status() == "StatusCode.INTERNAL"
    output = server.output()
    failed = [
        int(n) for n in re.findall(r"model fails: a batch of (\d+) request\(s\) failed", output)
    ]
    assert sum(failed) == REQUESTS + 1  # every failed request's batch is in the log ...
    assert len(failed) < REQUESTS + 1  # ... once per batch, not once per request
    assert "negative input reached the model" in output
