"""``inferpack deploy --target local``: a plan's servers as local processes behind a router.

    start every server (its ServerSpec's argv, on 127.0.0.1), output to a log file each
    wait until each is ready (a server that exits, or is not ready in time, stops them all)
    start the router on host:router ports, print the fleet, run until SIGINT or SIGTERM
    stop: router stops accepting and drains, then SIGTERM each server by PID (each drains
    its own requests), SIGKILL what is left after a timeout

The servers listen on loopback only: the router is the fleet's one address. A server that
dies while running is restarted on the same ports (bounded back-off: 1, 2, 4 ... 30 s
between failed tries); until it is ready again the router sends its models' requests to
their other replicas (requests it had in flight go to them too), and models without
another replica answer 503.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import re
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aiohttp

from inferpack.deploy.processes import ChildProcess, start_child, stop_children
from inferpack.deploy.spec import ServerSpec
from inferpack.errors import ConfigError, ListenError, UnavailableError
from inferpack.router import Backend, RouterConfig, RoutingTable, RunningRouter, start_router
from inferpack.router.demand import WINDOW_S
from inferpack.runtime.workers import fleet_cpu_threads

# Model loading can take minutes (large weights, first compile); a hung start must not
# wait forever either.
READY_TIMEOUT_S = 600.0
# A server drains for up to 10 s (SHUTDOWN_TIMEOUT_S) and then unloads; past this it is
# killed.
STOP_TIMEOUT_S = 30.0
# How often starting servers are polled, and how often a dead one is looked for.
POLL_S = 0.2
WATCH_S = 0.5
# Seconds between tries to restart a server whose restart failed, then the last forever.
RESTART_BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 16.0, 30.0)
SERVER_HOST = "127.0.0.1"
# Rich may wrap the line in a log file: any whitespace may be a line break.
_LISTENING = re.compile(r"listening\s+on\s+http://(\S+?):(\d+),\s+gRPC\s+on\s+(\S+?):(\d+)\s")
_NOT_READY = re.compile(r"live\s+but\s+not\s+ready")
Echo = Callable[[str], None]


@dataclass(frozen=True)
class LocalFleetConfig:
    """The local target's options; router_grpc_port -1 turns the router's gRPC off, port 0
    picks a free port, base_port 0 lets each server pick free ports."""

    host: str = "127.0.0.1"
    router_http_port: int = 8000
    router_grpc_port: int = 8001
    base_port: int = 0
    cpu_threads: int | None = None
    log_dir: Path | None = None
    ready_timeout_s: float = READY_TIMEOUT_S
    stop_timeout_s: float = STOP_TIMEOUT_S
    demand_window_s: float = WINDOW_S  # the router's window of observed demand


def _echo(line: str) -> None:
    print(line, flush=True)


def run_local_fleet(
    specs: Sequence[ServerSpec],
    *,
    host: str = "127.0.0.1",
    router_http_port: int = 8000,
    router_grpc_port: int = 8001,
    base_port: int = 0,
    cpu_threads: int | None = None,
    log_dir: Path | None = None,
    echo: Echo = _echo,
    companion: Companion | None = None,
    demand_window_s: float = WINDOW_S,
) -> int:
    """Run the fleet in the foreground until SIGINT/SIGTERM; the exit code (0: clean stop).

    The keywords are the CLI's flags (see LocalFleetConfig); ``companion`` runs beside
    the fleet once it is up (deploy --follow's controller)."""
    if not specs:
        raise ConfigError(["the plan has no servers: nothing to run"])
    config = LocalFleetConfig(
        host=host,
        router_http_port=router_http_port,
        router_grpc_port=router_grpc_port,
        base_port=base_port,
        cpu_threads=cpu_threads,
        log_dir=log_dir,
        demand_window_s=demand_window_s,
    )
    return asyncio.run(_run(list(specs), config, echo, companion))


def placed_specs(specs: Sequence[ServerSpec], config: LocalFleetConfig) -> list[ServerSpec]:
    """The specs on loopback with their ports (see :func:`place_spec`)."""
    threads = fleet_cpu_threads(len(specs))
    return [place_spec(spec, index, config, threads) for index, spec in enumerate(specs)]


def place_spec(
    spec: ServerSpec, index: int, config: LocalFleetConfig, default_threads: int
) -> ServerSpec:
    """The ``index``-th server on loopback: ports base_port + 2i (HTTP) and + 2i + 1
    (gRPC), or 0 (the server picks, and prints what it picked) when base_port is 0;
    --cpu-threads from the fleet's option, else the spec's, else ``default_threads``."""
    http_port = config.base_port + 2 * index if config.base_port else 0
    grpc_port = http_port + 1 if config.base_port else 0
    threads = config.cpu_threads or spec.cpu_threads or default_threads
    return replace(
        spec, host=SERVER_HOST, http_port=http_port, grpc_port=grpc_port, cpu_threads=threads
    )


def server_argv(spec: ServerSpec) -> list[str]:
    """The spec's serve command run by this interpreter (the servers share our environment)."""
    return [sys.executable, "-m", "inferpack", *spec.argv()[1:]]


@dataclass(eq=False)
class Member:
    """One server of the fleet: its spec (ports as asked), process and, once known, addresses."""

    spec: ServerSpec
    child: ChildProcess
    backend: Backend | None = None


def start_member(spec: ServerSpec, log_dir: Path) -> Member:
    """Start the (placed) spec's server, its output to ``<log_dir>/<name>.log`` (or
    ``<name>.2.log``, ... when a server of that name ran before: a re-plan may reuse a
    removed server's name, and its log stays)."""
    log = log_dir / f"{spec.name}.log"
    number = 1
    while log.exists():
        number += 1
        log = log_dir / f"{spec.name}.{number}.log"
    return Member(spec, start_child(spec.name, server_argv(spec), log))


async def stop_member(member: Member, timeout_s: float) -> None:
    """SIGTERM (the server drains), SIGKILL after ``timeout_s``."""
    await stop_children([member.child], timeout_s)


# What runs beside the fleet once its router is up (deploy --follow's controller): given
# the members (a list it may change), the router, the config, the log folder and the echo.
Companion = Callable[
    [list["Member"], RunningRouter, LocalFleetConfig, Path, Echo], Coroutine[Any, Any, None]
]


async def _run(
    specs: list[ServerSpec], config: LocalFleetConfig, echo: Echo, companion: Companion | None
) -> int:
    stop = _stop_event()
    log_dir = config.log_dir or Path(tempfile.mkdtemp(prefix="inferpack-fleet-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    echo(f"starting {len(specs)} servers; their output goes to {log_dir}")
    members: list[Member] = []
    try:
        # Started inside the try: a server that fails to start still gets the others stopped.
        for spec in placed_specs(specs, config):
            members.append(start_member(spec, log_dir))
        if not await _until_stopped(wait_ready(members, config.ready_timeout_s), stop):
            return 0
        router = await _start_router(members, config)
        _print_fleet(members, router, echo)
        extra = None if companion is None else companion(members, router, config, log_dir, echo)
        await _serve_until_stopped(members, router, stop, config, echo, extra=extra)
    finally:
        await _stop_servers(members, config.stop_timeout_s, echo)
    return 0


def _stop_event() -> asyncio.Event:
    """Set by SIGINT or SIGTERM, from the start: a stop during start-up stops the servers."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    return stop


async def _until_stopped(work: Coroutine[Any, Any, None], stop: asyncio.Event) -> bool:
    """Run ``work`` unless ``stop`` is set first; whether it finished."""
    task = asyncio.ensure_future(work)
    stopping = asyncio.ensure_future(stop.wait())
    await asyncio.wait({task, stopping}, return_when=asyncio.FIRST_COMPLETED)
    stopping.cancel()
    if not task.done():
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        return False
    task.result()  # re-raises a start-up failure
    return True


async def wait_ready(members: list[Member], timeout_s: float) -> None:
    """Wait until every server is ready; the first failure cancels the other waits."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        waits = [asyncio.ensure_future(_ready(m, session, deadline)) for m in members]
        done, pending = await asyncio.wait(waits, return_when=asyncio.FIRST_EXCEPTION)
        for wait in pending:
            wait.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        for wait in done:
            wait.result()


async def _ready(member: Member, session: aiohttp.ClientSession, deadline: float) -> None:
    """Poll one server: its addresses (from its spec or its log), then /v2/health/ready."""
    while True:
        _check_starting(member, deadline)
        member.backend = member.backend or _addresses(member)
        if member.backend is not None and await _is_ready(session, member.backend):
            return
        await asyncio.sleep(POLL_S)


def _check_starting(member: Member, deadline: float) -> None:
    """UnavailableError naming the server (and its log) if it exited or cannot get ready."""
    child = member.child
    code = child.exit_code()
    problem = None
    if code is not None:
        problem = f"exited with code {code} before it was ready"
    elif _NOT_READY.search(child.log_text()):
        problem = "is live but not ready (a model failed to load)"
    elif time.monotonic() > deadline:
        problem = "was not ready in time"
    if problem:
        raise UnavailableError(
            f"server {child.name} {problem}; its log {child.log_path} ends with:\n"
            f"{child.log_tail()}"
        )


def _addresses(member: Member) -> Backend | None:
    spec = member.spec
    if spec.http_port:
        http, grpc_address = f"{spec.host}:{spec.http_port}", f"{spec.host}:{spec.grpc_port}"
    else:
        found = _LISTENING.search(member.child.log_text())
        if found is None:
            return None
        http, grpc_address = f"{found[1]}:{found[2]}", f"{found[3]}:{found[4]}"
    return Backend(spec.name, f"http://{http}", grpc_address)


async def _is_ready(session: aiohttp.ClientSession, backend: Backend) -> bool:
    try:
        async with session.get(f"{backend.http_url}/v2/health/ready") as answer:
            return answer.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


async def _start_router(members: list[Member], config: LocalFleetConfig) -> RunningRouter:
    hosts = [(m.backend, m.spec.models) for m in members if m.backend is not None]
    router_config = RouterConfig(
        table=RoutingTable.from_hosts(
            hosts, {(model, m.spec.name): rps for m in members for model, rps in m.spec.rates}
        ),
        kinds={model: kind for m in members for model, kind in m.spec.kinds},
        planned=_planned(members),
        demand_window_s=config.demand_window_s,
        host=config.host,
        http_port=config.router_http_port,
        grpc_port=None if config.router_grpc_port < 0 else config.router_grpc_port,
    )
    try:
        return await start_router(router_config)
    except ListenError as error:  # one line naming the protocol and port
        raise ListenError(f"router {error}") from None


def _planned(members: list[Member]) -> dict[str, float]:
    """Each model's planned rate, over its replicas."""
    total: dict[str, float] = {}
    for member in members:
        for model, rps in member.spec.rates:
            total[model] = total.get(model, 0.0) + rps
    return total


def _print_fleet(members: list[Member], router: RunningRouter, echo: Echo) -> None:
    width = max(len(m.spec.name) for m in members)
    for member in members:
        spec, backend = member.spec, member.backend
        assert backend is not None
        echo(
            f"  {spec.name:<{width}}  {spec.instance_type:<14} {len(spec.models):>3} models  "
            f"{backend.http_url}  gRPC {backend.grpc_address}  pid {member.child.pid}"
        )
    grpc_note = f", gRPC on {router.grpc_address}" if router.grpc_address else ""
    echo(f"router listening on {router.url}{grpc_note}")
    echo("ready: SIGINT (Ctrl-C) or SIGTERM stops the fleet")


async def _serve_until_stopped(
    members: list[Member],
    router: RunningRouter,
    stop: asyncio.Event,
    config: LocalFleetConfig,
    echo: Echo,
    *,
    extra: Coroutine[Any, Any, None] | None,
) -> None:
    """Restart servers that die while the router runs (and run ``extra`` beside); on
    stop, drain the router. ``extra`` failing stops the fleet with its error."""
    tasks = [asyncio.create_task(_watch(members, router, config, echo))]
    if extra is not None:
        tasks.append(asyncio.create_task(extra))
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([stopping, *tasks], return_when=asyncio.FIRST_COMPLETED)
        for task in tasks:
            if task.done():
                task.result()  # a companion's failure is the fleet's
    finally:
        stopping.cancel()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        echo("stopping: the router drains its requests, then each server stops")
        await router.stop()


async def _watch(
    members: list[Member], router: RunningRouter, config: LocalFleetConfig, echo: Echo
) -> None:
    """Every WATCH_S: a server that exited gets a restart task (one at a time per server)."""
    restarting: dict[str, asyncio.Task[None]] = {}
    try:
        while True:
            for member in members:
                name = member.spec.name
                code = member.child.exit_code()
                if code is None or name in restarting:
                    continue
                task = asyncio.create_task(
                    _restart(member, members, router, config, echo, code=code)
                )
                restarting[name] = task
                task.add_done_callback(functools.partial(_forget, restarting, name))
            await asyncio.sleep(WATCH_S)
    finally:
        tasks = list(restarting.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _restart(
    member: Member,
    members: list[Member],
    router: RunningRouter,
    config: LocalFleetConfig,
    echo: Echo,
    *,
    code: int,
) -> None:
    """Start the server again on its ports until it is ready; held out of routing meanwhile.
    Each try starts the member's spec as it is then (deploy --follow may have changed its
    models); a member no longer in ``members`` (a re-plan removed it) is not tried again."""
    backend = member.backend
    assert backend is not None
    router.picker.hold(backend)
    name, started = member.spec.name, time.monotonic()
    echo(
        f"server {name} (pid {member.child.pid}) exited with code {code}: restarting it; "
        f"its models go to their other replicas meanwhile; log {member.child.log_path}"
    )
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        for attempt in itertools.count(1):
            if member not in members:
                echo(f"server {name}: no longer in the plan, not restarted")
                return
            spec = replace(
                member.spec,
                http_port=_port(backend.http_url),
                grpc_port=_port(backend.grpc_address),
            )
            log = member.child.log_path.with_name(f"{name}.restart-{attempt}.log")
            member.child = start_child(name, server_argv(spec), log)
            try:
                await _ready(member, session, time.monotonic() + config.ready_timeout_s)
            except UnavailableError as error:
                member.child.signal(signal.SIGKILL)
                wait_s = RESTART_BACKOFF_S[min(attempt, len(RESTART_BACKOFF_S)) - 1]
                reason = str(error).splitlines()[0]
                echo(f"server {name}: restart {attempt} failed ({reason}); next in {wait_s:g} s")
                await asyncio.sleep(wait_s)
                continue
            router.picker.unhold(backend)
            echo(
                f"server {name} is back: pid {member.child.pid}, ready "
                f"{time.monotonic() - started:.1f} s after it exited (restart {attempt})"
            )
            return


def _forget(tasks: dict[str, asyncio.Task[None]], name: str, _: object) -> None:
    tasks.pop(name, None)


def _port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


async def _stop_servers(members: list[Member], timeout_s: float, echo: Echo) -> None:
    killed = await stop_children([m.child for m in members], timeout_s)
    for child in killed:
        echo(f"server {child.name} (pid {child.pid}) did not stop in {timeout_s:.0f} s: killed")
