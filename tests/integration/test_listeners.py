"""Listeners: a port is never shared, a taken one is refused with one line, and a server is
ready only once every listener is up.

grpcio shares a port (SO_REUSEPORT) unless told not to: a second server on a served gRPC
port would start and the kernel would split connections between the two. Here the second
one, a real ``inferpack serve`` (or the router of ``deploy --target local``), must exit 1
with one line of stderr naming the port, whoever holds it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from inferpack.config import ServerConfig
from inferpack.protocol.proto import inference_pb2 as pb
from inferpack.protocol.proto import inference_pb2_grpc as pb_grpc
from inferpack.repository.init import init_repository
from inferpack.server import start_server
from tests.helpers import ServerThread
from tests.integration.cli_server import inferpack
from tests.integration.test_deploy_local import _plan, _servers_of
from tests.integration.test_router import build_fleet_repo

EXIT_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("listeners")
    init_repository(root, ["tiny-mlp"], seed=0)
    return root


@pytest.fixture(scope="module")
def first(repo: Path) -> Iterator[ServerThread]:
    """The server already running: it holds an HTTP and a gRPC port."""
    thread = ServerThread(ServerConfig(str(repo), http_port=0, grpc_port=0)).start()
    yield thread
    thread.stop()


def run_until_exit(tmp_path: Path, args: list[str], started: str) -> tuple[int, str, str]:
    """Run ``inferpack ARGS`` until it exits; (exit code, stdout, stderr). Output printing
    ``started`` means it came up when it should have refused to: stopped, and the test
    fails. A narrow terminal (COLUMNS 40) shows that a refusal is one line however wide
    the screen."""
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    env = {**os.environ, "COLUMNS": "40", "TMPDIR": str(tmp_path)}
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(inferpack(*args), stdout=stdout, stderr=stderr, env=env)
    deadline = time.monotonic() + EXIT_TIMEOUT_S
    try:
        while process.poll() is None:
            output = out.read_text() + err.read_text()
            assert started not in " ".join(output.split()), f"it came up:\n{output}"
            assert time.monotonic() < deadline, f"neither exited nor started:\n{output}"
            time.sleep(0.1)
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=60)
    return process.returncode, out.read_text(), err.read_text()


def _assert_one_line_naming(stderr: str, port: int, protocol: str) -> None:
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert f"cannot listen for {protocol} on 127.0.0.1:{port}: port {port} is in use" in lines[0]


@pytest.mark.parametrize("protocol", ["HTTP", "gRPC"])
def test_a_second_server_on_a_served_port_exits_with_one_line(
    first: ServerThread, repo: Path, tmp_path: Path, protocol: str
) -> None:
    assert first.server is not None and first.server.grpc_port is not None
    taken = first.server.port if protocol == "HTTP" else first.server.grpc_port
    ports = ["--http-port", str(taken), "--grpc-port", "0"]
    if protocol == "gRPC":
        ports = ["--http-port", "0", "--grpc-port", str(taken)]
    args = ["serve", "--model-repository", str(repo), *ports]
    code, _, stderr = run_until_exit(tmp_path, args, started="listening on")
    assert code == 1, stderr
    _assert_one_line_naming(stderr, taken, protocol)


@pytest.fixture
def foreign_grpc_port() -> Iterator[int]:
    """A port served by another grpcio process as grpcio does by default: SO_REUSEPORT set,
    so the kernel would let any other SO_REUSEPORT socket share it."""
    server = grpc.server(ThreadPoolExecutor(max_workers=1))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield port
    server.stop(None)


def test_a_grpc_port_shared_by_its_holder_is_still_refused(
    foreign_grpc_port: int, repo: Path, tmp_path: Path
) -> None:
    args = ["serve", "--model-repository", str(repo), "--http-port", "0"]
    args += ["--grpc-port", str(foreign_grpc_port)]
    code, _, stderr = run_until_exit(tmp_path, args, started="listening on")
    assert code == 1, stderr
    _assert_one_line_naming(stderr, foreign_grpc_port, "gRPC")


def test_the_router_of_a_local_fleet_refuses_a_taken_port(
    foreign_grpc_port: int, tmp_path: Path
) -> None:
    """The fleet's servers start, the router cannot listen: exit 1, one line naming the
    router's port, and no server left running."""
    repo = build_fleet_repo(tmp_path / "fleet")
    plan = _plan(tmp_path / "plan.yaml", {"server-0": ("c5.2xlarge", ("mlp-a",))})
    args = ["deploy", str(plan), "--target", "local", "--model-repository", str(repo)]
    args += ["--router-http-port", "0", "--router-grpc-port", str(foreign_grpc_port)]
    args += ["--cpu-threads", "1"]
    code, stdout, stderr = run_until_exit(tmp_path, args, started="router listening")
    assert code == 1, stdout + stderr
    assert stderr.splitlines() == [
        f"error: router cannot listen for gRPC on 127.0.0.1:{foreign_grpc_port}: "
        f"port {foreign_grpc_port} is in use"
    ], stdout + stderr
    assert not _servers_of(repo), stdout + stderr


def _free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 right now (held together while picked)."""
    probes = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    ports = [int(probe.getsockname()[1]) for probe in probes]
    for probe in probes:
        probe.close()
    return ports


async def _ready_status(session: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with session.get(f"{url}/v2/health/ready") as answer:
            return answer.status
    except aiohttp.ClientConnectionError:
        return None


async def test_ready_only_once_every_listener_is_up(
    repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gRPC's start is held back: HTTP answers (live) but not ready, whatever the models do;
    once gRPC listens, the first 200 from /v2/health/ready means gRPC answers too."""
    release = asyncio.Event()
    original_start = grpc.aio._server.Server.start

    async def held_start(self: Any) -> None:
        await release.wait()
        await original_start(self)

    monkeypatch.setattr(grpc.aio._server.Server, "start", held_start)
    http_port, grpc_port = _free_ports(2)
    config = ServerConfig(str(repo), http_port=http_port, grpc_port=grpc_port)
    starting = asyncio.create_task(start_server(config))
    try:
        await _ready_only_with_grpc(f"127.0.0.1:{http_port}", f"127.0.0.1:{grpc_port}", release)
    finally:
        release.set()
        server = await starting
        await server.stop()


async def _ready_only_with_grpc(http: str, grpc_address: str, release: asyncio.Event) -> None:
    async with aiohttp.ClientSession() as session:
        seen: set[int | None] = set()
        # 2 s from the HTTP listener's first answer (however long it took to come up on this
        # host): long enough for tiny-mlp to load many times over (a few ms).
        deadline: float | None = None
        async with asyncio.timeout(60):
            while deadline is None or time.monotonic() < deadline:
                status = await _ready_status(session, f"http://{http}")
                seen.add(status)
                if status is not None and deadline is None:
                    deadline = time.monotonic() + 2.0
                await asyncio.sleep(0.02)
        assert 503 in seen and 200 not in seen, seen
        release.set()
        async with asyncio.timeout(60):
            while await _ready_status(session, f"http://{http}") != 200:
                await asyncio.sleep(0.01)
    async with grpc.aio.insecure_channel(grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        answer = await stub.ServerReady(pb.ServerReadyRequest(), timeout=10)
    assert answer.ready
