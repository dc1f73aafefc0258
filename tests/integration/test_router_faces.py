"""The router's REST face is the server's: the same route table and the same error
answers (one middleware, :mod:`inferpack.protocol.http_responses`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from inferpack.config import ServerConfig
from inferpack.repository.init import init_repository
from inferpack.router import Backend, RouterConfig, RoutingTable, RunningRouter, start_router
from inferpack.server import RunningServer, start_server

LIMIT_BYTES = 100


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RunningServer]:
    init_repository(tmp_path, ["tiny-mlp"], seed=0)
    config = ServerConfig(str(tmp_path), http_port=0, grpc_port=None, max_request_bytes=LIMIT_BYTES)
    running = await start_server(config)
    assert await running.wait_started()
    yield running
    await running.stop()


@pytest.fixture
async def router(server: RunningServer) -> AsyncIterator[RunningRouter]:
    table = RoutingTable({"tiny-mlp": [Backend("s0", server.url, "127.0.0.1:1")]})
    config = RouterConfig(table, http_port=0, grpc_port=None, max_request_bytes=LIMIT_BYTES)
    running = await start_router(config)
    yield running
    await running.stop()


def _routes(runner_app: object) -> set[tuple[str, str]]:
    from aiohttp import web

    assert isinstance(runner_app, web.Application)
    return {
        (route.method, route.resource.canonical)
        for route in runner_app.router.routes()
        if route.resource is not None and route.method != "HEAD"
    }


async def test_the_router_serves_every_route_of_the_server(
    server: RunningServer, router: RunningRouter
) -> None:
    # Both serve /metrics (the router: its observed demand); the router adds its CSV.
    router_routes = _routes(router.runner.app) - {("GET", "/fleet/demand.csv"), ("GET", "/fleet")}
    assert _routes(server.runner.app) == router_routes


async def test_a_body_over_the_limit_gets_the_servers_answer_from_the_router(
    server: RunningServer, router: RunningRouter
) -> None:
    body = b"{" + b" " * (4 * LIMIT_BYTES) + b"}"
    answers = []
    async with aiohttp.ClientSession() as session:
        for url in (server.url, router.url):
            # Chunked: no Content-Length, so the limit is found while reading.
            async def chunks() -> AsyncIterator[bytes]:
                yield body

            async with session.post(f"{url}/v2/models/tiny-mlp/infer", data=chunks()) as answer:
                answers.append((answer.status, await answer.json()))
    assert answers[0][0] == 413
    assert answers[0][1]["error"].startswith("request body")
    assert answers[1] == answers[0]
