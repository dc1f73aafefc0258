"""A server bound off loopback without a token refuses the repository API (REST and gRPC)
and serves everything else. (With a token, over the CLI: test_cli.py.)"""

from __future__ import annotations

from collections.abc import Iterator

import aiohttp
import grpc
import pytest

from inferpack.config import ServerConfig
from inferpack.config.control import ControlConfig, ControlMode
from inferpack.protocol.proto import inference_pb2 as pb
from inferpack.protocol.proto import inference_pb2_grpc as pb_grpc
from tests.helpers import ServerThread

TINY = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 16], "data": [1.0] * 16}]}


@pytest.fixture(scope="module")
def public(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    from inferpack.repository.init import init_repository

    root = tmp_path_factory.mktemp("public-repo")
    init_repository(root, ["tiny-mlp"], seed=0)
    control = ControlConfig(ControlMode.EXPLICIT, startup_models=("tiny-mlp",))
    config = ServerConfig(str(root), host="0.0.0.0", http_port=0, grpc_port=0, control=control)
    thread = ServerThread(config).start()
    yield thread
    thread.stop()


def _local(address: str) -> str:
    return address.replace("0.0.0.0", "127.0.0.1")


async def test_rest_repository_api_is_refused_naming_the_flag(public: ServerThread) -> None:
    url = _local(public.url)
    async with aiohttp.ClientSession() as session:
        for path in ("index", "models/tiny-mlp/unload", "models/tiny-mlp/load"):
            headers = {"Authorization": "Bearer guess"}
            async with session.post(f"{url}/v2/repository/{path}", headers=headers) as response:
                assert response.status == 403, path
                assert "--repository-api-token" in (await response.json())["error"]
        async with session.post(f"{url}/v2/models/tiny-mlp/infer", json=TINY) as response:
            assert response.status == 200  # the unload was refused; inference is open


def test_grpc_repository_api_is_refused(public: ServerThread) -> None:
    with grpc.insecure_channel(_local(public.grpc_address)) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        calls = (
            (stub.RepositoryIndex, pb.RepositoryIndexRequest()),
            (stub.RepositoryModelLoad, pb.RepositoryModelLoadRequest(model_name="tiny-mlp")),
            (stub.RepositoryModelUnload, pb.RepositoryModelUnloadRequest(model_name="tiny-mlp")),
        )
        for method, request in calls:
            with pytest.raises(grpc.RpcError) as refused:
                method(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "--repository-api-token" in str(refused.value.details())
        ready = stub.ModelReady(pb.ModelReadyRequest(name="tiny-mlp"), timeout=10)
        assert ready.ready
