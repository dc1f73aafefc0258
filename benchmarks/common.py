"""Shared benchmark plumbing: machine description, a served inferpack, a closed-loop client."""

from __future__ import annotations

import asyncio
import io
import json
import multiprocessing
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def machine() -> dict[str, object]:
    cpu = platform.processor()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        found = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = found.group(1).strip() if found else cpu
    info: dict[str, object] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git_sha": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            check=False,
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.strip(),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return info


def percentiles_ms(latencies_s: list[float]) -> dict[str, float]:
    ms = np.asarray(latencies_s) * 1e3
    return {
        f"p{q}": round(float(np.percentile(ms, q, method="inverted_cdf")), 3) for q in (50, 90, 99)
    }


@contextmanager
def started_process(
    command: list[str], ready: str
) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """Run ``command`` until it prints a line containing ``ready``; yield the process and
    the lines printed so far; keep draining its output (a full pipe would block it);
    terminate it at exit."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        lines = []
        for line in process.stdout:
            lines.append(line)
            if ready in line:
                break
        else:
            raise RuntimeError(f"{command[:4]} exited before printing {ready!r}")
        threading.Thread(target=process.stdout.read, daemon=True).start()
        yield process, lines
    finally:
        process.terminate()
        process.wait(timeout=60)


@contextmanager
def started(command: list[str], ready: str) -> Iterator[list[str]]:
    """:func:`started_process`, yielding only the lines printed until ``ready``."""
    with started_process(command, ready) as (_, lines):
        yield lines


def loadtest_level(url: str, arguments: list[str], timeout_s: float) -> dict[str, Any]:
    """Run ``inferpack loadtest --url URL ARGUMENTS`` (the CLI, in a subprocess) for one
    level and return that level of its result document."""
    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "loadtest.json"
        command = [
            sys.executable,
            "-c",
            "from inferpack.cli import main; main()",
            "loadtest",
            "--url",
            url,
            *arguments,
            "--output",
            str(output),
        ]
        subprocess.run(command, check=True, timeout=timeout_s, capture_output=True)
        level: dict[str, Any] = json.loads(output.read_text())["levels"][0]
    return level


def serve_command(repo: Path, *args: str) -> list[str]:
    return [
        sys.executable,
        "-c",
        "from inferpack.cli import main; main()",
        "serve",
        "--model-repository",
        str(repo),
        "--log-level",
        "warning",
        *args,
    ]


def tensor_only_repository(repo: Path, models: list[str], seed: int = 0) -> None:
    """``repo init`` of ``models`` with each model's upload input (and its pre- and
    postprocessing) dropped: perf_analyzer sends every input metadata lists, and the
    server refuses a request with both the upload and the tensor."""
    import yaml

    from inferpack.repository.init import init_repository

    init_repository(repo, models, seed=seed)
    for model in models:
        path = repo / model / "model.yaml"
        config = yaml.safe_load(path.read_text())
        if config.pop("preprocess", None) is not None:
            config.pop("postprocess", None)
            path.write_text(yaml.safe_dump(config, sort_keys=False))


@contextmanager
def served(repo: Path, port: int = 0, extra_args: list[str] | None = None) -> Iterator[str]:
    """Run ``inferpack serve`` in a subprocess (its own cores and GIL); yield its URL."""
    command = serve_command(
        repo, "--http-port", str(port), "--grpc-port", "-1", *(extra_args or [])
    )
    with started(command, "ready on") as lines:
        found = re.search(r"listening on ([^\s,]+)", "".join(lines))
        if not found:
            raise RuntimeError("server did not print its URL")
        yield found.group(1)


def binary_body(name: str, array: np.ndarray) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": name,
                    "datatype": "FP32",
                    "shape": list(array.shape),
                    "parameters": {"binary_data_size": array.nbytes},
                }
            ],
            "parameters": {"binary_data_output": True},
        }
    ).encode()
    return header + array.tobytes(), {"Inference-Header-Content-Length": str(len(header))}


async def _client_loop(
    url: str,
    body: bytes,
    headers: dict[str, str],
    concurrency: int,
    start_at: float,
    duration_s: float,
) -> tuple[list[float], int]:
    """``concurrency`` clients, one request in flight each, from wall-clock ``start_at``."""
    latencies: list[float] = []
    errors = 0
    end_at = start_at + duration_s
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client() -> None:
            nonlocal errors
            while (now := time.time()) < end_at:
                async with session.post(url, data=io.BytesIO(body), headers=headers) as response:
                    await response.read()
                    ok = response.status == 200
                done = time.time()
                if now >= start_at and done <= end_at:
                    if ok:
                        latencies.append(done - now)
                    else:
                        errors += 1

        await asyncio.gather(*(client() for _ in range(concurrency)))
    return latencies, errors


def _client_process(
    args: tuple[str, bytes, dict[str, str], int, float, float],
) -> tuple[list[float], int]:
    return asyncio.run(_client_loop(*args))


async def closed_loop(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 1.0,
    processes: int = 1,
) -> dict[str, object]:
    """Closed loop over ``processes`` client processes (so the client is not the bottleneck);
    raw latencies of requests finished inside the window are pooled, never averaged."""
    start_at = time.time() + warmup_s + (1.0 if processes > 1 else 0.0)
    shares = [concurrency // processes + (i < concurrency % processes) for i in range(processes)]
    if processes == 1:
        latencies, errors = await _client_loop(
            url, body, headers, concurrency, start_at, duration_s
        )
    else:
        jobs = [(url, body, headers, n, start_at, duration_s) for n in shares if n]
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(len(jobs), mp_context=context) as pool:
            parts = await asyncio.gather(
                *(asyncio.wrap_future(pool.submit(_client_process, job)) for job in jobs)
            )
        latencies = [x for part, _ in parts for x in part]
        errors = sum(e for _, e in parts)
    return {
        "concurrency": concurrency,
        "client_processes": processes,
        "requests": len(latencies),
        "errors": errors,
        "requests_per_s": round(len(latencies) / duration_s, 1),
        "latency_ms": percentiles_ms(latencies),
    }


def py_spy_record(
    pid: int, duration_s: float, output: Path, *flags: str
) -> subprocess.Popen[bytes]:
    """Start py-spy (this venv's) sampling process ``pid`` for ``duration_s`` into
    ``output`` in its raw (collapsed) format, with ``flags`` (rate, --idle, --threads...)."""
    return subprocess.Popen(
        [str(Path(sys.executable).with_name("py-spy")), "record", "--pid", str(pid),
         "--duration", str(int(duration_s)), "--format", "raw", "--output", str(output),
         *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def collapsed_samples(path: Path) -> Iterator[tuple[str, int]]:
    """(stack, samples) for each line of a py-spy raw (collapsed) file."""
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            yield stack, int(count)


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (all its threads, not its
    children), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_cpu_ticks() -> tuple[int, int, int]:
    """(busy, idle + iowait, steal) clock ticks of the whole machine so far, from
    /proc/stat's first line; differences over an interval give its busy and stolen shares."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    user, nice, system, idle, iowait, irq, softirq, steal = fields
    return user + nice + system + irq + softirq, idle + iowait, steal


def host_shares(before: tuple[int, int, int], after: tuple[int, int, int]) -> dict[str, float]:
    """The machine's busy and stolen shares of its CPU time between two host_cpu_ticks()."""
    busy, idle, steal = (b - a for a, b in zip(before, after, strict=True))
    total = max(busy + idle + steal, 1)
    return {"host_busy_share": round(busy / total, 3), "host_steal_share": round(steal / total, 4)}


def write_result(name: str, result: dict[str, object]) -> Path:
    out = ROOT / "benchmarks" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    result = {
        "machine": machine(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **result,
    }
    out.write_text(json.dumps(result, indent=2) + "\n")
    return out


def in_process(
    repo: Path, model: str, batch: np.ndarray, duration_s: float, warmup_s: float
) -> dict[str, float]:
    """The served model's backend called directly in a loop: no HTTP, no batcher. Each call
    ends with the output copy to the host, so device work is finished when it returns."""
    from inferpack.repository import LocalRepository
    from inferpack.runtime.metrics import ServingMetrics
    from inferpack.runtime.served_model import ServedModel
    from inferpack.runtime.workers import DevicePools

    source = LocalRepository(repo).sources(model)[0]
    backend = ServedModel.load(source, ServingMetrics(), DevicePools()).backends[0]
    inputs = {"input": batch}
    until = time.perf_counter() + warmup_s
    while time.perf_counter() < until:
        backend.run(inputs)
    latencies = []
    until = time.perf_counter() + duration_s
    while time.perf_counter() < until:
        started = time.perf_counter()
        backend.run(inputs)
        latencies.append(time.perf_counter() - started)
    p50 = float(np.median(latencies))
    return {
        "batch": len(batch),
        "latency_p50_ms": round(p50 * 1e3, 3),
        "items_per_s": round(len(batch) / p50, 1),
    }
