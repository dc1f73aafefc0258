"""``inferpack deploy --target local`` through the real CLI: a plan of three servers (one
model replicated) runs as processes behind the router, answers every model over REST and
gRPC, and stops cleanly on SIGTERM leaving no process behind; a server that cannot start
stops the whole fleet with an error naming it."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml

from inferpack.plan.formats import ModelShare, Plan, PlanSummary, ServerPlan, write_plan
from tests.helpers import reference_outputs
from tests.integration.cli_server import inferpack, wait_for
from tests.integration.test_router import MODELS, build_fleet_repo

REGION = "eu-test-1"
# Shapes priced only in this override's region: the fleet starts only if --catalog and
# --region both took effect.
CATALOG = {
    "instances": [
        {"name": name, "region": REGION, "basis": "on-demand", "price_usd_per_hour": 0.3,
         "price_date": "2026-01-01", "source": "test", "vcpu": 8, "memory_gib": 16,
         "accelerator": None, "accelerator_count": 0, "accelerator_memory_gib": 0}
        for name in ("c5.2xlarge", "lab9.test")
    ]
}  # fmt: skip
_ROUTER = re.compile(r"router\s+listening\s+on\s+http://(\S+?),\s+gRPC\s+on\s+(\S+?)\s")
_SERVER_LINE = re.compile(
    r"^\s+(server-\d)\s+(\S+)\s+(\d+) models\s+http://\S+\s+gRPC \S+\s+pid (\d+)$", re.M
)
STOP_TIMEOUT_S = 60


def _plan(path: Path, placement: dict[str, tuple[str, tuple[str, ...]]]) -> Path:
    servers = tuple(
        ServerPlan(name, kind, 0.3, tuple(ModelShare(m, "tiny", 5.0) for m in models),
                   50.0, 0.1, 0.1, None)
        for name, (kind, models) in placement.items()
    )  # fmt: skip
    write_plan(path, Plan(PlanSummary(100.0, "test", 0.0, 0.9, 0.9, 0.0), servers))
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    """Wide output (no line breaks in checked messages); the fleet's log folder in tmp_path."""
    return {**os.environ, "COLUMNS": "400", "TMPDIR": str(tmp_path)}


@dataclass
class RunningFleet:
    """A fleet started by :func:`running_fleet`: its process, its log, the router's line,
    and once stopped its exit code."""

    process: subprocess.Popen[str]
    log: Path
    router: re.Match[str] | None = None
    code: int | None = None


@contextlib.contextmanager
def running_fleet(
    tmp_path: Path,
    args: list[str],
    stop_timeout_s: float = STOP_TIMEOUT_S,
    listening: re.Pattern[str] = _ROUTER,
) -> Iterator[RunningFleet]:
    """``inferpack ARGS`` (deploy --target local) in the background, its output in
    tmp_path/fleet.log, from when its router's line (``listening``) is printed to the end
    of the block; then SIGTERM, and its exit code in ``code``."""
    log = tmp_path / "fleet.log"
    with log.open("w") as sink:
        process = subprocess.Popen(inferpack(*args), stdout=sink, stderr=sink, env=_env(tmp_path))
    fleet = RunningFleet(process, log)
    try:
        fleet.router = wait_for(log, listening, process)
        yield fleet
    finally:
        process.send_signal(signal.SIGTERM)
        fleet.code = process.wait(timeout=stop_timeout_s)


