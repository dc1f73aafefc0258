"""Build the HTTP app around one Engine and run it: the port opens at once (live), models
load in the background, and /v2/health/ready turns 200 when every model is READY."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from aiohttp import web

from inferpack.config import ServerConfig
from inferpack.processing.image import ignore_pillow_warnings
from inferpack.protocol.access import (
    TOKEN_FLAG,
    RepositoryAccess,
    RepositoryAccessInterceptor,
    is_loopback,
)
from inferpack.protocol.grpc_service import create_grpc_server
from inferpack.protocol.rest import (
    ENGINE,
    INFLIGHT_BYTES,
    MAX_REQUEST_BYTES,
    REPOSITORY_ACCESS,
    add_routes,
    error_middleware,
)
from inferpack.repository.remote import open_repository
from inferpack.runtime import Engine
from inferpack.runtime.inflight import InflightBytes

log = logging.getLogger(__name__)
# Seconds a stopping server gives in-flight requests before closing connections.
SHUTDOWN_TIMEOUT_S = 10.0


def create_app(engine: Engine, config: ServerConfig) -> web.Application:
    app = web.Application(client_max_size=config.max_request_bytes, middlewares=[error_middleware])
    app[ENGINE] = engine
    app[MAX_REQUEST_BYTES] = config.max_request_bytes
    app[INFLIGHT_BYTES] = InflightBytes(config.max_inflight_bytes)
    app[REPOSITORY_ACCESS] = _repository_access(config)
    add_routes(app)
    app.cleanup_ctx.append(_engine_lifecycle)
    return app


def _repository_access(config: ServerConfig) -> RepositoryAccess:
    access = RepositoryAccess(config.host, config.repository_api_token)
    if access.token is None and not is_loopback(access.host):
        log.warning(
            "repository API (index, load, unload) refused on %s: no %s", access.host, TOKEN_FLAG
        )
    return access


async def _engine_lifecycle(app: web.Application) -> AsyncIterator[None]:
    engine = app[ENGINE]
    loading = asyncio.create_task(engine.start(), name="inferpack:load-models")
    yield
    if not loading.done():
        loading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loading
    await engine.stop()


@dataclass
class RunningServer:
    """A started server; ``port`` is the bound port (useful with port 0)."""

    runner: web.AppRunner
    engine: Engine
    host: str
    port: int
    grpc_server: grpc.aio.Server | None = None
    grpc_port: int | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def wait_started(self, timeout_s: float = 600.0) -> bool:
        """Wait until every model was tried; return whether the server is ready."""
        async with asyncio.timeout(timeout_s):
            while not self.engine.started:
                await asyncio.sleep(0.02)
        return self.engine.ready()

    @property
    def grpc_address(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    async def stop(self) -> None:
        if self.grpc_server is not None:
            await self.grpc_server.stop(SHUTDOWN_TIMEOUT_S)
        await self.runner.cleanup()


async def start_server(config: ServerConfig) -> RunningServer:
    ignore_pillow_warnings()  # once, before any decoding thread runs (processing/image.py)
    repository = open_repository(str(config.model_repository), config.cache_dir)
    engine = Engine(repository, config.control)
    app = create_app(engine, config)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.http_port, backlog=1024)
    await site.start()
    host, port = runner.addresses[0][:2]
    server = RunningServer(runner, engine, str(host), int(port))
    if config.grpc_port is not None:
        access = RepositoryAccessInterceptor(app[REPOSITORY_ACCESS])
        server.grpc_server = create_grpc_server(
            engine, config.max_request_bytes, [access], inflight=app[INFLIGHT_BYTES]
        )
        server.grpc_port = server.grpc_server.add_insecure_port(f"{config.host}:{config.grpc_port}")
        await server.grpc_server.start()
    return server
