"""Test helpers: a real server on 127.0.0.1 in a background thread, and reference models."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from inferpack.config import ServerConfig
from inferpack.server import RunningServer, start_server


class ServerThread:
    """Runs ``start_server`` on its own event loop so sync clients can call it from tests."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.server: RunningServer | None = None
        self._loop = asyncio.new_event_loop()
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="test-server", daemon=True)

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def address(self) -> str:
        assert self.server is not None
        return f"{self.server.host}:{self.server.port}"

    @property
    def grpc_address(self) -> str:
        assert self.server is not None
        return self.server.grpc_address

    def start(self, timeout_s: float = 300) -> ServerThread:
        self._thread.start()
        if not self._started.wait(timeout_s):
            raise TimeoutError("server did not start")
        if self._error is not None:
            raise self._error
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self.server = self._loop.run_until_complete(self._start())
        except BaseException as error:
            self._error = error
            self._started.set()
            return
        self._started.set()
        self._loop.run_forever()
        self._loop.run_until_complete(self.server.stop())
        pending = asyncio.all_tasks(self._loop)
        for task in pending:
            task.cancel()
        self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
        self._loop.run_until_complete(self._loop.shutdown_asyncgens())
        self._loop.close()

    async def _start(self) -> RunningServer:
        server = await start_server(self.config)
        await server.wait_started()
        return server

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=60)


@dataclass
class StressQuota:
    """How long the clients of a stress test go on: until ``until_s`` (monotonic) and until
    they have ``minimum`` answers together (a slow host answers fewer in the same seconds,
    and the test's checks need that much churn behind them). Shared by the asyncio tasks of
    one loop, so the count needs no lock."""

    until_s: float
    minimum: int
    answered: int = 0

    @classmethod
    def starting_now(cls, seconds: float, minimum: int) -> StressQuota:
        return cls(time.monotonic() + seconds, minimum)

    def going(self) -> bool:
        return time.monotonic() < self.until_s or self.answered < self.minimum


def edit_model(repo: Path, source: str, target: str, **changes: Any) -> Path:
    """Copy model ``source`` to ``target`` in ``repo`` with model.yaml fields changed."""
    shutil.copytree(repo / source, repo / target)
    path = repo / target / "model.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(changes, name=target)
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return repo / target


def reference_outputs(repo: Path, model: str, inputs: np.ndarray) -> list[np.ndarray]:
    """Outputs of the workload run in-process, eagerly, from its stored weights."""
    import torch

    from inferpack.workloads import get_workload
    from inferpack.workloads.weights import load_weights

    data = yaml.safe_load((repo / model / "model.yaml").read_text())
    spec = get_workload(data["workload"])
    module = load_weights(
        spec.build(data.get("workload_options", {})), repo / model / "1" / "model.safetensors"
    )
    with torch.inference_mode():
        out = module(torch.from_numpy(inputs))
    outs = out if isinstance(out, tuple) else (out,)
    return [o.numpy() for o in outs]
