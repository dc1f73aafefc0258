"""``platform: python`` through the real server and the real clients: the repo init examples,
per-request errors inside a batch, model code that fails at import, at load and per
request (the server keeps serving the rest), calls into other models, and ``kind:
process`` workers (shared-memory tensors, a crash fails only its batch and is restarted)."""

from __future__ import annotations

import concurrent.futures
import json
import os
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from tritonclient.utils import InferenceServerException

from inferpack.config import ServerConfig
from inferpack.repository.python_examples import write_python_example
from tests.helpers import ServerThread

FAILING = {
    "bad-import": "import numpy\n\nraise RuntimeError('no licence file')\n",
    "bad-load": textwrap.dedent(
        """\
        class InferpackModel:
            def __init__(self, context):
                self.table = {}
                raise KeyError('weights.bin')
        """
    ),
    "bad-request": textwrap.dedent(
        """\
        class InferpackModel:
            def __init__(self, context):
                pass

            def execute(self, inputs):
                x = inputs["x"]
                if (x < 0).any():
                    raise ValueError("negative input")
                return {"y": x * 2}
        """
    ),
}
CALLER = textwrap.dedent(
    """\
    class InferpackModel:
        def __init__(self, context):
            self.context = context

        def execute(self, inputs):
            doubled = self.context.infer("bad-request", {"x": inputs["x"]})
            return {"y": doubled["y"] + 1}
    """
)
PROC_CALLER = textwrap.dedent(
    """\
    import numpy as np


    class InferpackModel:
        def __init__(self, context):
            self.context = context
            probe = context.infer("bad-request", {"x": np.ones((1, 1), np.float32)})
            self.offset = float(probe["y"][0, 0])  # 2.0: a call made while loading

        def execute(self, inputs):
            doubled = self.context.infer("bad-request", {"x": inputs["x"]})
            return {"y": doubled["y"] + self.offset}
    """
)
THREAD_CALLER = textwrap.dedent(
    """\
    from concurrent.futures import ThreadPoolExecutor


    class InferpackModel:
        def __init__(self, context):
            self.context = context
            self.pool = ThreadPoolExecutor(1)  # the model's own thread

        def execute(self, inputs):
            call = self.pool.submit(self.context.infer, "bad-request", {"x": inputs["x"]})
            return {"y": call.result()["y"]}
    """
)
HALF_LOADS = textwrap.dedent(
    """\
    class InferpackModel:
        def __init__(self, context):
            if context.instance == 1:
                raise RuntimeError("the second instance cannot load")

        def execute(self, inputs):
            return {"y": inputs["x"]}
    """
)
CRASHER = textwrap.dedent(
    """\
    import os

    import numpy as np


    class InferpackModel:
        def __init__(self, context):
            self.pid = os.getpid()

        def execute(self, inputs):
            if (inputs["x"] == 13).any():
                os._exit(3)
            pid = np.full((len(inputs["x"]), 1), self.pid, dtype=np.int64)
            return {"y": inputs["x"] + 1, "pid": pid}
    """
)


