"""Issue [5a]: memory per resident model and requests/s, inferpack beside Ray Serve
multiplexing, on the same N distinct-seed copies of medium-cnn (483k parameters, 1.85 MiB
of fp32 weights), measured in the same run.

For each N (1,000 then 4,000), one repository of N models (seeds 0..N-1) and, per server:

    baseline  the server holding one model after one request (inferpack: a repository of
              that one model, mode none; Ray: one request to one model)
    loaded    inferpack only: all N loaded at start (mode none), no request yet
    one_each  after one request to every model, 8 in flight (loadtest's payloads and
              transport: its levels end on stable windows, not after N requests)
    loadtest  after ``inferpack loadtest --distribution uniform --concurrency 8``

Memory is the PSS of the server's whole process tree (Ray: driver, GCS, raylet, proxy,
controller, replica), so shared pages count once. Per model = (PSS - baseline PSS) / (N-1);
models per GiB = 1 GiB / that; models in host memory = (MemTotal - baseline) / that. Both
servers get the host's CPUs for model compute (``--cpu-threads``: inferpack splits them into
workers x torch threads its own way, Ray gets that many threads of one torch thread; on 2
cores both run 2 x 1). Ray runs
``benchmarks/ray_multiplex_app.py`` in its own virtual environment (``--ray-python``, with
ray[serve], torch, numpy, safetensors); the last model's logits must agree between the two.

    python -m benchmarks.many_models_vs_ray [--models 1000,4000] [--duration-s 15]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.common import ROOT, loadtest_level, served, started, write_result

WORKLOAD = "medium-cnn"
CONCURRENCY = 8
# Seconds any one step may take before the benchmark gives up on it.
STEP_TIMEOUT_S = 600
RAY_APP = ROOT / "benchmarks" / "ray_multiplex_app.py"
# Seconds Ray's processes get to exit after the driver's shutdown before they are killed.
RAY_SHUTDOWN_S = 30.0
# Cores kept busy by other processes during a loadtest above which its req/s are suspect.
NOISY_CORES = 0.25
METHOD = " ".join(" ".join((__doc__ or "").split("\n\n")[1:4]).split())


def build_repository(root: Path, count: int) -> None:
    """``count`` copies of the workload, seeds 0..count-1, weights as safetensors."""
    from inferpack.config.model_config import model_config_to_dict
    from inferpack.workloads import get_workload
    from inferpack.workloads.weights import build_seeded, save_weights

    spec = get_workload(WORKLOAD)
    for seed in range(count):
        name = f"m-{seed:05d}"
        folder = root / name / "1"
        folder.mkdir(parents=True)
        config = model_config_to_dict(spec.default_config(name=name, seed=seed))
        (folder.parent / "model.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        save_weights(build_seeded(spec, {"seed": seed}), folder / "model.safetensors")


def weight_bytes(root: Path) -> int:
    """Bytes of the first model's tensors as the torch backend counts them (on CPU a
    model's memory is its weights: no workspace is measured)."""
    from inferpack.backends import load_backends
    from inferpack.repository import LocalRepository

    [source] = LocalRepository(root).sources("m-00000")
    return int(load_backends(source)[0].memory_bytes)


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited meanwhile
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def tree_pids(root_pid: int) -> list[int]:
    tree, pids, index = _children(), [root_pid], 0
    while index < len(pids):
        pids.extend(tree.get(pids[index], []))
        index += 1
    return pids


def tree_pss_mib(root_pid: int) -> float:
    """Proportional set size of a process and all its descendants, MiB."""
    total_kib = 0
    for pid in tree_pids(root_pid):
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        found = re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE)
        total_kib += int(found.group(1)) if found else 0
    return total_kib / 1024


def listening_pid(url: str) -> int:
    port = url.rsplit(":", 1)[1]
    out = subprocess.run(
        ["ss", "-ltnpH", f"sport = :{port}"], capture_output=True, text=True, check=True
    ).stdout
    found = re.search(r"pid=(\d+)", out)
    if not found:
        raise RuntimeError(f"no process listens on port {port}")
    return int(found.group(1))


