"""Strict readiness under explicit and lru control: a server is ready only when every model
it was asked to load at start (``--load-model``) is READY, over REST and gRPC alike, and a
local fleet refuses to route to a server whose startup model failed to load."""

from __future__ import annotations

import shutil
from pathlib import Path

import aiohttp
import grpc
import pytest

from inferpack.config import ServerConfig
from inferpack.config.control import ControlConfig, ControlMode
from inferpack.protocol.proto import inference_pb2 as pb
from inferpack.protocol.proto import inference_pb2_grpc as pb_grpc
from inferpack.repository.init import init_repository
from inferpack.server import RunningServer, start_server
from tests.helpers import edit_model
from tests.integration.test_deploy_local import _plan, _servers_of
from tests.integration.test_listeners import run_until_exit
from tests.integration.test_router import build_fleet_repo

BROKEN_WEIGHTS = b"not safetensors at all"


def _break(repo: Path, source: str, name: str) -> Path:
    """A copy of ``source`` named ``name`` whose weights cannot be read: its load fails."""
    broken = edit_model(repo, source, name)
    (broken / "1" / "model.safetensors").write_bytes(BROKEN_WEIGHTS)
    return broken


async def _readiness(server: RunningServer) -> tuple[int, bool]:
    """(/v2/health/ready's status, gRPC ServerReady's answer)."""
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{server.url}/v2/health/ready") as answer,
    ):
        status = answer.status
    async with grpc.aio.insecure_channel(server.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        ready = (await stub.ServerReady(pb.ServerReadyRequest(), timeout=10)).ready
    return status, ready


async def _post(server: RunningServer, path: str) -> int:
    async with aiohttp.ClientSession() as session, session.post(f"{server.url}{path}") as answer:
        return answer.status


async def _start(repo: Path, mode: ControlMode, *startup: str) -> RunningServer:
    control = ControlConfig(mode, startup_models=startup)
    server = await start_server(ServerConfig(str(repo), http_port=0, grpc_port=0, control=control))
    await server.wait_started()
    return server


@pytest.mark.parametrize("mode", [ControlMode.EXPLICIT, ControlMode.LRU])
async def test_a_failed_startup_model_keeps_the_server_not_ready_until_it_loads(
    tmp_path: Path, mode: ControlMode
) -> None:
    init_repository(tmp_path, ["tiny-mlp"], seed=0)
    broken = _break(tmp_path, "tiny-mlp", "broken")
    server = await _start(tmp_path, mode, "tiny-mlp", "broken")
    try:
        assert await _readiness(server) == (503, False)
        assert await _post(server, "/v2/repository/models/broken/load") == 503
        assert await _readiness(server) == (503, False)
        shutil.copy(tmp_path / "tiny-mlp" / "1" / "model.safetensors", broken / "1")
        assert await _post(server, "/v2/repository/models/broken/load") == 200
        assert await _readiness(server) == (200, True)
    finally:
        await server.stop()


async def test_unloading_a_failed_startup_model_makes_the_server_ready(tmp_path: Path) -> None:
    """The operator gave up on the model: the server serves what it was asked to."""
    init_repository(tmp_path, ["tiny-mlp"], seed=0)
    _break(tmp_path, "tiny-mlp", "broken")
    server = await _start(tmp_path, ControlMode.EXPLICIT, "tiny-mlp", "broken")
    try:
        assert await _readiness(server) == (503, False)
        assert await _post(server, "/v2/repository/models/broken/unload") == 200
        assert await _readiness(server) == (200, True)
    finally:
        await server.stop()


async def test_startup_models_loaded_then_unloaded_leave_the_server_ready(tmp_path: Path) -> None:
    init_repository(tmp_path, ["tiny-mlp"], seed=0)
    server = await _start(tmp_path, ControlMode.EXPLICIT, "tiny-mlp")
    try:
        assert await _readiness(server) == (200, True)
        assert await _post(server, "/v2/repository/models/tiny-mlp/unload") == 200
        assert await _readiness(server) == (200, True)
    finally:
        await server.stop()


def test_a_local_fleet_stops_when_a_startup_model_fails(tmp_path: Path) -> None:
    """server-1's one model cannot load: the fleet names that server and stops them all
    instead of routing to it."""
    repo = build_fleet_repo(tmp_path / "fleet")
    _break(repo, "mlp-a", "broken")
    placement = {"server-0": ("c5.2xlarge", ("mlp-a",)), "server-1": ("c5.2xlarge", ("broken",))}
    plan = _plan(tmp_path / "plan.yaml", placement)
    args = ["deploy", str(plan), "--target", "local", "--model-repository", str(repo)]
    args += ["--router-http-port", "0", "--router-grpc-port", "-1", "--cpu-threads", "1"]
    code, stdout, stderr = run_until_exit(tmp_path, args, started="router listening")
    output = " ".join((stdout + stderr).split())
    assert code == 1, output
    assert "server server-1 is live but not ready (a model failed to load)" in output, output
    assert not _servers_of(repo), output
