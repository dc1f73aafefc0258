"""BYTES through the string-identity python model (Triton's L0 string tests use such a model:
each element back as it was sent), in a thread and in a worker process, over JSON, the
binary extension and gRPC: empty, non-ASCII, NUL-bearing and 1 MB elements, batches, and
the malformed requests those tests send (400s naming the problem)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml

from inferpack.config import ServerConfig
from inferpack.repository.python_examples import write_python_example
from tests.helpers import ServerThread

MODELS = ["string-identity", "string-identity-proc"]
WORDS = [
    b"",
    b"a",
    "za\u017c\u00f3\u0142\u0107 \U0001f600".encode(),
    b"tab\tnew\nline",
    b'"quoted"',
]
RAW = [b"\x00", b"\xff\xfe\x00binary", b"x" * (1 << 20)]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("bytes")
    write_python_example(repo, "string-identity")
    shutil.copytree(repo / "string-identity", repo / "string-identity-proc")
    config = yaml.safe_load((repo / "string-identity-proc" / "model.yaml").read_text())
    config.update(name="string-identity-proc", instances={"kind": "process", "count": 2})
    (repo / "string-identity-proc" / "model.yaml").write_text(yaml.safe_dump(config))
    thread = ServerThread(ServerConfig(str(repo), http_port=0, grpc_port=0)).start()
    yield thread
    thread.stop()


def _array(items: list[bytes], rows: int = 1) -> np.ndarray:
    flat = np.empty(len(items) * rows, dtype=np.object_)
    flat[:] = items * rows
    return flat.reshape(rows, len(items))


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_every_element_comes_back_over_http(server: ServerThread, model: str, binary: bool) -> None:
    data = _array(WORDS + (RAW if binary else []), rows=3)
    tensor = httpclient.InferInput("INPUT0", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data, binary_data=binary)
    wanted = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)]
    client = httpclient.InferenceServerClient(server.address)
    result = client.infer(model, [tensor], outputs=wanted).as_numpy("OUTPUT0")
    client.close()
    got = [[_bytes(item) for item in row] for row in result.tolist()]
    assert result.shape == data.shape and got == data.tolist()


def _bytes(item: bytes | str) -> bytes:
    return item.encode() if isinstance(item, str) else item  # JSON answers carry strings


@pytest.mark.parametrize("model", MODELS)
def test_every_element_comes_back_over_grpc(server: ServerThread, model: str) -> None:
    data = _array(WORDS + RAW, rows=2)
    tensor = grpcclient.InferInput("INPUT0", list(data.shape), "BYTES")
    tensor.set_data_from_numpy(data)
    client = grpcclient.InferenceServerClient(server.grpc_address)
    result = client.infer(model, [tensor]).as_numpy("OUTPUT0")
    client.close()
    assert result.tolist() == data.tolist()


def _post(server: ServerThread, body: object) -> requests.Response:
    url = f"{server.url}/v2/models/string-identity/infer"
    return requests.post(url, json=body, timeout=30)


@pytest.mark.parametrize(
    ("tensor", "words"),
    [
        ({"shape": [1, 3], "data": ["a", "b"]}, "do not match"),
        ({"shape": [1, 1], "data": [7]}, "BYTES"),
        ({"shape": [1, 1, 1], "data": ["a"]}, "does not match model shape"),
        ({"shape": [65, 1], "data": ["a"] * 65}, "max_batch_size"),
    ],
    ids=["count", "not-a-string", "rank", "batch"],
)
def test_malformed_bytes_requests_are_400s(
    server: ServerThread, tensor: dict[str, object], words: str
) -> None:
    response = _post(server, {"inputs": [{"name": "INPUT0", "datatype": "BYTES", **tensor}]})
    assert response.status_code == 400, response.text
    assert words in response.json()["error"]


def test_an_unknown_requested_output_is_refused(server: ServerThread) -> None:
    body = {
        "inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 1], "data": ["a"]}],
        "outputs": [{"name": "NOPE"}],
    }
    response = _post(server, body)
    assert response.status_code == 400 and "NOPE" in response.json()["error"]


def test_truncated_binary_bytes_are_a_400(server: ServerThread) -> None:
    tensor = httpclient.InferInput("INPUT0", [1, 1], "BYTES")
    tensor.set_data_from_numpy(_array([b"abcdef"]), binary_data=True)
    body, header_length = httpclient.InferenceServerClient.generate_request_body([tensor])
    cut = body[:-3]  # the element's length prefix says 6 bytes; 3 follow
    headers = {"Inference-Header-Content-Length": str(header_length)}
    response = requests.post(
        f"{server.url}/v2/models/string-identity/infer", data=cut, headers=headers, timeout=30
    )
    assert response.status_code == 400, response.text
    assert "INPUT0" in response.json()["error"]