def loadtest(url: str, models: list[str], **options: Any) -> dict[str, Any]:
    """One level of ``inferpack loadtest`` (the CLI in a subprocess); its level result."""
    arguments = [
        "--models",
        ",".join(models),
        *(f"--{k.replace('_', '-')}={v}" for k, v in options.items()),
    ]
    return loadtest_level(url, arguments, STEP_TIMEOUT_S)


def touch(url: str, models: list[str]) -> dict[str, Any]:
    """One request to each model in order, ``CONCURRENCY`` in flight, sent with inferpack
    loadtest's own payloads and HTTP transport (its levels end on stable windows, not
    after exactly N requests). Returns the seconds taken and the count of each status."""
    from inferpack.loadtest.payloads import build_payloads
    from inferpack.loadtest.transports import HttpTransport

    payloads = build_payloads(url, "http-binary", tuple(models), 1, 0)

    async def send_all() -> Counter[str]:
        transport, pending, statuses = HttpTransport(url), iter(payloads), Counter[str]()

        async def client() -> None:
            for payload in pending:  # shared: each payload is sent once
                statuses[await transport.send(payload)] += 1

        try:
            await asyncio.gather(*(client() for _ in range(CONCURRENCY)))
        finally:
            await transport.close()
        return statuses

    started_s = time.perf_counter()
    statuses = asyncio.run(asyncio.wait_for(send_all(), STEP_TIMEOUT_S))
    return {"seconds": round(time.perf_counter() - started_s, 1), "statuses": dict(statuses)}


def logits(url: str, model: str) -> list[float]:
    """The model's output for loadtest's input (seed 0), from its binary v2 response: the
    same weights must give the same numbers on both servers."""
    from inferpack.loadtest.payloads import build_payloads

    [payload] = build_payloads(url, "http-binary", (model,), 1, 0)
    request = urllib.request.Request(
        f"{url}/v2/models/{model}/infer", payload.body, dict(payload.headers), method="POST"
    )
    with urllib.request.urlopen(request, timeout=STEP_TIMEOUT_S) as response:
        length = int(response.headers["Inference-Header-Content-Length"])
        raw = response.read()[length:]
    return [float(x) for x in np.frombuffer(raw, dtype=np.float32)]


