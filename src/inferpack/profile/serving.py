"""The server under measurement: ``inferpack serve`` in a child process, as users run it.

Why a process of its own: a profile's numbers must be the numbers of the server a fleet
runs. An earlier version ran the server on a thread of the profiling process, where it
shared the GIL with the load generator's coordinator (unpickling every window's records):
on a 2-core VM that inflated the profile's p90 at 400 req/s by 60 % over the same server
standing alone, and every latency model calibrated on it inherited the error.

The child is this interpreter running ``python -m inferpack serve`` on 127.0.0.1 (free
ports, explicit control mode, the copies loaded at start, ``--cpu-threads``); its output
goes to a log file whose end is shown if it fails. Ready means ``/v2/health/ready``
(every listener up and every copy READY); a copy that failed makes the server "live but
not ready", and the index's reasons are the error.

``profile --through-router`` measures the server where a local fleet's users stand: the
child is ``inferpack deploy --target local`` of a one-server plan (BackgroundFleet), and
the load goes through its router, whose CPU shares the host with the server.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from inferpack.config import ServerConfig
from inferpack.errors import UnavailableError
from inferpack.plan.formats import ModelShare, Plan, PlanSummary, ServerPlan, write_plan
from inferpack.runtime.workers import available_cpus, fleet_cpu_threads, plan_cpu_threads

# Seconds to wait for every model to load before giving up (ResNet-sized copies by the
# hundred take minutes on a small machine).
START_TIMEOUT_S = 900.0
STOP_TIMEOUT_S = 60.0
POLL_S = 0.2
_LISTENING = re.compile(r"listening\s+on\s+(http://\S+?)(?:,\s+gRPC\s+on\s+(\S+?))?\s")
_NOT_READY = re.compile(r"live\s+but\s+not\s+ready")


def serve_argv(config: ServerConfig) -> list[str]:
    """The serve command of ``config`` (HTTP always; gRPC when it has a port)."""
    control = config.control
    grpc = "-1" if config.grpc_port is None else str(config.grpc_port)
    argv = [sys.executable, "-m", "inferpack", "serve", "--model-repository",
            config.model_repository, "--host", "127.0.0.1", "--http-port",
            str(config.http_port), "--grpc-port", grpc, "--model-control-mode",
            control.mode.value, "--log-level", "warning"]  # fmt: skip
    if control.cpu_threads:
        argv += ["--cpu-threads", str(control.cpu_threads)]
    for name in control.startup_models:
        argv += ["--load-model", name]
    return argv


class BackgroundServer:
    """``with BackgroundServer(config) as server:`` a started server whose models all
    loaded (UnavailableError naming each model that did not)."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self._folder = tempfile.TemporaryDirectory(prefix="inferpack-profile-server-")
        self._log = Path(self._folder.name) / "server.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._http_url = ""
        self._grpc_address: str | None = None

    def argv(self) -> list[str]:
        """The child's command line (reads nothing, writes nothing)."""
        return serve_argv(self.config)

    def prepare(self) -> None:
        """Write the files the child's command line names (none for a plain server)."""

    def __enter__(self) -> BackgroundServer:
        self.prepare()
        with self._log.open("wb") as sink:
            self._process = subprocess.Popen(self.argv(), stdout=sink, stderr=subprocess.STDOUT)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
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
        if self.config.grpc_port is not None and self._grpc_address:
            return f"grpc://{self._grpc_address}"
        return self._http_url

    def index(self) -> list[dict[str, Any]]:
        """The repository index (state, reason, measured memory of each model)."""
        rows: list[dict[str, Any]] = self._request("/v2/repository/index", b"{}")
        return rows

    def get_json(self, path: str) -> Any:
        """GET ``path`` from the server's HTTP endpoint (statistics, model config)."""
        return self._request(path)

    @property
    def cpu_workers(self) -> int:
        """Worker threads the server runs CPU batches on (its --cpu-threads split)."""
        return plan_cpu_threads(self.config.control.cpu_threads or available_cpus()).workers

    def stop(self) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._folder.cleanup()

    def _request(self, path: str, body: bytes | None = None) -> Any:
        request = urllib.request.Request(self._http_url + path, data=body)
        with urllib.request.urlopen(request, timeout=STOP_TIMEOUT_S) as answer:
            return json.loads(answer.read())

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            text = self._log.read_text(errors="replace")
            if not self._http_url:
                found = _LISTENING.search(text)
                if found:
                    self._http_url, self._grpc_address = found.group(1), found.group(2)
            if self._http_url and self._ready():
                return
            if self._http_url and _NOT_READY.search(text):
                failed = [row for row in self.index() if row.get("state") != "READY"]
                reasons = "; ".join(f"{r['name']}: {r.get('reason') or r['state']}" for r in failed)
                raise UnavailableError(f"models did not load: {reasons}")
            if self._process.poll() is not None:
                raise UnavailableError(
                    f"the server exited ({self._process.returncode}): {_tail(text)}"
                )
            time.sleep(POLL_S)
        raise UnavailableError(f"the server did not start within {START_TIMEOUT_S:g} s")

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(self._http_url + "/v2/health/ready", timeout=5) as answer:
                return bool(answer.status == 200)
        except (urllib.error.URLError, OSError):
            return False


class BackgroundFleet(BackgroundServer):
    """The same server behind the local fleet's router, measured through the router: the
    child is ``inferpack deploy --target local`` of a one-server plan holding the copies,
    so the router's hop and its CPU on this host are in every number, as they are for a
    local fleet's users. Statistics, configs and the index come through the router too
    (merged from its one backend)."""

    def __init__(
        self,
        config: ServerConfig,
        kind: str,
        instance_type: str,
        catalog: Path | None = None,
        region: str | None = None,
    ) -> None:
        super().__init__(config)
        self.kind, self.instance_type = kind, instance_type
        self.catalog, self.region = catalog, region

    @property
    def plan_path(self) -> Path:
        """Where :meth:`prepare` writes the one-server plan the child deploys."""
        return Path(self._folder.name) / "plan.yaml"

    def prepare(self) -> None:
        models = self.config.control.startup_models
        write_plan(self.plan_path, one_server_plan(models, self.kind, self.instance_type))

    def argv(self) -> list[str]:
        grpc = "-1" if self.config.grpc_port is None else "0"
        plan = self.plan_path
        argv = [sys.executable, "-m", "inferpack", "deploy", str(plan), "--target", "local",
                "--model-repository", self.config.model_repository, "--router-http-port", "0",
                "--router-grpc-port", grpc, "--cpu-threads", str(self.cpu_threads)]  # fmt: skip
        if self.catalog is not None:
            argv += ["--catalog", str(self.catalog)]
        if self.region is not None:
            argv += ["--region", self.region]
        return argv

    @property
    def cpu_threads(self) -> int:
        """The server's --cpu-threads: the profile's, else a one-server fleet's default."""
        return self.config.control.cpu_threads or fleet_cpu_threads(1)

    @property
    def cpu_workers(self) -> int:
        return plan_cpu_threads(self.cpu_threads).workers


def one_server_plan(models: Sequence[str], kind: str, instance_type: str) -> Plan:
    """A plan of one server holding ``models`` (what deploy needs; the rates are unused)."""
    shares = tuple(ModelShare(name, kind, 1.0) for name in models)
    server = ServerPlan("profiled", instance_type, 0.0, shares, 0.0, 0.0, 0.0, None)
    return Plan(PlanSummary(0.0, "profile", 0.0, 0.0, 0.0, 0.0), (server,))


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])
