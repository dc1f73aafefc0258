"""Weight sharing through the real server: models with one backbone and heads of their own
hold the backbone once, fit a budget that counts it once, answer as the unshared models do,
and evicting one leaves the others' shared weights in place."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from safetensors.numpy import load_file

from inferpack.backends.tensor_store import MIN_SHARED_BYTES
from inferpack.config import ServerConfig
from inferpack.config.control import ControlConfig, ControlMode
from tests.backbones import HEAD_PREFIX, write_head_variants
from tests.helpers import ServerThread, reference_outputs
from tests.integration.conftest import fetch_metrics, metric_value

SHARING = ["head-1", "head-2", "head-3"]  # backbone seed 0
OTHER = "head-7"  # a backbone of its own (seed 5): shares nothing
IMAGE = np.random.default_rng(1).standard_normal((1, 3, 64, 64)).astype(np.float32)


def _bytes(root: Path) -> dict[str, int]:
    """A model's weight bytes (what the server measures on CPU), the part of it shared with
    the other models of its backbone, and its artifact's size (a first load's estimate)."""
    weights = load_file(str(root / SHARING[0] / "1" / "model.safetensors"))
    backbone = [
        array.nbytes
        for key, array in weights.items()
        if not key.startswith(HEAD_PREFIX) and array.nbytes >= MIN_SHARED_BYTES
    ]
    return {
        "model": sum(array.nbytes for array in weights.values()),
        "backbone": sum(backbone),
        "artifact": (root / SHARING[0] / "1" / "model.safetensors").stat().st_size,
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    root = tmp_path_factory.mktemp("shared")
    write_head_variants(root, [1, 2, 3], backbone_seed=0)
    write_head_variants(root, [7], backbone_seed=5)
    sizes = _bytes(root)
    own = sizes["model"] - sizes["backbone"]
    # The three sharing models fit (backbone once, plus one first-load estimate); a model
    # sharing nothing then needs one of them evicted. Unshared, three would not fit.
    budget = sizes["model"] + sizes["artifact"] + int(1.5 * own)
    assert 3 * sizes["model"] > budget
    control = ControlConfig(ControlMode.LRU, memory_budget_bytes=budget)
    config = ServerConfig(str(root), http_port=0, grpc_port=None, control=control)
    thread = ServerThread(config).start()
    yield thread
    thread.stop()


async def _infer(session: aiohttp.ClientSession, url: str, model: str) -> np.ndarray:
    body = {
        "inputs": [
            {
                "name": "input",
                "datatype": "FP32",
                "shape": list(IMAGE.shape),
                "data": IMAGE.ravel().tolist(),
            }
        ]
    }
    async with session.post(f"{url}/v2/models/{model}/infer", json=body) as response:
        assert response.status == 200, await response.text()
        output = (await response.json())["outputs"][0]
    return np.asarray(output["data"], np.float32).reshape(output["shape"])


async def _index(session: aiohttp.ClientSession, url: str) -> dict[str, dict[str, Any]]:
    async with session.post(f"{url}/v2/repository/index", json={}) as response:
        assert response.status == 200
        return {row["name"]: row for row in await response.json()}


def _expected(server: ServerThread, model: str) -> np.ndarray:
    return reference_outputs(Path(server.config.model_repository), model, IMAGE)[0]


async def test_models_sharing_a_backbone_hold_it_once_and_answer_as_unshared(
    server: ServerThread,
) -> None:
    root = Path(server.config.model_repository)
    sizes = _bytes(root)
    async with aiohttp.ClientSession() as session:
        got = {model: await _infer(session, server.url, model) for model in SHARING}
        index = await _index(session, server.url)
        metrics = await fetch_metrics(session, server.url)
    for model in SHARING:
        np.testing.assert_allclose(got[model], _expected(server, model), rtol=1e-5, atol=1e-6)
        row = index[model]
        assert row["state"] == "READY"
        assert row["memory_bytes"] == sizes["model"]
        assert row["shared_bytes"] == sizes["backbone"]
        assert row["own_bytes"] == sizes["model"] - sizes["backbone"]
    assert metric_value(metrics, "inferpack_model_evictions_total") == 0


async def test_evicting_one_model_leaves_the_shared_backbone_to_the_others(
    server: ServerThread,
) -> None:
    sizes = _bytes(Path(server.config.model_repository))
    async with aiohttp.ClientSession() as session:
        for model in SHARING:  # all resident, head-1 least recently used
            await _infer(session, server.url, model)
        other = await _infer(session, server.url, OTHER)
        index = await _index(session, server.url)
        got = {model: await _infer(session, server.url, model) for model in SHARING[1:]}
        after = await _index(session, server.url)
    np.testing.assert_allclose(other, _expected(server, OTHER), rtol=1e-5, atol=1e-6)
    assert index[SHARING[0]]["state"] == "UNAVAILABLE"
    assert "evicted" in index[SHARING[0]]["reason"]
    assert [index[m]["state"] for m in (*SHARING[1:], OTHER)] == ["READY"] * 3
    assert index[OTHER]["shared_bytes"] == 0
    for model in SHARING[1:]:
        np.testing.assert_allclose(got[model], _expected(server, model), rtol=1e-5, atol=1e-6)
        assert after[model]["shared_bytes"] == sizes["backbone"]
