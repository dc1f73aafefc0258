"""Opening listeners: the one place the server and the router bind their ports.

- A port is never shared. grpcio sets SO_REUSEPORT unless told not to, so a second process
  asking for a port already served would start and the kernel would split connections
  between the two (clients reach the wrong server). Every gRPC server is made here with
  ``grpc.so_reuseport`` 0 and every HTTP site with ``reuse_port`` False.
- A port that cannot be bound is a ListenError: one line naming the protocol, address and
  reason. Both ports are probed with a plain socket before anything runs: grpc core logs
  its own bind failure to stderr and raises without the cause, and an HTTP port found
  taken after the app started would leave model loads to undo.
- An HTTP handler is cancelled when its client disconnects (``handler_cancellation``), so
  a request given up on leaves the batcher's queue instead of running for nobody.
"""

from __future__ import annotations

import errno
import socket
from dataclasses import dataclass
from typing import Any

import grpc
from aiohttp import web

from inferpack.errors import ListenError

# Connections the kernel queues before the server accepts them (a burst of clients).
HTTP_BACKLOG = 1024
MAX_PORT = 65535


def grpc_server(max_receive_bytes: int) -> grpc.aio.Server:
    """A grpc.aio server that never shares its port; messages up to ``max_receive_bytes``.

    No interceptors: each one runs on every call (see grpc_service.InferenceServicer)."""
    return grpc.aio.server(
        options=[
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", max_receive_bytes),
            ("grpc.max_send_message_length", -1),
        ],
    )


def bind_grpc(server: grpc.aio.Server, host: str, port: int) -> int:
    """Bind ``server`` to host:port (0 picks a free port); the port bound."""
    check_port(host, port, "gRPC")
    try:
        return int(server.add_insecure_port(_where(host, port)))
    except RuntimeError:  # grpc names no cause: a race with another process, most likely
        raise ListenError(f"cannot listen for gRPC on {_where(host, port)}") from None


@dataclass
class Listeners:
    """An app listening on HTTP, and its gRPC server if it has one, at the bound ports."""

    runner: web.AppRunner
    host: str
    http_port: int
    grpc_server: grpc.aio.Server | None
    grpc_port: int | None


async def open_listeners(
    app: web.Application,
    host: str,
    http_port: int,
    shutdown_timeout_s: float,
    *,
    grpc_server: grpc.aio.Server | None = None,
    grpc_port: int = 0,
) -> Listeners:
    """Check the HTTP port and bind gRPC's before anything runs, then set the app up and
    start both. A port that cannot be bound is a ListenError, with nothing left running."""
    check_port(host, http_port, "HTTP")
    bound_grpc = None if grpc_server is None else bind_grpc(grpc_server, host, grpc_port)
    runner = http_runner(app, shutdown_timeout_s)
    await runner.setup()
    try:
        bound_host, bound_http = await start_http(runner, host, http_port)
        if grpc_server is not None:
            await grpc_server.start()
    except BaseException:
        if grpc_server is not None:
            await grpc_server.stop(None)
        await runner.cleanup()
        raise
    return Listeners(runner, bound_host, bound_http, grpc_server, bound_grpc)


def http_runner(app: web.Application, shutdown_timeout_s: float) -> web.AppRunner:
    """The app's runner: handlers cancelled on disconnect, no access log."""
    return web.AppRunner(
        app, access_log=None, shutdown_timeout=shutdown_timeout_s, handler_cancellation=True
    )


async def start_http(runner: web.AppRunner, host: str, port: int) -> tuple[str, int]:
    """Listen for HTTP on host:port with ``runner`` (set up); the address bound."""
    site = web.TCPSite(runner, host, port, backlog=HTTP_BACKLOG, reuse_port=False)
    try:
        await site.start()
    except OSError as error:
        raise ListenError(_refusal("HTTP", host, port, error)) from None
    bound_host, bound_port = runner.addresses[0][:2]
    return str(bound_host), int(bound_port)


def check_port(host: str, port: int, protocol: str) -> None:
    """ListenError if a plain socket cannot bind host:port as a listener would: a start-up
    checks its ports before it starts anything that would have to be undone."""
    if not 0 <= port <= MAX_PORT:  # grpc would take -1 as 65535
        where = _where(host, port)
        raise ListenError(f"cannot listen for {protocol} on {where}: not a port (0 to {MAX_PORT})")
    try:
        # "" is every interface, as for the listeners (asyncio and grpc alike)
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except OSError as error:
        raise ListenError(_refusal(protocol, host, port, error)) from None
    failures = [error for error in map(_bind_error, addresses) if error is not None]
    in_use = [error for error in failures if error.errno == errno.EADDRINUSE]
    # A port in use anywhere is refused; another failure only if no address can be bound
    # (a name such as localhost may resolve to an IPv6 address this host lacks).
    if in_use or (failures and len(failures) == len(addresses)):
        raise ListenError(_refusal(protocol, host, port, (in_use or failures)[0]))


def _bind_error(address_info: tuple[Any, ...]) -> OSError | None:
    """Why a listener could not bind this getaddrinfo() address (None: it could)."""
    family, kind, proto, _, address = address_info
    try:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:  # as asyncio binds it: IPv6 only
                probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            probe.bind(address)
    except OSError as error:
        return error
    return None


def _refusal(protocol: str, host: str, port: int, error: OSError) -> str:
    if error.errno == errno.EADDRINUSE:
        return f"cannot listen for {protocol} on {_where(host, port)}: port {port} is in use"
    reason = error.strerror or str(error)
    return f"cannot listen for {protocol} on {_where(host, port)}: {reason}"


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
