"""Start and stop the router: one address, REST and gRPC, in front of a fleet of servers.

The router runs on the caller's event loop and holds no model: a routing table, a picker,
one pooled aiohttp session (keep-alive connections to every backend) and one gRPC channel
per backend. ``stop()`` drains: the listening sockets close first, then in-flight requests
get up to ``drain_timeout_s`` to be answered by their backends.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
import grpc
from aiohttp import web

from inferpack.config.server_config import DEFAULT_MAX_REQUEST_BYTES
from inferpack.router.grpc_proxy import GrpcForwarder, RouterService
from inferpack.router.rest import PICKER, SESSION, add_routes, error_middleware
from inferpack.router.table import Picker, RoutingTable

# Connections kept open to each backend: enough for the concurrency of many clients
# without one request waiting on another's socket; the backends queue the rest themselves.
CONNECTIONS_PER_BACKEND = 256
DRAIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RouterConfig:
    """Where the router listens and what it may accept; grpc_port None turns gRPC off."""

    table: RoutingTable
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int | None = 8001
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES  # the servers' default limit
    drain_timeout_s: float = DRAIN_TIMEOUT_S
    connections_per_backend: int = CONNECTIONS_PER_BACKEND


@dataclass
class RunningRouter:
    """A started router; ``http_port`` / ``grpc_port`` are the bound ports (useful with 0)."""

    config: RouterConfig
    picker: Picker
    runner: web.AppRunner
    session: aiohttp.ClientSession
    forwarder: GrpcForwarder
    http_port: int
    grpc_server: grpc.aio.Server | None = None
    grpc_port: int | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.http_port}"

    @property
    def grpc_address(self) -> str | None:
        return None if self.grpc_port is None else f"{self.config.host}:{self.grpc_port}"

    async def stop(self) -> None:
        """Stop accepting, let in-flight requests finish (bounded), close backend links."""
        if self._stopped:
            return
        self._stopped = True
        grace = self.config.drain_timeout_s
        stopping = [self.runner.cleanup()]
        if self.grpc_server is not None:
            stopping.append(self.grpc_server.stop(grace))
        await asyncio.gather(*stopping)
        await self.session.close()
        await self.forwarder.close()


def _session(config: RouterConfig) -> aiohttp.ClientSession:
    """Bytes pass unchanged both ways: no decompression, no timeout beyond the client's."""
    connector = aiohttp.TCPConnector(
        limit=0, limit_per_host=config.connections_per_backend, keepalive_timeout=60
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=None),
        skip_auto_headers=("User-Agent", "Content-Type", "Accept-Encoding"),
    )


async def _start_grpc(
    config: RouterConfig, forwarder: GrpcForwarder
) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", config.max_request_bytes),
            ("grpc.max_send_message_length", -1),
        ]
    )
    server.add_generic_rpc_handlers((RouterService(forwarder).handler(),))
    port = server.add_insecure_port(f"{config.host}:{config.grpc_port}")
    await server.start()
    return server, port


async def start_router(config: RouterConfig) -> RunningRouter:
    """Bind both ports and start forwarding; port 0 picks a free one."""
    picker = Picker(config.table)
    session = _session(config)
    app = web.Application(client_max_size=config.max_request_bytes, middlewares=[error_middleware])
    app[PICKER] = picker
    app[SESSION] = session
    add_routes(app)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=config.drain_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.http_port, backlog=1024)
    await site.start()
    http_port = int(runner.addresses[0][1])
    forwarder = GrpcForwarder(picker)
    router = RunningRouter(config, picker, runner, session, forwarder, http_port)
    if config.grpc_port is not None:
        router.grpc_server, router.grpc_port = await _start_grpc(config, forwarder)
    return router
