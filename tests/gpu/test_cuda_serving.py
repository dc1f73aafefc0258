"""CUDA paths of the torch backend through a real server (skipped without a GPU)."""

from __future__ import annotations

import io
import json

import aiohttp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

from inferpack.config import ServerConfig  # noqa: E402
from tests.helpers import ServerThread, edit_model, reference_outputs  # noqa: E402


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory: pytest.TempPathFactory) -> ServerThread:
    from inferpack.repository.init import init_repository

    repo = tmp_path_factory.mktemp("gpu-repo")
    init_repository(repo, ["resnet50"], seed=0)
    cuda = {"count": 2, "device": "cuda:0"}
    edit_model(repo, "resnet50", "resnet50-fp32", instances=cuda, max_batch_size=32)
    edit_model(repo, "resnet50", "resnet50-bf16", instances=cuda, precision="bf16")
    edit_model(repo, "resnet50", "resnet50-fp16", instances={"device": "auto"}, precision="fp16")
    config = ServerConfig(
        str(repo), http_port=0, grpc_port=None, max_request_bytes=64 * 1024 * 1024
    )
    thread = ServerThread(config).start()
    thread.repo = repo  # type: ignore[attr-defined]
    yield thread
    thread.stop()


async def _infer(session: aiohttp.ClientSession, url: str, model: str, x: np.ndarray) -> np.ndarray:
    """One binary-tensor request (what tritonclient sends); the output comes back binary."""
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "input",
                    "datatype": "FP32",
                    "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    headers = {"Inference-Header-Content-Length": str(len(header))}
    body = io.BytesIO(header + x.tobytes())
    async with session.post(f"{url}/v2/models/{model}/infer", data=body, headers=headers) as r:
        assert r.status == 200, await r.text()
        length = int(r.headers["Inference-Header-Content-Length"])
        raw = await r.read()
    out = json.loads(raw[:length])["outputs"][0]
    return np.frombuffer(raw[length:], dtype=np.float32).reshape(out["shape"])


def _relative_l2(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize(
    ("model", "tolerance"),
    [("resnet50-fp32", 1e-2), ("resnet50-bf16", 5e-2), ("resnet50-fp16", 1e-2)],
)
async def test_gpu_outputs_match_cpu_fp32_reference(
    gpu_server: ServerThread, model: str, tolerance: float
) -> None:
    x = np.random.default_rng(0).standard_normal((4, 3, 224, 224)).astype(np.float32)
    expected = reference_outputs(gpu_server.repo, "resnet50", x)[0]  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as session:
        got = await _infer(session, gpu_server.url, model, x)
    assert got.shape == (4, 1000)
    assert _relative_l2(got, expected) < tolerance
    assert (got.argmax(1) == expected.argmax(1)).all()


async def test_two_cuda_instances_serve_concurrent_requests(gpu_server: ServerThread) -> None:
    import asyncio

    xs = np.random.default_rng(1).standard_normal((16, 1, 3, 224, 224)).astype(np.float32)
    expected = reference_outputs(gpu_server.repo, "resnet50", xs[:, 0])[0]  # type: ignore[attr-defined]
    async with aiohttp.ClientSession() as session:
        results = await asyncio.gather(
            *(_infer(session, gpu_server.url, "resnet50-fp32", x) for x in xs)
        )
    for index, got in enumerate(results):
        assert _relative_l2(got[0], expected[index]) < 1e-2
    model = gpu_server.server.engine.model("resnet50-fp32")  # type: ignore[union-attr]
    assert {b.device for b in model.backends} == {"cuda:0"}
    assert len(model.backends) == 2
