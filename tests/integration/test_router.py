"""The router in front of three real ``inferpack serve`` processes, driven by tritonclient.

Fleet: s0 serves mlp-a and mlp-b, s1 serves mlp-b (a replica), s2 serves mlp-c and slow.
The models are tiny MLPs with different weights, so an answer from the wrong model shows.
The last test stops two servers: it runs last and leaves the fleet partly down.
"""

from __future__ import annotations

import asyncio
import json
import queue
import random
import re
import shutil
import signal
import subprocess
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from tritonclient.utils import InferenceServerException

from inferpack.protocol.proto import inference_pb2 as pb
from inferpack.protocol.proto import inference_pb2_grpc as pb_grpc
from inferpack.repository.init import init_repository
from inferpack.router import Backend, RouterConfig, RoutingTable, RunningRouter, start_router
from tests.helpers import edit_model, reference_outputs
from tests.integration.cli_server import _LISTENING, inferpack, wait_for

MODELS = ("mlp-a", "mlp-b", "mlp-c")
PLACEMENT = {"s0": ("mlp-a", "mlp-b"), "s1": ("mlp-b",), "s2": ("mlp-c", "slow")}
WAIT_S = 60
_READY = re.compile(r"ready\s+on")


def build_fleet_repo(root: Path) -> Path:
    """mlp-a, mlp-b, mlp-c: tiny-mlp with seeds 0, 1, 2 (distinct weights); slow: sleeps
    600 ms a batch."""
    repo = root / "repo"
    for seed, name in enumerate(MODELS):
        init_repository(
            root / f"seed-{seed}", ["tiny-mlp"] if seed else ["tiny-mlp", "sleep"], seed
        )
        shutil.copytree(root / f"seed-{seed}" / "tiny-mlp", repo / name)
        config = repo / name / "model.yaml"
        config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "name": name}))
    shutil.copytree(root / "seed-0" / "sleep", repo / "sleep")
    edit_model(repo, "sleep", "slow", workload_options={"sleep_ms": 600}, max_batch_size=1)
    return repo


@dataclass
class Server:
    name: str
    process: subprocess.Popen[bytes]
    log: Path
    backend: Backend | None = None


@contextmanager
def serve_fleet(repo: Path, logs: Path) -> Iterator[list[Server]]:
    """Start every server of PLACEMENT at once (port 0), wait until all are ready, SIGTERM
    them afterwards and check each exits with 0."""
    servers = []
    for name, models in PLACEMENT.items():
        args = ["--model-repository", str(repo), "--http-port", "0", "--grpc-port", "0"]
        args += ["--model-control-mode", "explicit", "--cpu-threads", "1"]
        args += [arg for model in models for arg in ("--load-model", model)]
        log = logs / f"{name}.log"
        with log.open("w") as sink:
            process = subprocess.Popen(inferpack("serve", *args), stdout=sink, stderr=sink)
        servers.append(Server(name, process, log))
    try:
        for server in servers:
            found = wait_for(server.log, _LISTENING, server.process)
            wait_for(server.log, _READY, server.process)
            server.backend = Backend(server.name, found.group(1), found.group(2))
        yield servers
    finally:
        for server in servers:
            server.process.send_signal(signal.SIGTERM)
        codes = [server.process.wait(timeout=30) for server in servers]
    assert codes == [0] * len(servers), [s.log.read_text()[-2000:] for s in servers]


class RouterThread:
    """A router on its own event loop in a thread, so sync clients can call it."""

    def __init__(self, config: RouterConfig) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="router", daemon=True)
        self._thread.start()
        self.router: RunningRouter = self.call(start_router(config))

    def call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(WAIT_S)

    @property
    def address(self) -> str:
        return self.router.url.removeprefix("http://")

    def stop(self) -> None:
        self.call(self.router.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=WAIT_S)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fleet_repo(tmp_path_factory.mktemp("fleet"))


