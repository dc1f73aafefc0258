"""Fleet-wide calls through the router with one hung backend: a socket that accepts
connections and never answers. ServerReady, ServerMetadata, RepositoryIndex and the
statistics of all models answer within the router's probe timeout, from the servers that
answered, and name the one that did not."""

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import grpc
import pytest

from inferpack.config import ServerConfig
from inferpack.protocol.proto import inference_pb2 as pb
from inferpack.protocol.proto import inference_pb2_grpc as pb_grpc
from inferpack.repository.init import init_repository
from inferpack.router import Backend, RouterConfig, RoutingTable, RunningRouter, start_router
from inferpack.router.rest import PROBE_TIMEOUT_S as DEFAULT_PROBE_TIMEOUT_S
from inferpack.server import RunningServer, start_server

# Long enough that the good server (same process, same loop) always answers within it, on a
# slow busy host too: the silent one is what must miss it.
PROBE_TIMEOUT_S = 2.0
UNANSWERED = f"no answer in {PROBE_TIMEOUT_S:g} s"
# What a fleet-wide call may take: the probe timeout plus slack for a busy machine. A call
# without a deadline would hang until the client's own (CLIENT_DEADLINE_S).
# Below the router's default probe timeout (5 s), so a call that ignored the configured one
# fails here.
ANSWER_WITHIN_S = 4.5
assert ANSWER_WITHIN_S < DEFAULT_PROBE_TIMEOUT_S
CLIENT_DEADLINE_S = 20.0


@pytest.fixture
def hung() -> Iterator[str]:
    """host:port of a listener the kernel completes connections for, never read."""
    with socket.create_server(("127.0.0.1", 0), backlog=16) as listener:
        yield f"127.0.0.1:{listener.getsockname()[1]}"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    init_repository(tmp_path, ["tiny-mlp"], seed=0)
    running = await start_server(ServerConfig(str(tmp_path), http_port=0, grpc_port=0))
    assert await running.wait_started()
    yield running
    await running.stop()


@pytest.fixture
async def router(server: RunningServer, hung: str) -> AsyncIterator[RunningRouter]:
    good = Backend("good", server.url, server.grpc_address)
    silent = Backend("silent", f"http://{hung}", hung)
    table = RoutingTable({"tiny-mlp": [good], "elsewhere": [silent]})
    config = RouterConfig(table, http_port=0, grpc_port=0, probe_timeout_s=PROBE_TIMEOUT_S)
    running = await start_router(config)
    yield running
    await running.stop()


async def _call(router: RunningRouter, method: str, request: Any) -> tuple[Any, dict[str, str]]:
    """(answer, trailing metadata) of one call, timed: it must not wait for the hung one."""
    assert router.grpc_address is not None
    async with grpc.aio.insecure_channel(router.grpc_address) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)  # type: ignore[no-untyped-call]
        started = time.monotonic()
        call = getattr(stub, method)(request, timeout=CLIENT_DEADLINE_S)
        answer = await call
        trailing = {key: value for key, value in (await call.trailing_metadata() or ())}
    assert time.monotonic() - started < ANSWER_WITHIN_S
    return answer, trailing


def _names_silent(trailing: dict[str, str], hung: str) -> None:
    assert trailing["inferpack-unanswered"] == f"silent at {hung}: {UNANSWERED}"


async def test_server_ready_is_false_naming_the_silent_backend(
    router: RunningRouter, hung: str
) -> None:
    answer, trailing = await _call(router, "ServerReady", pb.ServerReadyRequest())
    assert not answer.ready
    _names_silent(trailing, hung)


async def test_server_metadata_comes_from_a_backend_that_answered(
    router: RunningRouter, hung: str
) -> None:
    answer, trailing = await _call(router, "ServerMetadata", pb.ServerMetadataRequest())
    assert answer.name == "inferpack" and "statistics" in answer.extensions
    _names_silent(trailing, hung)


async def test_repository_index_lists_the_silent_backends_models_unavailable(
    router: RunningRouter, hung: str
) -> None:
    answer, trailing = await _call(router, "RepositoryIndex", pb.RepositoryIndexRequest())
    rows = {row.name: (row.state, row.reason) for row in answer.models}
    assert rows == {
        "tiny-mlp": ("READY", ""),
        "elsewhere": ("UNAVAILABLE", f"server silent at {hung}: {UNANSWERED}"),
    }
    _names_silent(trailing, hung)
    ready_only = pb.RepositoryIndexRequest(ready=True)
    answer, _ = await _call(router, "RepositoryIndex", ready_only)
    assert [row.name for row in answer.models] == ["tiny-mlp"]


async def test_statistics_of_all_models_come_from_the_backends_that_answered(
    router: RunningRouter, hung: str
) -> None:
    answer, trailing = await _call(router, "ModelStatistics", pb.ModelStatisticsRequest())
    assert [row.name for row in answer.model_stats] == ["tiny-mlp"]
    _names_silent(trailing, hung)


async def test_rest_readiness_is_bounded_by_the_same_timeout(router: RunningRouter) -> None:
    started = time.monotonic()
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"{router.url}/v2/health/ready") as answer,
    ):
        assert answer.status == 503
    assert time.monotonic() - started < ANSWER_WITHIN_S