def _python_model(repo: Path, name: str, source: str, outputs: list[str], **extra: object) -> None:
    (repo / name / "1").mkdir(parents=True)
    (repo / name / "1" / "model.py").write_text(source)
    config = {
        "platform": "python",
        "max_batch_size": 8,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}],
        "outputs": [{"name": n, "datatype": "FP32", "shape": [1]} for n in outputs],
        **extra,
    }
    (repo / name / "model.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    repo = tmp_path_factory.mktemp("python-models")
    write_python_example(repo, "string-identity")
    write_python_example(repo, "numpy-mlp", seed=4)
    for name, source in FAILING.items():
        batching = {"max_queue_delay_us": 200_000, "preferred_batch_sizes": [3]}
        _python_model(repo, name, source, ["y"], dynamic_batching=batching)
    _python_model(repo, "caller", CALLER, ["y"])
    _python_model(repo, "crasher", CRASHER, ["y", "pid"], instances={"kind": "process", "count": 1})
    process = {"kind": "process", "count": 1}
    _python_model(repo, "proc-caller", PROC_CALLER, ["y"], instances=process)
    _python_model(repo, "half-loads", HALF_LOADS, ["y"], instances={**process, "count": 2})
    _python_model(repo, "thread-caller", THREAD_CALLER, ["y"], instances=process)
    (repo / "no-io" / "1").mkdir(parents=True)  # a config without tensors, nothing completes it
    (repo / "no-io" / "1" / "model.py").write_text(FAILING["bad-request"])
    (repo / "no-io" / "model.yaml").write_text(yaml.safe_dump({"platform": "python"}))
    thread = ServerThread(ServerConfig(str(repo), http_port=0, grpc_port=0)).start()
    yield thread
    thread.stop()


def _x(values: list[float]) -> dict[str, object]:
    return {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [len(values), 1], "data": values}]
    }


def _infer(server: ServerThread, model: str, body: dict[str, object]) -> requests.Response:
    return requests.post(f"{server.url}/v2/models/{model}/infer", json=body, timeout=60)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_string_identity_over_http_and_grpc(server: ServerThread, binary: bool) -> None:
    raw = b"\x00\xffraw" if binary else b""  # JSON carries UTF-8 strings only
    data = np.array([[b"hello", raw, "zaża".encode()]], dtype=np.object_)
    http_input = httpclient.InferInput("INPUT0", [1, 3], "BYTES")
    http_input.set_data_from_numpy(data, binary_data=binary)
    result = httpclient.InferenceServerClient(server.address).infer("string-identity", [http_input])
    assert result.as_numpy("OUTPUT0").tolist() == data.tolist()
    grpc_input = grpcclient.InferInput("INPUT0", [1, 3], "BYTES")
    grpc_input.set_data_from_numpy(data)
    answer = grpcclient.InferenceServerClient(server.grpc_address).infer(
        "string-identity", [grpc_input]
    )
    assert answer.as_numpy("OUTPUT0").tolist() == data.tolist()


def test_numpy_mlp_answers_what_numpy_computes(server: ServerThread, tmp_path: Path) -> None:
    reference = np.load(
        Path(write_python_example(tmp_path, "numpy-mlp", seed=4)) / "1" / "weights.npz"
    )
    x = np.random.default_rng(1).standard_normal((5, 16)).astype(np.float32)
    infer_input = httpclient.InferInput("input", [5, 16], "FP32")
    infer_input.set_data_from_numpy(x)
    result = httpclient.InferenceServerClient(server.address).infer("numpy-mlp", [infer_input])
    hidden = np.maximum(x @ reference["w1"] + reference["b1"], 0)
    logits = hidden @ reference["w2"] + reference["b2"]
    np.testing.assert_allclose(result.as_numpy("logits"), logits, rtol=1e-5, atol=1e-6)
    assert result.as_numpy("label")[:, 0].tolist() == logits.argmax(axis=1).tolist()


def test_a_bad_request_in_a_batch_fails_alone(server: ServerThread) -> None:
    """Three requests queued into one batch (preferred size 3, 200 ms delay): the one with
    a negative value gets a 500 naming the model and the line; the other two their answers."""
    bodies = [_x([1.0]), _x([-1.0]), _x([2.0])]
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda body: _infer(server, "bad-request", body), bodies))
    assert [a.status_code for a in answers] == [200, 500, 200]
    error = answers[1].json()["error"]
    assert "'bad-request'" in error and "ValueError: negative input" in error
    assert "model.py line 8, in execute" in error
    assert answers[0].json()["outputs"][0]["data"] == [2.0]
    assert answers[2].json()["outputs"][0]["data"] == [4.0]