@pytest.fixture(scope="module")
def fleet(repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    with serve_fleet(repo, tmp_path_factory.mktemp("logs")) as servers:
        yield servers


def _table(fleet: list[Server]) -> RoutingTable:
    return RoutingTable.from_hosts((s.backend, PLACEMENT[s.name]) for s in fleet if s.backend)


@pytest.fixture(scope="module")
def router(fleet: list[Server]) -> Iterator[RouterThread]:
    thread = RouterThread(RouterConfig(_table(fleet), http_port=0, grpc_port=0))
    yield thread
    thread.stop()


def _http_call(url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


# --- one request of the stress test, by each protocol ---------------------------------


def _rest(
    client: httpclient.InferenceServerClient,
    model: str,
    data: np.ndarray,
    binary: bool,
    request_id: str,
) -> tuple[str, str, np.ndarray]:
    item = httpclient.InferInput("input", list(data.shape), "FP32")
    item.set_data_from_numpy(data, binary_data=binary)
    wanted = [httpclient.InferRequestedOutput("output", binary_data=binary)]
    result = client.infer(model, [item], outputs=wanted, request_id=request_id)
    response = result.get_response()
    return response["model_name"], response["id"], result.as_numpy("output")


def _grpc(
    client: grpcclient.InferenceServerClient, model: str, data: np.ndarray, request_id: str
) -> tuple[str, str, np.ndarray]:
    item = grpcclient.InferInput("input", list(data.shape), "FP32")
    item.set_data_from_numpy(data)
    result = client.infer(model, [item], request_id=request_id)
    response = result.get_response()
    return response.model_name, response.id, result.as_numpy("output")


def test_stress_every_request_answered_once_by_its_model(
    router: RouterThread, fleet: list[Server], repo: Path
) -> None:
    """Concurrent clients over REST (JSON and binary) and gRPC, random models and batch
    sizes: every answer comes from the model asked, carries its request's id, and matches
    the model run in-process; the replicated model is served by both of its replicas."""
    local = threading.local()

    def one(index: int) -> tuple[int, str]:
        rng = random.Random(index)
        model, protocol = rng.choice(MODELS), rng.choice(("json", "binary", "grpc"))
        data = np.random.default_rng(index).standard_normal((rng.randint(1, 4), 16))
        data = data.astype(np.float32)
        request_id = f"req-{index}"
        if not hasattr(local, "http"):
            local.http = httpclient.InferenceServerClient(router.address)
            local.grpc = grpcclient.InferenceServerClient(router.router.grpc_address or "")
        if protocol == "grpc":
            name, echoed, output = _grpc(local.grpc, model, data, request_id)
        else:
            name, echoed, output = _rest(local.http, model, data, protocol == "binary", request_id)
        assert (name, echoed) == (model, request_id)
        np.testing.assert_allclose(output, reference_outputs(repo, model, data)[0], atol=1e-4)
        return index, model

    count = 300
    with ThreadPoolExecutor(max_workers=12) as pool:
        answered = list(pool.map(one, range(count)))
    assert sorted(index for index, _ in answered) == list(range(count))
    assert set(router.router.picker.outstanding.values()) == {0}
    replicas = [s for s in fleet if "mlp-b" in PLACEMENT[s.name]]
    served = [_inference_count(s, "mlp-b") for s in replicas]
    assert all(n > 0 for n in served), served


def _inference_count(server: Server, model: str) -> int:
    assert server.backend is not None
    status, body = _http_call(f"{server.backend.http_url}/v2/models/{model}/stats")
    assert status == 200
    return int(body["model_stats"][0]["inference_count"])


def test_stream_routes_each_request_to_its_model(router: RouterThread, repo: Path) -> None:
    received: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(router.router.grpc_address or "")
    client.start_stream(callback=lambda result, error: received.put((result, error)))
    sent = {}
    for index in range(9):
        model = MODELS[index % 3]
        data = np.full((1, 16), index / 10, dtype=np.float32)
        item = grpcclient.InferInput("input", [1, 16], "FP32")
        item.set_data_from_numpy(data)
        client.async_stream_infer(model, [item], request_id=f"s-{index}")
        sent[f"s-{index}"] = (model, data)
    client.async_stream_infer("nope", [item], request_id="unknown")
    answers = [received.get(timeout=WAIT_S) for _ in range(len(sent) + 1)]
    client.stop_stream()
    client.close()
    failures = [error for _, error in answers if error is not None]
    assert len(failures) == 1 and "unknown model: 'nope'" in failures[0].message()
    for result, _ in (a for a in answers if a[1] is None):
        model, data = sent[result.get_response().id]
        assert result.get_response().model_name == model
        np.testing.assert_allclose(
            result.as_numpy("output"), reference_outputs(repo, model, data)[0], atol=1e-4
        )


def test_unknown_model_is_404_and_not_found(router: RouterThread) -> None:
    for path in ("/v2/models/nope", "/v2/models/nope/ready", "/v2/models/nope/versions/1/config"):
        status, body = _http_call(f"{router.router.url}{path}")
        assert (status, body) == (404, {"error": "Request for unknown model: 'nope' is not found"})
    status, _ = _http_call(f"{router.router.url}/v2/models/nope/infer", {"inputs": []})
    assert status == 404
    with grpc.insecure_channel(router.router.grpc_address or "") as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(pb.ModelInferRequest(model_name="nope"), timeout=WAIT_S)
    assert caught.value.code() is grpc.StatusCode.NOT_FOUND
    assert "'nope' is not found" in (caught.value.details() or "")


def test_malformed_grpc_statistics_request_is_invalid_argument(router: RouterThread) -> None:
    with grpc.insecure_channel(router.router.grpc_address or "") as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelStatistics",
            request_serializer=lambda raw: raw,
            response_deserializer=lambda raw: raw,
        )
        with pytest.raises(grpc.RpcError) as caught:
            call(b"\x0a\x7fshort", timeout=WAIT_S)  # field 1 claims 127 bytes, has 5
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed protobuf" in (caught.value.details() or "")


def test_backend_answers_pass_through_unchanged(router: RouterThread, fleet: list[Server]) -> None:
    """A backend's error (any status) and its headers come back as the backend sent them."""
    bad = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [1, 2, 3]}]}
    direct = _http_call(f"{fleet[2].backend.http_url}/v2/models/mlp-c/infer", bad)  # type: ignore[union-attr]
    assert direct[0] == 400
    assert _http_call(f"{router.router.url}/v2/models/mlp-c/infer", bad) == direct
    client = grpcclient.InferenceServerClient(router.router.grpc_address or "")
    item = grpcclient.InferInput("input", [1, 3], "FP32")
    item.set_data_from_numpy(np.ones((1, 3), np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("mlp-c", [item])
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert client.get_model_metadata("mlp-b").name == "mlp-b"
    assert client.get_model_config("mlp-a").config.name == "mlp-a"
    assert client.is_server_ready() and client.is_model_ready("mlp-c")
    names = {row.name for row in client.get_model_repository_index().models}
    assert set(MODELS) <= names


def test_server_routes_speak_for_the_fleet(router: RouterThread) -> None:
    url = router.router.url
    assert _http_call(f"{url}/v2/health/live") == (200, {"live": True})
    assert _http_call(f"{url}/v2/health/ready") == (200, {"ready": True})
    assert _http_call(f"{url}/v2")[1]["name"] == "inferpack"
    stats = _http_call(f"{url}/v2/models/stats")[1]["model_stats"]
    assert sorted(row["name"] for row in stats) == ["mlp-a", "mlp-b", "mlp-b", "mlp-c", "slow"]
    status, body = _http_call(f"{url}/v2/repository/models/mlp-a/unload", {})
    assert status == 403 and "does not load or unload" in body["error"]


def test_stop_drains_requests_in_flight(fleet: list[Server]) -> None:
    """A router told to stop while a request runs answers it, then refuses new ones."""
    extra = RouterThread(RouterConfig(_table(fleet), http_port=0, grpc_port=0))
    body = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 4], "data": [1] * 4}]}
    url = f"{extra.router.url}/v2/models/slow/infer"
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(_http_call, url, body)
        _wait_outstanding(extra)
        extra.stop()
        assert pending.result(timeout=WAIT_S)[0] == 200
    with pytest.raises(urllib.error.URLError):
        _http_call(f"{extra.router.url}/v2/health/live")


