"""Build the HTTP app around one Engine and run it: the ports open at once (live), models
load in the background, and /v2/health/ready turns 200 when every listener is up and every
model the server must serve is READY.

Start-up order: check the HTTP port and bind the gRPC one (a taken port stops the start
before anything runs), set up the app, listen on HTTP, start gRPC, then load models.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from aiohttp import web

from inferpack.config import ServerConfig
from inferpack.errors import InferpackError
from inferpack.processing.image import ignore_pillow_warnings
from inferpack.protocol.access import (
    TOKEN_FLAG,
    RepositoryAccess,
    is_loopback,
)
from inferpack.protocol.grpc_service import create_grpc_server
from inferpack.protocol.http_responses import error_middleware
from inferpack.protocol.listen import open_listeners
from inferpack.protocol.rest import (
    ENGINE,
    INFLIGHT_BYTES,
    MAX_REQUEST_BYTES,
    REPOSITORY_ACCESS,
    add_routes,
)
from inferpack.repository.remote import open_repository
from inferpack.runtime import Engine
from inferpack.runtime.inflight import InflightBytes

log = logging.getLogger(__name__)
# Seconds a stopping server gives in-flight requests before closing connections.
SHUTDOWN_TIMEOUT_S = 10.0


def create_app(engine: Engine, config: ServerConfig) -> web.Application:
    """The REST app over ``engine``; the engine stops with it (start_server starts it)."""
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
    """The engine stops (models drained and closed) when the app stops; start_server
    starts it once every listener is up."""
    yield
    await app[ENGINE].stop()


@dataclass
class RunningServer:
    """A started server; ``port`` is the bound port (useful with port 0)."""

    runner: web.AppRunner
    engine: Engine
    host: str
    port: int
    grpc_server: grpc.aio.Server | None = None
    grpc_port: int | None = None
    loading: asyncio.Task[None] | None = None  # the startup loads (engine.start)

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
        """Not ready from now on; stop gRPC, the startup loads, then drain HTTP and the
        engine (the app's cleanup)."""
        self.engine.listening = False
        if self.grpc_server is not None:
            await self.grpc_server.stop(SHUTDOWN_TIMEOUT_S)
        if self.loading is not None:
            self.loading.cancel()
            # A failed start is the engine's startup_error, reported by the CLI.
            with contextlib.suppress(asyncio.CancelledError, InferpackError):
                await self.loading
        await self.runner.cleanup()


async def start_server(config: ServerConfig) -> RunningServer:
    """Listen on every port, then load the models in the background (see the module doc)."""
    ignore_pillow_warnings()  # once, before any decoding thread runs (processing/image.py)
    repository = open_repository(str(config.model_repository), config.cache_dir)
    engine = Engine(repository, config.control)
    app = create_app(engine, config)
    grpc_server = None if config.grpc_port is None else _grpc_server(app, engine, config)
    listeners = await open_listeners(
        app,
        config.host,
        config.http_port,
        SHUTDOWN_TIMEOUT_S,
        grpc_server=grpc_server,
        grpc_port=config.grpc_port or 0,
    )
    server = RunningServer(listeners.runner, engine, listeners.host, listeners.http_port)
    server.grpc_server, server.grpc_port = grpc_server, listeners.grpc_port
    engine.listening = True
    server.loading = asyncio.create_task(engine.start(), name="inferpack:load-models")
    return server


def _grpc_server(app: web.Application, engine: Engine, config: ServerConfig) -> grpc.aio.Server:
    return create_grpc_server(
        engine, config.max_request_bytes, app[REPOSITORY_ACCESS], inflight=app[INFLIGHT_BYTES]
    )