def test_a_per_request_hook_error_is_a_400_for_that_request(server: ServerThread) -> None:
    bad = {
        "inputs": [
            {"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [1.0] * 15 + ["nan"]}
        ]
    }
    response = _infer(server, "numpy-mlp", bad)
    assert response.status_code in (400, 500)
    good = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [1.0] * 16}]}
    assert _infer(server, "numpy-mlp", good).status_code == 200


def test_hook_raising_invalid_input_is_a_400(server: ServerThread) -> None:
    x = np.full((1, 16), np.inf, dtype=np.float32)
    infer_input = httpclient.InferInput("input", [1, 16], "FP32")
    infer_input.set_data_from_numpy(x)
    with pytest.raises(InferenceServerException) as raised:
        httpclient.InferenceServerClient(server.address).infer("numpy-mlp", [infer_input])
    assert raised.value.status() == "400"
    assert "NaN or infinity" in raised.value.message()


@pytest.mark.parametrize(
    ("model", "words"),
    [
        (
            "bad-import",
            ["'bad-import'", "import failed", "RuntimeError: no licence file", "model.py line 3"],
        ),
        ("bad-load", ["'bad-load'", "load failed", "KeyError", "model.py line 4, in __init__"]),
        ("no-io", ["'no-io'", "no inputs and no outputs declared", "auto_complete_config"]),
        ("half-loads", ["'half-loads'", "RuntimeError: the second instance cannot load"]),
    ],
)
def test_a_model_that_fails_to_load_says_where(
    server: ServerThread, model: str, words: list[str]
) -> None:
    index = requests.post(f"{server.url}/v2/repository/index", json={}, timeout=30).json()
    row = next(r for r in index if r["name"] == model)
    assert row["state"] == "UNAVAILABLE"
    for word in words:
        assert word in row["reason"]
    response = _infer(server, model, _x([1.0]))
    assert response.status_code == 503
    assert "'" + model + "'" in response.json()["error"]
    assert (
        _infer(
            server,
            "string-identity",
            {"inputs": [{"name": "INPUT0", "datatype": "BYTES", "shape": [1, 1], "data": ["ok"]}]},
        ).status_code
        == 200
    )


def test_a_model_calls_another_in_process(server: ServerThread) -> None:
    response = _infer(server, "caller", _x([1.0, 3.0]))
    assert response.status_code == 200, response.text
    assert response.json()["outputs"][0]["data"] == [3.0, 7.0]
    failed = _infer(server, "caller", _x([-1.0]))
    assert failed.status_code == 500
    assert "negative input" in failed.json()["error"]


def test_a_worker_process_calls_other_models_while_loading_and_serving(
    server: ServerThread,
) -> None:
    """BLS from a worker: at load and per batch; a failed call fails that request and the
    next request still gets its own answer (the pipe stays in step)."""
    assert _infer(server, "proc-caller", _x([1.0, 3.0])).json()["outputs"][0]["data"] == [4, 8]
    failed = _infer(server, "proc-caller", _x([-1.0]))
    assert failed.status_code == 500 and "negative input" in failed.json()["error"]
    assert _infer(server, "proc-caller", _x([5.0])).json()["outputs"][0]["data"] == [12.0]
    # From a thread the model started: the worker's only server answers.
    assert _infer(server, "thread-caller", _x([4.0])).json()["outputs"][0]["data"] == [8.0]


def test_a_half_loaded_model_leaves_no_worker_memory_behind(server: ServerThread) -> None:
    """half-loads' first worker loaded, its second failed: the first is stopped and its
    shared memory unlinked; the blocks left are those of the live process models."""
    blocks = list(Path("/dev/shm").glob(f"inferpack-{os.getpid()}-*"))
    assert len(blocks) == 3 * 2  # crasher, proc-caller, thread-caller: two blocks a worker


def _crasher(server: ServerThread, values: list[float]) -> requests.Response:
    return _infer(server, "crasher", _x(values))