def _wait_outstanding(router: RouterThread) -> None:
    """Until the router holds a request (by polling its counts on its own loop)."""

    async def held() -> None:
        while not any(router.router.picker.outstanding.values()):
            await asyncio.sleep(0.01)

    router.call(asyncio.wait_for(held(), WAIT_S))


def test_a_dead_backend_makes_only_its_models_unavailable(
    router: RouterThread, fleet: list[Server]
) -> None:
    """s1 (a replica of mlp-b) and s2 (the only host of mlp-c) stop: mlp-b and mlp-a keep
    working, mlp-c is 503 / UNAVAILABLE naming its server, the fleet is not ready."""
    for server in fleet[1:]:
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
    http = httpclient.InferenceServerClient(router.address)
    grpc_client = grpcclient.InferenceServerClient(router.router.grpc_address or "")
    data = np.ones((1, 16), np.float32)
    for _ in range(4):  # both protocols, several times: each replica's turn comes
        assert _rest(http, "mlp-b", data, True, "b")[0] == "mlp-b"
        assert _grpc(grpc_client, "mlp-b", data, "b")[0] == "mlp-b"
        assert _grpc(grpc_client, "mlp-a", data, "a")[0] == "mlp-a"
    status, body = _http_call(f"{router.router.url}/v2/models/mlp-c/infer", _tiny_body())
    assert status == 503 and "backend s2 at http://127.0.0.1:" in body["error"]
    with pytest.raises(InferenceServerException) as caught:
        _grpc(grpc_client, "mlp-c", data, "c")
    assert caught.value.status() == "StatusCode.UNAVAILABLE"
    assert "backend s2 at 127.0.0.1:" in (caught.value.message() or "")
    assert _http_call(f"{router.router.url}/v2/health/ready") == (503, {"ready": False})
    assert not grpc_client.is_server_ready()


