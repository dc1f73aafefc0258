"""Where gRPC's time goes, beside binary HTTP ([14] item 3: gRPC as fast as HTTP).

Triton's perf_analyzer (a C++ client, so the client's own Python does not count) drives
one inferpack serve over gRPC and over binary HTTP at concurrency 1, 8 and 32, for
tiny-mlp and small-cnn (their repo init configuration, the CNN's upload input dropped so
perf_analyzer sends its tensor); then the server under py-spy (200 Hz, no native frames)
while perf_analyzer drives tiny-mlp at concurrency 32: the share of samples in
inferpack's own request path (decode, engine, encode) against the rest (grpc.aio's Cython
and C core, aiohttp's C parser, which py-spy sees only as the Python frame that called
them, and idle). Last, the frameworks' floor: a server that does no work
(benchmarks/trivial_server.py) over aiohttp, grpc.aio and grpcio's thread-pool server,
its CPU seconds per call read from /proc

python -m benchmarks.grpc_vs_http [--duration-s 10]
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import (
    collapsed_samples,
    process_cpu_s,
    py_spy_record,
    serve_command,
    started_process,
    tensor_only_repository,
    write_result,
)
from benchmarks.perf_analyzer import find_perf_analyzer, read_csv

# Frames of inferpack's own work for one request, per protocol (py-spy function names).
OWN_PATH = {"grpc": "InferenceServicer._infer", "http": "infer (inferpack/protocol/rest.py"}
PORTS = {"http": 18531, "grpc": 18532}
MODELS = ("tiny-mlp", "small-cnn")
CONCURRENCY = (1, 8, 32)
FLOOR_CONCURRENCY = (1, 32)


def _perf(
    protocol: str, concurrency: str, out: Path, interval_ms: int, model: str = "tiny-mlp"
) -> list[dict[str, Any]]:
    analyzer = find_perf_analyzer()
    url = f"127.0.0.1:{PORTS[protocol]}"
    analyzer.run(
        ["-m", model, "-u", url, "-i", protocol, "--concurrency-range", concurrency,
         "--measurement-interval", str(interval_ms), "--stability-percentage", "50",
         "-f", str(out)]
    )  # fmt: skip
    rows = sorted(read_csv(out), key=lambda row: row["Concurrency"])
    return [
        {
            "concurrency": int(row["Concurrency"]),
            "inferences_per_s": row["Inferences/Second"],
            "p99_us": row.get("p99 latency"),
        }
        for row in rows
    ]


def _shares(raw: Path, protocol: str) -> dict[str, float]:
    """Shares of py-spy samples: threads of the model's worker pool (compute and their
    idle waits), the event loop idle in epoll, inferpack's own request path, and the rest:
    the protocol's machinery (grpc.aio's Cython and its poller thread, aiohttp) and the
    loop's own bookkeeping."""
    counts = collections.Counter[str]()
    for stack, count in collapsed_samples(raw):
        counts[_kind(stack, protocol)] += count
    total = sum(counts.values())
    shares: dict[str, float] = {k: round(v / total, 3) for k, v in sorted(counts.items())}
    shares["samples"] = total
    return shares


def _kind(stack: str, protocol: str) -> str:
    if "_worker (concurrent/futures/thread.py" in stack:
        return "worker_threads"
    if OWN_PATH[protocol] in stack:
        return "own_request_path"
    if stack.rsplit(";", 1)[-1].startswith("EpollSelector.select"):
        return "loop_idle_in_epoll"
    return "protocol_machinery_and_loop"


def _profile(pid: int, protocol: str, folder: Path, duration_s: float) -> dict[str, Any]:
    raw = folder / f"{protocol}.txt"
    spy = py_spy_record(pid, duration_s, raw, "--rate", "200")
    _perf(protocol, "32:32", folder / "busy.csv", int(duration_s * 1000 / 3))
    spy.wait(timeout=duration_s + 30)
    return _shares(raw, protocol)


def _levels(protocol: str, model: str, folder: Path) -> list[dict[str, Any]]:
    return [
        row
        for concurrency in CONCURRENCY
        for row in _perf(protocol, str(concurrency), folder / "level.csv", 3000, model)
    ]


def _floor(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """The no-work server per framework: rate, p99 and server CPU microseconds per call."""
    floor: dict[str, list[dict[str, Any]]] = {}
    for name, protocol, kind in (("aiohttp", "http", "aio"), ("grpc.aio", "grpc", "aio"),
                                 ("grpcio thread pool", "grpc", "sync")):  # fmt: skip
        command = [sys.executable, "-m", "benchmarks.trivial_server",
                   str(PORTS["http"]), str(PORTS["grpc"]), kind]  # fmt: skip
        with started_process(command, "ready") as (server, _):
            pid, floor[name] = server.pid, []
            for concurrency in FLOOR_CONCURRENCY:
                before_s, started_s = process_cpu_s(pid), time.monotonic()
                (row,) = _perf(protocol, str(concurrency), folder / "floor.csv", 3000, "m")
                calls = row["inferences_per_s"] * (time.monotonic() - started_s)
                row["server_cpu_us_per_call_about"] = round(
                    (process_cpu_s(pid) - before_s) / calls * 1e6, 1
                )  # calls include metadata and warm-up windows: an upper bound on the rate
                floor[name].append(row)
    return floor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration-s", type=float, default=10.0)
    args = parser.parse_args()
    result: dict[str, Any] = {"method": (__doc__ or "").split("\n\n")[1], "models": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tensor_only_repository(folder / "repo", list(MODELS))
        command = serve_command(
            folder / "repo", "--http-port", str(PORTS["http"]), "--grpc-port", str(PORTS["grpc"])
        )
        log = folder / "serve.log"
        with log.open("w") as sink:
            server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        try:
            _wait_ready(log, server)
            for model in MODELS:
                levels = {p: _levels(p, model, folder) for p in ("grpc", "http")}
                result["models"][model] = {"levels": levels, "grpc_over_http": _ratios(levels)}
                print(model, result["models"][model]["grpc_over_http"], flush=True)
            result["profile_at_32_tiny_mlp"] = {
                p: _profile(server.pid, p, folder, args.duration_s) for p in ("grpc", "http")
            }
        finally:
            server.terminate()
            server.wait(timeout=60)
        result["framework_floor"] = _floor(folder)
    out = write_result("grpc_vs_http.json", result)
    print(result["framework_floor"], out)


def _ratios(levels: dict[str, list[dict[str, Any]]]) -> dict[str, float]:
    return {
        str(g["concurrency"]): round(g["inferences_per_s"] / h["inferences_per_s"], 3)
        for g, h in zip(levels["grpc"], levels["http"], strict=True)
    }


def _wait_ready(log: Path, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while "ready on" not in log.read_text():
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start:\n{log.read_text()}")
        time.sleep(0.2)


if __name__ == "__main__":
    main()
