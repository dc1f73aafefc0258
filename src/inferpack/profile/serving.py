"""The server under measurement, run in this process on its own event loop and thread.

Why in-process: the search is synchronous (one loadtest level after another) and the load
generator runs in its own worker processes anyway, so the server only needs a loop that
nobody else blocks. The thread owns the loop; the search talks to it over HTTP (the load)
and through :meth:`BackgroundServer.index` (the measured memory).
"""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from types import TracebackType
from typing import Any

from inferpack.config import ServerConfig
from inferpack.errors import UnavailableError
from inferpack.server import RunningServer, start_server

# Seconds to wait for every model to load before giving up (ResNet-sized copies by the
# hundred take minutes on a small machine).
START_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 60.0


class BackgroundServer:
    """``with BackgroundServer(config) as server:`` a started server whose models all
    loaded (UnavailableError naming each model that did not)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._loop = asyncio.new_event_loop()
        self._server: RunningServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="profile-server", daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        self._ready.wait(START_TIMEOUT_S)
        if self._error is not None:
            raise self._error
        if self._server is None:
            self.stop()
            raise UnavailableError(f"the server did not start within {START_TIMEOUT_S:g} s")
        failed = [row for row in self.index() if row.get("state") != "READY"]
        if failed:
            self.stop()
            reasons = "; ".join(f"{r['name']}: {r.get('reason') or r['state']}" for r in failed)
            raise UnavailableError(f"models did not load: {reasons}")
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The base URL of ``transport``: http://host:port or grpc://host:port."""
        assert self._server is not None
        if self.config.grpc_port is not None:
            return f"grpc://{self._server.grpc_address}"
        return self._server.url

    def index(self) -> list[dict[str, Any]]:
        """The repository index (state, reason, measured memory of each model)."""
        assert self._server is not None
        future = asyncio.run_coroutine_threadsafe(self._server.engine.index(), self._loop)
        return [dict(row) for row in future.result(timeout=STOP_TIMEOUT_S)]

    def get_json(self, path: str) -> Any:
        """GET ``path`` from the server's HTTP endpoint (statistics, model config)."""
        assert self._server is not None
        with urllib.request.urlopen(self._server.url + path, timeout=STOP_TIMEOUT_S) as answer:
            return json.loads(answer.read())

    @property
    def cpu_workers(self) -> int:
        """Worker threads the server runs CPU batches on."""
        assert self._server is not None
        return self._server.engine.manager.pools.cpu.workers

    def stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=STOP_TIMEOUT_S)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._server = self._loop.run_until_complete(self._start())
        except BaseException as error:  # handed to __enter__, raised there
            self._error = error
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self._server.stop())
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.close()

    async def _start(self) -> RunningServer:
        server = await start_server(self.config)
        await server.wait_started(START_TIMEOUT_S)
        return server