def _cpu_s(pid: int) -> tuple[float, float, float, float]:
    """(wall, busy CPU seconds of the host, of the server's tree, of this benchmark's
    waited-for children: the loadtest and its workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    busy = (sum(fields) - fields[3] - fields[4]) / tick  # less idle and iowait
    server = 0
    for member in tree_pids(pid):
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            server += int(stat[11]) + int(stat[12])  # utime, stime
    times = os.times()
    return time.monotonic(), busy, server / tick, times.children_user + times.children_system


def _other_cores(before: tuple[float, ...], after: tuple[float, ...]) -> float:
    """Cores that work other than the server and its load generator kept busy meanwhile."""
    wall, busy, server, client = (b - a for a, b in zip(before, after, strict=True))
    return round(max(0.0, busy - server - client) / wall, 2)


def measure(url: str, pid: int, models: list[str], duration_s: float) -> dict[str, Any]:
    """PSS after one request each, then after a uniform closed-loop loadtest."""
    first = touch(url, models)
    result: dict[str, Any] = {
        "one_each_s": first["seconds"],
        "one_each_statuses": first["statuses"],
        "pss_one_each_mib": round(tree_pss_mib(pid), 1),
    }
    before = _cpu_s(pid)
    level = loadtest(
        url,
        models,
        distribution="uniform",
        concurrency=CONCURRENCY,
        duration_s=duration_s,
        max_windows=4,
    )
    result["other_cpu_cores"] = _other_cores(before, _cpu_s(pid))
    result["pss_loadtest_mib"] = round(tree_pss_mib(pid), 1)
    result["loadtest"] = {
        k: level[k] for k in ("throughput_rps", "latency_ms", "requests", "errors", "stable")
    }
    result["processes"] = len(tree_pids(pid))
    return result


def inferpack_run(root: Path, models: list[str], duration_s: float) -> dict[str, Any]:
    single = root.parent / f"{root.name}-one"
    single.mkdir()
    (single / models[0]).symlink_to(root / models[0])
    try:
        with served(single, extra_args=_cpu_threads()) as url:
            logits(url, models[0])
            baseline = tree_pss_mib(listening_pid(url))
    finally:
        shutil.rmtree(single)
    started_s = time.perf_counter()
    with served(root, extra_args=_cpu_threads()) as url:
        pid = listening_pid(url)
        result: dict[str, Any] = {
            "start_and_load_all_s": round(time.perf_counter() - started_s, 1),
            "pss_baseline_mib": round(baseline, 1),
            "pss_loaded_mib": round(tree_pss_mib(pid), 1),
        }
        result["logits"] = logits(url, models[-1])
        result.update(measure(url, pid, models, duration_s))
        with urllib.request.urlopen(f"{url}/metrics", timeout=60) as response:
            result["metrics_bytes"] = len(response.read())
    return result


def _cpu_threads() -> list[str]:
    return ["--cpu-threads", str(len(os.sched_getaffinity(0)))]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@contextmanager
def ray_served(python: str, root: Path, count: int) -> Iterator[tuple[str, int]]:
    """The Ray app serving ``root``: its URL and driver pid. At exit the driver shuts Ray
    down (SIGTERM); whatever of the tree it started is still alive after that is killed."""
    port = _free_port()
    command = [python, str(RAY_APP), "--repository", str(root), "--models", str(count)]
    command += ["--port", str(port), *_cpu_threads()]
    pids: list[int] = []
    try:
        with _with_pythonpath(f"{ROOT / 'src'}:{ROOT}"), started(command, "ready on") as lines:
            found = re.search(r"ready on (\S+) \(pid (\d+)\)", "".join(lines))
            if not found:
                raise RuntimeError("the Ray app did not print its URL and pid")
            pid = int(found.group(2))
            try:
                yield found.group(1), pid
            finally:
                pids = tree_pids(pid)
    finally:
        _kill_leftovers(pids)


def _kill_leftovers(pids: list[int]) -> None:
    """SIGKILL the processes of a Ray tree that outlived its driver's shutdown (a pid
    reused meanwhile by something else is left alone: its command line names no ray)."""
    deadline_s = time.monotonic() + RAY_SHUTDOWN_S
    while time.monotonic() < deadline_s and any(_is_ray(pid) for pid in pids):
        time.sleep(0.5)
    for pid in pids:
        if _is_ray(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _is_ray(pid: int) -> bool:
    try:
        return b"ray" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


@contextmanager
def _with_pythonpath(value: str) -> Iterator[None]:
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = value
    try:
        yield
    finally:
        if old is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = old


def ray_run(python: str, root: Path, models: list[str], duration_s: float) -> dict[str, Any]:
    started_s = time.perf_counter()
    with ray_served(python, root, len(models)) as (url, pid):
        result: dict[str, Any] = {"start_s": round(time.perf_counter() - started_s, 1)}
        result["logits"] = logits(url, models[-1])
        result["pss_baseline_mib"] = round(tree_pss_mib(pid), 1)
        result.update(measure(url, pid, models, duration_s))
    return result


def host_memory_mib() -> float:
    found = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    return int(found.group(1)) / 1024 if found else float("nan")


def per_model(run: dict[str, Any], count: int, weights_mib: float) -> dict[str, Any]:
    """Per-model MiB at each stage, and what the steady state (after the loadtest) means
    in models per GiB and in models that fit this host's memory beside the baseline."""
    derived: dict[str, Any] = {}
    for stage in ("loaded", "one_each", "loadtest"):
        pss = run.get(f"pss_{stage}_mib")
        if pss is not None:
            mib = (pss - run["pss_baseline_mib"]) / (count - 1)
            derived[f"{stage}_mib_per_model"] = round(mib, 3)
            derived[f"{stage}_x_weights"] = round(mib / weights_mib, 3)
    steady = derived["loadtest_mib_per_model"]
    derived["models_per_gib"] = round(1024 / steady, 1)
    derived["models_in_host_memory"] = int((host_memory_mib() - run["pss_baseline_mib"]) / steady)
    derived["requests_per_s"] = run["loadtest"]["throughput_rps"]
    return derived