def _deploy(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``inferpack ARGS`` to completion, its output captured."""
    env = _env(tmp_path)
    return subprocess.run(
        inferpack(*args), check=False, capture_output=True, text=True, env=env, timeout=300
    )


def _free_port_block(count: int) -> int:
    """The first of ``count`` consecutive ports free on 127.0.0.1 right now."""
    for _ in range(50):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        if first + count < 65536 and all(_free(first + i) for i in range(count)):
            return first
    raise AssertionError("no block of free ports")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in _status(pid)


def _status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return "zombie"


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fleet_repo(tmp_path_factory.mktemp("deploy-local"))


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    path = tmp_path / "catalog.yaml"
    path.write_text(yaml.safe_dump(CATALOG))
    return path


def test_local_fleet_serves_every_model_and_stops_cleanly(
    repo: Path, catalog: Path, tmp_path: Path
) -> None:
    placement = {
        "server-0": ("c5.2xlarge", ("mlp-a", "mlp-b")),
        "server-1": ("lab9.test", ("mlp-b",)),
        "server-2": ("c5.2xlarge", ("mlp-c",)),
    }
    base_port = _free_port_block(2 * len(placement))
    args = [
        "deploy", str(_plan(tmp_path / "plan.yaml", placement)), "--target", "local",
        "--model-repository", str(repo), "--catalog", str(catalog), "--region", REGION,
        "--host", "127.0.0.1", "--router-http-port", "0", "--router-grpc-port", "0",
        "--base-port", str(base_port), "--cpu-threads", "1",
    ]  # fmt: skip
    with running_fleet(tmp_path, args) as fleet:
        assert fleet.router is not None
        servers = _check_servers(fleet.log.read_text(), placement, base_port)
        _infer_every_model(fleet.router.group(1), fleet.router.group(2), repo)
    assert fleet.code == 0, fleet.log.read_text()
    assert not [pid for pid in servers if _alive(pid)], fleet.log.read_text()
    assert not _servers_of(repo)
    assert "stopping: the router drains" in fleet.log.read_text()


def _check_servers(
    output: str, placement: dict[str, tuple[str, tuple[str, ...]]], base_port: int
) -> list[int]:
    """One line per server as planned; each child runs the spec's argv with our flags."""
    lines = _SERVER_LINE.findall(output)
    assert [(n, t, int(c)) for n, t, c, _ in lines] == [
        (name, kind, len(models)) for name, (kind, models) in placement.items()
    ], output
    pids = [int(pid) for *_, pid in lines]
    for index, pid in enumerate(pids):
        argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
        assert argv[argv.index("--http-port") + 1] == str(base_port + 2 * index)
        assert argv[argv.index("--grpc-port") + 1] == str(base_port + 2 * index + 1)
        assert argv[argv.index("--cpu-threads") + 1] == "1"
        assert argv[argv.index("--host") + 1] == "127.0.0.1"
    return pids


def _infer_every_model(http_address: str, grpc_address: str, repo: Path) -> None:
    data = np.random.default_rng(3).standard_normal((2, 16)).astype(np.float32)
    http = httpclient.InferenceServerClient(http_address)
    grpc = grpcclient.InferenceServerClient(grpc_address)
    assert http.is_server_ready() and grpc.is_server_ready()
    for model in MODELS:
        expected = reference_outputs(repo, model, data)[0]
        rest_input = httpclient.InferInput("input", [2, 16], "FP32")
        rest_input.set_data_from_numpy(data, binary_data=True)
        grpc_input = grpcclient.InferInput("input", [2, 16], "FP32")
        grpc_input.set_data_from_numpy(data)
        for _ in range(2):  # the replicated model: both replicas' turns
            rest = http.infer(model, [rest_input])
            np.testing.assert_allclose(rest.as_numpy("output"), expected, atol=1e-4)
            answer = grpc.infer(model, [grpc_input])
            np.testing.assert_allclose(answer.as_numpy("output"), expected, atol=1e-4)
    grpc.close()
    http.close()


def test_a_server_that_cannot_start_stops_the_fleet(repo: Path, tmp_path: Path) -> None:
    """One server asks for a model the repository lacks: the command fails naming it, and
    the server that did start is stopped."""
    placement = {
        "server-0": ("c5.2xlarge", ("mlp-a",)),
        "server-1": ("c5.2xlarge", ("missing-model",)),
    }
    plan = _plan(tmp_path / "plan.yaml", placement)
    args = ["deploy", str(plan), "--target", "local", "--model-repository", str(repo)]
    args += ["--router-http-port", "0", "--router-grpc-port", "-1"]
    done = _deploy(tmp_path, *args)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "server server-1 " in output and "server-1.log" in output, output
    assert not _servers_of(repo), output


def _servers_of(repo: Path) -> list[int]:
    """PIDs of live ``inferpack serve`` processes serving ``repo``."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_text().split("\0")
        except (FileNotFoundError, PermissionError, NotADirectoryError, ProcessLookupError):
            continue
        if "serve" in argv and str(repo) in argv and _alive(int(proc.name)):
            found.append(int(proc.name))
    return found


def test_an_unpriced_region_is_refused_before_anything_starts(
    repo: Path, catalog: Path, tmp_path: Path
) -> None:
    plan = _plan(tmp_path / "plan.yaml", {"server-0": ("lab9.test", ("mlp-a",))})
    args = ["deploy", str(plan), "--target", "local", "--model-repository", str(repo)]
    args += ["--catalog", str(catalog), "--region", "nowhere-1"]
    done = _deploy(tmp_path, *args)
    assert done.returncode == 1
    assert "no price for 'lab9.test' in region 'nowhere-1'" in done.stderr
    assert "starting" not in done.stdout


def assert_failed_only_until_back(failed: list[float], killed_at: float, back_at: float) -> None:
    """A model on the killed server alone failed (it did), only from the kill until its
    server was back (read off the fleet's log), however long the restart took on this host."""
    assert failed and killed_at <= min(failed), (failed, killed_at)
    assert max(failed) <= back_at + 1.0, (failed, killed_at, back_at)


def test_a_killed_server_is_restarted_and_replicated_models_lose_nothing(
    repo: Path, catalog: Path, tmp_path: Path
) -> None:
    """kill -9 of one server under load: mlp-b, replicated on the other server, answers
    every request (those in flight at the kill go to the replica); mlp-a, on the killed
    server only, fails until the server is back on its ports (however long that takes); then
    everything answers, and the restart is logged."""
    import threading
    import time

    placement = {
        "server-0": ("c5.2xlarge", ("mlp-a", "mlp-b")),
        "server-1": ("c5.2xlarge", ("mlp-b", "mlp-c")),
    }
    args = [
        "deploy", str(_plan(tmp_path / "plan.yaml", placement)), "--target", "local",
        "--model-repository", str(repo), "--catalog", str(catalog), "--region", REGION,
        "--router-http-port", "0", "--router-grpc-port", "0", "--cpu-threads", "1",
    ]  # fmt: skip
    outcomes: dict[str, list[tuple[float, bool]]] = {"mlp-a": [], "mlp-b": []}
    done = threading.Event()
    errors: list[str] = []

    def load(model: str) -> None:
        client = httpclient.InferenceServerClient(http_address, connection_timeout=5.0)
        data = np.ones((1, 16), np.float32)
        while not done.is_set():
            item = httpclient.InferInput("input", [1, 16], "FP32")
            item.set_data_from_numpy(data, binary_data=True)
            try:
                client.infer(model, [item])
                ok = True
            except Exception as error:  # any failure counts
                ok = False
                errors.append(f"{model}: {time.monotonic():.2f} {error}")
            outcomes[model].append((time.monotonic(), ok))

    with running_fleet(tmp_path, args) as fleet:
        try:
            assert fleet.router is not None
            http_address = fleet.router.group(1)
            [(_, _, _, victim), _] = _SERVER_LINE.findall(fleet.log.read_text())
            threads = [threading.Thread(target=load, args=(m,)) for m in outcomes for _ in range(2)]
            for thread in threads:
                thread.start()
            time.sleep(2.0)
            killed_at = time.monotonic()
            os.kill(int(victim), signal.SIGKILL)
            back_line = re.compile(r"server server-0 is back: pid (\d+)")
            back = wait_for(fleet.log, back_line, fleet.process, 60)
            back_at = time.monotonic()
            time.sleep(2.0)
            done.set()
            for thread in threads:
                thread.join(timeout=30)
        finally:
            done.set()
    output = fleet.log.read_text()
    assert fleet.code == 0, output
    assert "server server-0 (pid" in output and "restarting it" in output
    lost = [e for e in errors if e.startswith("mlp-b")]
    assert all(ok for _, ok in outcomes["mlp-b"]), (killed_at, lost[:3], output[-1500:])
    assert len(outcomes["mlp-b"]) > 20  # the load ran through the kill
    failed_a = [t for t, ok in outcomes["mlp-a"] if not ok]
    assert_failed_only_until_back(failed_a, killed_at, back_at)
    assert outcomes["mlp-a"][-1][1]  # answered again at the end
    assert int(back.group(1)) != int(victim)
    assert not _alive(int(back.group(1)))  # stopped with the fleet
