"""Python models under ``lru`` (loaded on demand, evicted under the memory budget, loaded
again: every request answered once, correctly) and in a local fleet behind the router
(inferpack's and Triton's model.py, thread and process instances, REST and gRPC)."""

from __future__ import annotations

import random
import shutil
import textwrap
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import yaml

from inferpack.config import ServerConfig
from inferpack.config.control import ControlConfig, ControlMode
from inferpack.repository.python_examples import write_python_example
from tests.helpers import ServerThread
from tests.integration.test_deploy_local import _free_port_block, _plan, running_fleet
from tests.integration.test_python_models import _python_model
from tests.integration.test_triton_python_examples import EXAMPLES

# Each holds 24 MB of its own (written, so resident): three do not fit a 64 MB budget.
HEAVY = textwrap.dedent(
    """\
    import numpy as np


    class InferpackModel:
        def __init__(self, context):
            self.offset = float(context.parameters["offset"])
            self.ballast = np.ones(3 * 2**20, dtype=np.float64)

        def execute(self, inputs):
            return {"y": inputs["x"] + self.offset}
    """
)
HEAVY_MODELS = {"heavy-a": 1.0, "heavy-b": 2.0, "heavy-c": 3.0}
BUDGET_BYTES = 64 * 2**20


def _heavy_repo(root: Path) -> Path:
    for name, offset in HEAVY_MODELS.items():
        _python_model(root, name, HEAVY, ["y"], parameters={"offset": str(offset)})
    return root


def test_python_models_are_evicted_and_reloaded_under_lru(tmp_path: Path) -> None:
    repo = _heavy_repo(tmp_path / "repo")
    shutil.copytree(EXAMPLES / "models" / "add_sub", repo / "add_sub")  # Triton's contract
    control = ControlConfig(ControlMode.LRU, memory_budget_bytes=BUDGET_BYTES)
    server = ServerThread(ServerConfig(str(repo), http_port=0, grpc_port=0, control=control))
    server.start()
    rng = random.Random(11)
    # The first three at once: all load on their file's size as estimate (a few hundred
    # bytes), measure 24 MB each, and one must be evicted as soon as it is idle.
    calls = [(name, 0.5) for name in HEAVY_MODELS]
    models = [*HEAVY_MODELS, "add_sub"]
    calls += [(rng.choice(models), rng.uniform(-5, 5)) for _ in range(90)]

    def call(item: tuple[str, float]) -> tuple[int, list[float]]:
        model, value = item
        body = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [value]}]}
        if model == "add_sub":
            pair = [{"name": n, "datatype": "FP32", "shape": [4], "data": [value] * 4}
                    for n in ("INPUT0", "INPUT1")]  # fmt: skip
            body = {"inputs": pair, "outputs": [{"name": "OUTPUT0"}]}
        answer = requests.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=120)
        data = answer.json()["outputs"][0]["data"] if answer.status_code == 200 else []
        return answer.status_code, data

    try:
        with ThreadPoolExecutor(6) as pool:
            answers = list(pool.map(call, calls))
        metrics = requests.get(f"{server.url}/metrics", timeout=30).text
        index = requests.post(f"{server.url}/v2/repository/index", json={}, timeout=30).json()
    finally:
        server.stop()
    assert [status for status, _ in answers] == [200] * len(calls)
    for (model, value), (_, data) in zip(calls, answers, strict=True):
        expected = [2 * value] * 4 if model == "add_sub" else [value + HEAVY_MODELS[model]]
        assert data == pytest.approx(expected, abs=1e-5)
    evictions = [
        line for line in metrics.splitlines() if line.startswith("inferpack_model_evictions_total")
    ]
    assert evictions and float(evictions[0].split()[-1]) > 0, evictions
    resident = [row for row in index if row["state"] == "READY" and row["name"] in HEAVY_MODELS]
    assert 1 <= len(resident) < len(HEAVY_MODELS)


def test_python_models_in_a_local_fleet(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    write_python_example(repo, "string-identity")
    write_python_example(repo, "numpy-mlp")
    shutil.copytree(EXAMPLES / "models" / "add_sub", repo / "add_sub")
    isolated = yaml.safe_load((repo / "numpy-mlp" / "model.yaml").read_text())
    shutil.copytree(repo / "numpy-mlp", repo / "mlp-proc")
    (repo / "mlp-proc" / "model.yaml").write_text(
        yaml.safe_dump({**isolated, "name": "mlp-proc", "instances": {"kind": "process"}})
    )
    placement = {
        "server-0": ("c5.2xlarge", ("string-identity", "numpy-mlp")),
        "server-1": ("c5.2xlarge", ("numpy-mlp", "add_sub", "mlp-proc")),
    }
    base_port = _free_port_block(2 * len(placement))
    args = [
        "deploy", str(_plan(tmp_path / "plan.yaml", placement)), "--target", "local",
        "--model-repository", str(repo), "--host", "127.0.0.1", "--router-http-port", "0",
        "--router-grpc-port", "0", "--base-port", str(base_port), "--cpu-threads", "1",
    ]  # fmt: skip
    with running_fleet(tmp_path, args) as fleet:
        assert fleet.router is not None
        _infer_through_the_router(fleet.router.group(1), fleet.router.group(2))
    assert fleet.code == 0, fleet.log.read_text()


def _infer_through_the_router(http_address: str, grpc_address: str) -> None:
    url = f"http://{http_address}/v2/models"
    words = {
        "inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 2], "data": ["a", "b"]}]
    }
    answer = requests.post(f"{url}/string-identity/infer", json=words, timeout=60)
    assert answer.status_code == 200 and answer.json()["outputs"][0]["data"] == ["a", "b"]
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    client = grpcclient.InferenceServerClient(grpc_address)
    logits = []
    for model in ("numpy-mlp", "numpy-mlp", "mlp-proc"):  # the replica's both servers, a worker
        tensor = grpcclient.InferInput("input", [3, 16], "FP32")
        tensor.set_data_from_numpy(x)
        logits.append(client.infer(model, [tensor]).as_numpy("logits"))
    np.testing.assert_allclose(logits[0], logits[1], rtol=1e-6)
    np.testing.assert_allclose(logits[0], logits[2], rtol=1e-6)
    pair = [grpcclient.InferInput(n, [4], "FP32") for n in ("INPUT0", "INPUT1")]
    for tensor in pair:
        tensor.set_data_from_numpy(np.arange(4, dtype=np.float32))
    assert client.infer("add_sub", pair).as_numpy("OUTPUT0").tolist() == [0, 2, 4, 6]
    client.close()