def _tiny_body() -> dict[str, Any]:
    return {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [0.5] * 16}]}


def test_the_router_observes_demand_per_model(fleet: list[Server], tmp_path: Path) -> None:
    """Inference through REST and gRPC is counted per model (metadata calls are not), and
    exported as Prometheus gauges and as the planner's demand CSV, kinds from the plan."""
    from inferpack.plan.formats import read_demand
    from inferpack.router.rest import METER

    kinds = {model: f"kind-of-{model}" for model in MODELS}
    config = RouterConfig(
        _table(fleet), kinds=kinds, planned={MODELS[0]: 12.5}, http_port=0, grpc_port=0
    )
    thread = RouterThread(config)
    try:
        data = np.ones((1, 16), np.float32)
        http = httpclient.InferenceServerClient(thread.address)
        grpc_client = grpcclient.InferenceServerClient(thread.router.grpc_address or "")
        for i in range(12):
            _rest(http, MODELS[0], data, binary=i % 2 == 0, request_id=str(i))
        for i in range(6):
            _grpc(grpc_client, MODELS[1], data, request_id=str(i))
        assert http.get_model_metadata(MODELS[0])["name"] == MODELS[0]  # not demand
        observed = {r.model: r for r in thread.router.runner.app[METER].snapshot()}
        assert {m: r.requests for m, r in observed.items()} == {MODELS[0]: 12, MODELS[1]: 6}
        assert all(r.errors == 0 and r.p90_ms is not None for r in observed.values())
        with urllib.request.urlopen(f"http://{thread.address}/metrics", timeout=30) as answer:
            text = answer.read().decode()
        assert f'inferpack_router_model_rps{{model="{MODELS[0]}"}}' in text
        with urllib.request.urlopen(
            f"http://{thread.address}/fleet/demand.csv", timeout=30
        ) as answer:
            (tmp_path / "demand.csv").write_bytes(answer.read())
        rows = {d.model: d for d in read_demand(tmp_path / "demand.csv")}
        assert rows[MODELS[1]].kind == f"kind-of-{MODELS[1]}" and rows[MODELS[1]].rps > 0
        status, view = _http_call(f"http://{thread.address}/fleet")
        assert status == 200
        servers = {s["name"]: (s["state"], s["in_flight"]) for s in view["servers"]}
        assert set(servers) == {server.name for server in fleet} and servers["s0"] == ("up", 0)
        assert all(state in {"up", "down"} and not busy for state, busy in servers.values())
        by_model = {m["model"]: m for m in view["models"]}
        assert by_model[MODELS[0]]["planned_rps"] == 12.5
        assert (
            by_model[MODELS[0]]["observed_rps"] > 0 and by_model[MODELS[2]]["planned_rps"] is None
        )
        assert sorted(by_model["mlp-b"]["servers"]) == ["s0", "s1"]
        assert view["controller"] is None  # no deploy --follow beside this router
    finally:
        thread.stop()