def warnings(result: dict[str, Any]) -> list[str]:
    """What makes a run's numbers less trustworthy: a busy host, an unstable level."""
    found = []
    for server in ("inferpack", "ray_serve"):
        raw = result.get(server, {}).get("raw")
        if raw is None:
            continue
        if raw["other_cpu_cores"] > NOISY_CORES:
            found.append(
                f"{server}: other work kept {raw['other_cpu_cores']} cores busy during its "
                "loadtest: its req/s are below an idle host's"
            )
        if not raw["loadtest"]["stable"]:
            found.append(f"{server}: loadtest windows never agreed within 10 % (unstable)")
    return found


def compare(count: int, python: str | None, duration_s: float) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix=f"inferpack-vs-ray-{count}-")) / "repo"
    root.mkdir()
    try:
        started_s = time.perf_counter()
        build_repository(root, count)
        models = sorted(p.name for p in root.iterdir())
        weights = weight_bytes(root)
        result: dict[str, Any] = {
            "models": count,
            "repository_build_s": round(time.perf_counter() - started_s, 1),
            "weight_bytes_per_model": weights,
        }
        weights_mib = weights / 2**20
        run = inferpack_run(root, models, duration_s)
        our_logits = run.pop("logits")
        result["inferpack"] = {**per_model(run, count, weights_mib), "raw": run}
        if python:
            run = ray_run(python, root, models, duration_s)
            same = np.allclose(our_logits, run.pop("logits"), rtol=1e-4, atol=1e-6)
            result["same_outputs"] = bool(same)
            result["ray_serve"] = {**per_model(run, count, weights_mib), "raw": run}
            ours, ray = result["inferpack"], result["ray_serve"]
            result["ratios"] = {
                "models_per_gib": round(ours["models_per_gib"] / ray["models_per_gib"], 2),
                "requests_per_s": round(ours["requests_per_s"] / ray["requests_per_s"], 2),
            }
        result["warnings"] = warnings(result)
    finally:
        shutil.rmtree(root.parent)
    print(json.dumps(result, indent=1), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="1000,4000", help="comma-separated counts")
    parser.add_argument("--duration-s", type=float, default=15.0)
    parser.add_argument(
        "--ray-python", default="/tmp/rayvenv/bin/python", help="'' to skip Ray Serve"
    )
    args = parser.parse_args()
    ray_version = None
    if args.ray_python:
        ray_version = subprocess.run(
            [args.ray_python, "-c", "import ray; print(ray.__version__)"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    runs = [
        compare(int(n), args.ray_python or None, args.duration_s) for n in args.models.split(",")
    ]
    result = {
        "issue": "[5a] memory per resident model vs Ray Serve multiplexing",
        "workload": f"{WORKLOAD}: 483k parameters, 3x64x64 -> 100, distinct seed per copy",
        "method": METHOD,
        "host_memory_gib": round(host_memory_mib() / 1024, 1),
        "glibc": " ".join(platform.libc_ver()),
        "ray_version": ray_version,
        "concurrency": CONCURRENCY,
        "duration_s": args.duration_s,
        "runs": runs,
    }
    print(write_result("many_models_vs_ray.json", result))


if __name__ == "__main__":
    main()
