"""Triton's own python-backend examples (add_sub, pytorch, BLS sync and async), vendored
verbatim (tests/triton_python_examples), served by inferpack unmodified: Triton's example
clients pass against it over HTTP, and the same calls pass over gRPC."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from inferpack.config import ServerConfig
from tests.helpers import ServerThread

EXAMPLES = Path(__file__).parents[1] / "triton_python_examples"
MODELS = [
    "add_sub",
    "pytorch",
    "bls_sync",
    "bls_async",
    "batch_auto_complete",  # no config file: the model's auto_complete_config writes it
    "nobatch_auto_complete",
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("triton-python")
    for name in MODELS:
        shutil.copytree(EXAMPLES / "models" / name, repo / name)
    thread = ServerThread(ServerConfig(str(repo), http_port=0, grpc_port=0)).start()
    yield thread
    thread.stop()


@pytest.mark.parametrize("client", ["add_sub", "pytorch", "bls_sync", "bls_async", "auto_complete"])
def test_the_example_client_passes(server: ServerThread, client: str) -> None:
    script = EXAMPLES / "clients" / f"{client}_client.py"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "run_client.py"), str(script), server.address],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS" in done.stdout


def _grpc_inputs(a: np.ndarray, b: np.ndarray, model: str | None) -> list[grpcclient.InferInput]:
    inputs = [
        grpcclient.InferInput("INPUT0", [4], "FP32"),
        grpcclient.InferInput("INPUT1", [4], "FP32"),
    ]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    if model is not None:
        name = grpcclient.InferInput("MODEL_NAME", [1], "BYTES")
        name.set_data_from_numpy(np.array([model], dtype=np.object_))
        inputs.append(name)
    return inputs


@pytest.mark.parametrize(
    ("model", "called"),
    [
        ("add_sub", None),
        ("pytorch", None),
        ("bls_sync", "add_sub"),
        ("bls_sync", "pytorch"),
        ("bls_async", None),
    ],
)
def test_the_same_over_grpc(server: ServerThread, model: str, called: str | None) -> None:
    rng = np.random.default_rng(3)
    a, b = rng.random(4, dtype=np.float32), rng.random(4, dtype=np.float32)
    client = grpcclient.InferenceServerClient(server.grpc_address)
    result = client.infer(model, _grpc_inputs(a, b, called), request_id="1")
    np.testing.assert_allclose(result.as_numpy("OUTPUT0"), a + b, rtol=1e-6)
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b, rtol=1e-6)


def test_a_bls_call_to_a_missing_model_fails_that_request(server: ServerThread) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_address)
    a = np.ones(4, dtype=np.float32)
    with pytest.raises(InferenceServerException) as raised:
        client.infer("bls_sync", _grpc_inputs(a, a, "undefined_model"))
    assert "undefined_model" in raised.value.message()
    assert client.infer("add_sub", _grpc_inputs(a, a, None)).as_numpy("OUTPUT0").tolist() == [2] * 4


def test_config_and_metadata_name_the_python_backend(server: ServerThread) -> None:
    client = grpcclient.InferenceServerClient(server.grpc_address)
    config = client.get_model_config("add_sub", as_json=True)["config"]
    assert config["backend"] == "python"
    assert [i["name"] for i in config["input"]] == ["INPUT0", "INPUT1"]
    assert client.get_model_metadata("bls_sync", as_json=True)["inputs"][0]["datatype"] == "BYTES"


def test_an_auto_completed_model_batches_as_its_config_says(server: ServerThread) -> None:
    """batch_auto_complete set max_batch_size 4 and dynamic batching: a batch of 3 rows."""
    rng = np.random.default_rng(9)
    a, b = rng.random((3, 4), dtype=np.float32), rng.random((3, 4), dtype=np.float32)
    pair = [grpcclient.InferInput(n, [3, 4], "FP32") for n in ("INPUT0", "INPUT1")]
    pair[0].set_data_from_numpy(a)
    pair[1].set_data_from_numpy(b)
    client = grpcclient.InferenceServerClient(server.grpc_address)
    result = client.infer("batch_auto_complete", pair)
    np.testing.assert_allclose(result.as_numpy("OUTPUT1"), a - b, rtol=1e-6)
    config = client.get_model_config("batch_auto_complete", as_json=True)["config"]
    assert config["max_batch_size"] == 4 and "dynamic_batching" in config


ECHO_META = """\
import json

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            found = {
                "REQUEST_ID": request.request_id(),
                "PARAMETERS": request.parameters(),
                "WANTED": json.dumps(request.requested_output_names()),
            }
            tensors = [
                pb_utils.Tensor(name, np.array([found[name].encode()], dtype=np.object_))
                for name in request.requested_output_names()
            ]
            responses.append(pb_utils.InferenceResponse(tensors))
        return responses
"""
ECHO_CONFIG = """\
backend: "python"
input [{ name: "X" data_type: TYPE_FP32 dims: [ 1 ] }]
output [{ name: "REQUEST_ID" data_type: TYPE_STRING dims: [ 1 ] },
        { name: "PARAMETERS" data_type: TYPE_STRING dims: [ 1 ] },
        { name: "WANTED" data_type: TYPE_STRING dims: [ 1 ] }]
"""


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_a_triton_model_sees_the_request_id_parameters_and_wanted_outputs(
    tmp_path: Path, kind: str
) -> None:
    folder = tmp_path / "echo"
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.py").write_text(ECHO_META)
    (folder / "config.pbtxt").write_text(ECHO_CONFIG)
    if kind == "process":  # config.pbtxt has no kind: a model.yaml beside it says process
        (folder / "model.yaml").write_text(
            "platform: python\ninputs: [{name: X, datatype: FP32, shape: [1]}]\n"
            "outputs: [{name: REQUEST_ID, datatype: BYTES, shape: [1]},\n"
            "  {name: PARAMETERS, datatype: BYTES, shape: [1]},\n"
            "  {name: WANTED, datatype: BYTES, shape: [1]}]\n"
            "instances: {kind: process}\n"
        )
    server = ServerThread(ServerConfig(str(tmp_path), http_port=0, grpc_port=0)).start()
    try:
        client = grpcclient.InferenceServerClient(server.grpc_address)
        x = grpcclient.InferInput("X", [1], "FP32")
        x.set_data_from_numpy(np.ones(1, dtype=np.float32))
        wanted = [grpcclient.InferRequestedOutput(n) for n in ("REQUEST_ID", "PARAMETERS")]
        result = client.infer(
            "echo", [x], request_id="req-7", outputs=wanted, parameters={"temperature": "0.5"}
        )
        client.close()
    finally:
        server.stop()
    assert result.as_numpy("REQUEST_ID").tolist() == [b"req-7"]
    assert json.loads(result.as_numpy("PARAMETERS")[0]) == {"temperature": "0.5"}
    assert result.as_numpy("WANTED") is None  # not asked for: not computed, not sent
