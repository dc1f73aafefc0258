"""Batch buckets through the real server: padded batches return only real rows, requests
over the largest bucket are split and answered whole, and models only run bucket sizes."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
import yaml

from inferpack.config import ServerConfig
from tests.helpers import ServerThread, edit_model, reference_outputs

BUCKETS = [1, 2, 4, 8, 16, 32]
MODEL = "tiny-mlp-buckets"
ECHO = "echo-buckets"
# Some delay, so that concurrent requests meet in batches whose totals fall between buckets.
DELAY_US = 5_000


def _echo_model(repo: Path) -> None:
    """TorchScript: y = 2x, and ``seen``: the batch size the model ran, on every row."""
    import torch

    class Echo(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            seen = torch.full([x.shape[0], 1], float(x.shape[0]))
            return x * 2.0, seen

    folder = repo / ECHO
    (folder / "1").mkdir(parents=True)
    torch.jit.script(Echo()).save(str(folder / "1" / "model.pt"))
    config = {
        "name": ECHO,
        "platform": "torchscript",
        "max_batch_size": 64,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [2]}],
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [2]},
            {"name": "seen", "datatype": "FP32", "shape": [1]},
        ],
        "dynamic_batching": {"max_queue_delay_us": DELAY_US},
        "instances": {"count": 1, "device": "cpu"},
        "compile": {"batch_buckets": BUCKETS},
    }
    (folder / "model.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def bucket_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inferpack.repository.init import init_repository

    repo = tmp_path_factory.mktemp("buckets")
    init_repository(repo, ["tiny-mlp"], seed=0)
    edit_model(
        repo,
        "tiny-mlp",
        MODEL,
        max_batch_size=64,
        dynamic_batching={"max_queue_delay_us": DELAY_US},
        instances={"count": 1, "device": "cpu"},
        compile={"batch_buckets": BUCKETS},
    )
    _echo_model(repo)
    return repo


@pytest.fixture(scope="module")
def bucket_server(bucket_repo: Path) -> Iterator[ServerThread]:
    config = ServerConfig(str(bucket_repo), http_port=0, grpc_port=0)
    thread = ServerThread(config).start()
    yield thread
    thread.stop()


async def _infer(
    session: aiohttp.ClientSession, url: str, model: str, name: str, rows: np.ndarray
) -> dict[str, Any]:
    body = {
        "inputs": [
            {"name": name, "datatype": "FP32", "shape": list(rows.shape), "data": rows.tolist()}
        ]
    }
    async with session.post(f"{url}/v2/models/{model}/infer", json=body) as response:
        assert response.status == 200, await response.text()
        payload: dict[str, Any] = await response.json()
    return payload


def _output(payload: dict[str, Any], name: str) -> np.ndarray:
    out = next(o for o in payload["outputs"] if o["name"] == name)
    return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])


@pytest.mark.parametrize("rows", [5, 40, 64])
async def test_padded_and_split_requests_return_exactly_their_rows(
    bucket_server: ServerThread, bucket_repo: Path, rows: int
) -> None:
    x = np.random.default_rng(rows).standard_normal((rows, 16)).astype(np.float32)
    expected = reference_outputs(bucket_repo, MODEL, x)[0]
    async with aiohttp.ClientSession() as session:
        payload = await _infer(session, bucket_server.url, MODEL, "input", x)
    result = _output(payload, "output")
    assert result.shape == (rows, 4)
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-6)


async def test_over_max_batch_size_is_still_refused(bucket_server: ServerThread) -> None:
    x = np.zeros((65, 16), dtype=np.float32).tolist()
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [65, 16], "data": x}]}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{bucket_server.url}/v2/models/{MODEL}/infer", json=body) as response,
    ):
        assert response.status == 400
        assert "max_batch_size" in await response.text()


async def test_the_model_only_ever_runs_bucket_sized_batches(bucket_server: ServerThread) -> None:
    sizes = [1, 3, 5, 7, 40, 2, 9, 33, 6, 17, 1, 64, 11, 4, 3]
    inputs = [
        np.stack([np.full(n, i), np.arange(n)], axis=1).astype(np.float32)
        for i, n in enumerate(sizes)
    ]
    async with aiohttp.ClientSession() as session:
        payloads = await asyncio.gather(
            *(_infer(session, bucket_server.url, ECHO, "x", x) for x in inputs)
        )
    seen: set[float] = set()
    for x, payload in zip(inputs, payloads, strict=True):
        np.testing.assert_array_equal(_output(payload, "y"), x * 2)  # its own rows, in order
        seen.update(_output(payload, "seen").ravel().tolist())
    assert seen <= set(map(float, BUCKETS)), f"the model ran batches of {sorted(seen)}"
    assert 32.0 in seen  # the 40-, 33- and 64-row requests were split at the largest bucket