def test_a_process_worker_that_dies_fails_only_its_batch(server: ServerThread) -> None:
    first = _crasher(server, [1.0, 2.0])
    assert first.status_code == 200, first.text
    outputs = {o["name"]: o["data"] for o in first.json()["outputs"]}
    assert outputs["y"] == [2.0, 3.0]
    pid = outputs["pid"][0]
    assert pid != os.getpid()
    died = _crasher(server, [13.0])
    assert died.status_code == 500
    assert "worker process died (exit code 3)" in died.json()["error"]
    again = _crasher(server, [5.0])
    assert again.status_code == 200, again.text
    outputs = {o["name"]: o["data"] for o in again.json()["outputs"]}
    assert outputs["y"] == [6.0] and outputs["pid"][0] != pid
    assert _infer(server, "caller", _x([1.0])).status_code == 200


ECHO = textwrap.dedent(
    """\
    import os

    import numpy as np


    class InferpackModel:
        def __init__(self, context):
            pass

        def execute(self, inputs):
            x = inputs["x"]
            if (x == -13).any():
                os._exit(5)
            return {"y": x * 2}
    """
)


def test_process_workers_under_random_load_answer_every_request_once(tmp_path: Path) -> None:
    """Two worker processes, random batch sizes and tensor lengths (some larger than the
    first shared-memory block), and a few requests that kill their worker: every request
    gets exactly one answer — its own outputs, or a 500 saying its batch's worker died —
    and the model serves after the last crash."""
    repo = tmp_path / "repo"
    _python_model(
        repo, "echo", ECHO, ["y"],
        dynamic_batching={"max_queue_delay_us": 2000},
        instances={"kind": "process", "count": 2},
    )  # fmt: skip
    config = yaml.safe_load((repo / "echo" / "model.yaml").read_text())
    config["inputs"][0]["shape"] = [-1]
    config["outputs"][0]["shape"] = [-1]
    (repo / "echo" / "model.yaml").write_text(yaml.safe_dump(config))
    rng = np.random.default_rng(5)
    sizes = [(int(rng.integers(1, 4)), int(rng.choice([1, 7, 300_000]))) for _ in range(120)]
    crash = set(rng.choice(len(sizes), 4, replace=False).tolist())
    server = ServerThread(ServerConfig(str(repo), http_port=0, grpc_port=0)).start()

    def call(index: int) -> tuple[int, object]:
        rows, length = sizes[index]
        x = np.full((rows, length), float(index), dtype=np.float32)
        if index in crash:
            x[0, 0] = -13.0
        return _binary_infer(server, "echo", "x", x)

    try:
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(call, range(len(sizes))))
        last = call(0)
    finally:
        server.stop()
    for index, (status, body) in enumerate(answers):
        if status == 200:
            rows, length = sizes[index]
            assert index not in crash
            np.testing.assert_array_equal(body, np.full((rows, length), 2.0 * index))
        else:
            assert status == 500 and "worker process died (exit code 5)" in str(body)
    assert all(answers[i][0] == 500 for i in crash)
    assert last[0] == 200


def _binary_infer(server: ServerThread, model: str, name: str, x: np.ndarray) -> tuple[int, object]:
    """One FP32 request and answer over the binary extension (requests: thread-safe, unlike
    tritonclient's gevent client): (200, the first output) or (status, error message)."""
    header = {
        "inputs": [{"name": name, "datatype": "FP32", "shape": list(x.shape),
                    "parameters": {"binary_data_size": x.nbytes}}],
        "parameters": {"binary_data_output": True},
    }  # fmt: skip
    head = json.dumps(header).encode()
    answer = requests.post(
        f"{server.url}/v2/models/{model}/infer",
        data=head + x.tobytes(),
        headers={"Inference-Header-Content-Length": str(len(head))},
        timeout=120,
    )
    if answer.status_code != 200:
        return answer.status_code, answer.json()["error"]
    length = int(answer.headers["Inference-Header-Content-Length"])
    output = json.loads(answer.content[:length])["outputs"][0]
    data = np.frombuffer(answer.content[length:], dtype=np.float32)
    return 200, data.reshape(output["shape"])
