"""Start and stop the router: one address, REST and gRPC, in front of a fleet of servers.

The router runs on the caller's event loop and holds no model: a routing table, a picker,
one pooled aiohttp session (keep-alive connections to every backend) and one gRPC channel
per backend. ``stop()`` drains: the listening sockets close first, then in-flight requests
get up to ``drain_timeout_s`` to be answered by their backends.

Its listeners are the server's (:mod:`inferpack.protocol.listen`): ports never shared, a
taken one refused with one line before anything starts, and a REST request whose client
disconnects cancelled, which closes its connection to the backend (where it is dropped
from the queue in turn).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import grpc
from aiohttp import web

from inferpack.config.server_config import DEFAULT_MAX_REQUEST_BYTES
from inferpack.protocol import listen
from inferpack.protocol.http_responses import MAX_REQUEST_BYTES, error_middleware
from inferpack.router.demand import WINDOW_S, DemandMeter
from inferpack.router.grpc_proxy import GrpcForwarder, RouterService
from inferpack.router.rest import (
    CONTROLLER,
    METER,
    PICKER,
    PLANNED,
    PROBE_TIMEOUT,
    PROBE_TIMEOUT_S,
    SESSION,
    add_routes,
)
from inferpack.router.table import Backend, Picker, RoutingTable

# Connections kept open to each backend: enough for the concurrency of many clients
# without one request waiting on another's socket; the backends queue the rest themselves.
CONNECTIONS_PER_BACKEND = 256
DRAIN_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class RouterConfig:
    """Where the router listens and what it may accept; grpc_port None turns gRPC off."""

    table: RoutingTable
    kinds: Mapping[str, str] = field(default_factory=dict)  # model -> kind, for demand CSV
    planned: Mapping[str, float] = field(default_factory=dict)  # model -> planned rps
    demand_window_s: float = WINDOW_S
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int | None = 8001
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES  # the servers' default limit
    drain_timeout_s: float = DRAIN_TIMEOUT_S
    connections_per_backend: int = CONNECTIONS_PER_BACKEND
    # Fleet-wide calls (ready, metadata, index, all statistics) wait this long per backend.
    probe_timeout_s: float = PROBE_TIMEOUT_S


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
    planned: dict[str, float] = field(default_factory=dict)  # the app's, shown on /fleet
    meter: DemandMeter = field(default_factory=DemandMeter)  # the observed demand
    controller: dict[str, Any] = field(default_factory=dict)  # shown on /fleet
    _stopped: bool = field(default=False, repr=False)

    def set_routes(
        self, table: RoutingTable, planned: Mapping[str, float], kinds: Mapping[str, str]
    ) -> None:
        """Route by ``table`` from the next request on (REST and gRPC alike); /fleet and the
        demand CSV show ``planned`` rates and ``kinds`` from now on."""
        self.picker.set_table(table)
        self.planned.clear()
        self.planned.update(planned)
        self.meter.kinds.update(kinds)

    async def forget(self, backend: Backend) -> None:
        """A backend left the fleet (after it drained): close the router's links to it."""
        await self.forwarder.forget(backend)

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


async def start_router(config: RouterConfig) -> RunningRouter:
    """Bind both ports and start forwarding; port 0 picks a free one. A port that cannot be
    bound is a ListenError, raised before anything started."""
    picker = Picker(config.table)
    meter = DemandMeter(config.kinds, config.demand_window_s)
    forwarder = GrpcForwarder(picker, config.probe_timeout_s, meter)
    grpc_server = None
    if config.grpc_port is not None:
        grpc_server = listen.grpc_server(config.max_request_bytes)
        grpc_server.add_generic_rpc_handlers((RouterService(forwarder).handler(),))
    session = _session(config)
    app = web.Application(client_max_size=config.max_request_bytes, middlewares=[error_middleware])
    app[PICKER] = picker
    app[METER] = meter
    planned = dict(config.planned)
    app[PLANNED] = planned
    controller: dict[str, Any] = {}
    app[CONTROLLER] = controller
    app[SESSION] = session
    app[MAX_REQUEST_BYTES] = config.max_request_bytes
    app[PROBE_TIMEOUT] = config.probe_timeout_s
    add_routes(app)
    try:
        listeners = await listen.open_listeners(
            app,
            config.host,
            config.http_port,
            config.drain_timeout_s,
            grpc_server=grpc_server,
            grpc_port=config.grpc_port or 0,
        )
    except BaseException:
        await session.close()
        await forwarder.close()
        raise
    http_port = listeners.http_port
    router = RunningRouter(
        config,
        picker,
        listeners.runner,
        session,
        forwarder,
        http_port,
        planned=planned,
        meter=meter,
        controller=controller,
    )
    router.grpc_server, router.grpc_port = grpc_server, listeners.grpc_port
    return router
