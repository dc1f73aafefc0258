"""Where gRPC's time goes, beside binary HTTP ([14] item 3: gRPC as fast as HTTP).

one inferpack serve (tiny-mlp), Triton's perf_analyzer (a C++ client, so the client's
own Python does not count) over gRPC and over binary HTTP at concurrency 1 and 32
then the server under py-spy (200 Hz, no native frames) while perf_analyzer drives it
at concurrency 32: the share of samples in inferpack's own request path (decode,
engine, encode) against the rest (grpc.aio's Cython and C core, aiohttp's C parser,
which py-spy sees only as the Python frame that called them, and idle)

python -m benchmarks.grpc_vs_http [--duration-s 10]
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import collapsed_samples, py_spy_record, serve_command, write_result
from benchmarks.perf_analyzer import find_perf_analyzer, read_csv
from inferpack.repository.init import init_repository

# Frames of inferpack's own work for one request, per protocol (py-spy function names).
OWN_PATH = {"grpc": "InferenceServicer._infer", "http": "infer (inferpack/protocol/rest.py"}
PORTS = {"http": 18531, "grpc": 18532}


def _perf(protocol: str, concurrency: str, out: Path, interval_ms: int) -> list[dict[str, Any]]:
    analyzer = find_perf_analyzer()
    url = f"127.0.0.1:{PORTS[protocol]}"
    analyzer.run(
        ["-m", "tiny-mlp", "-u", url, "-i", protocol, "--concurrency-range", concurrency,
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration-s", type=float, default=10.0)
    args = parser.parse_args()
    result: dict[str, Any] = {"method": (__doc__ or "").split("\n\n")[1], "protocols": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        init_repository(folder / "repo", ["tiny-mlp"])
        command = serve_command(
            folder / "repo", "--http-port", str(PORTS["http"]), "--grpc-port", str(PORTS["grpc"])
        )
        log = folder / "serve.log"
        with log.open("w") as sink:
            server = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT)
        try:
            _wait_ready(log, server)
            for protocol in ("grpc", "http"):
                levels = _perf(protocol, "1:32:31", folder / f"{protocol}.csv", 3000)
                profile = _profile(server.pid, protocol, folder, args.duration_s)
                result["protocols"][protocol] = {"levels": levels, "profile_at_32": profile}
        finally:
            server.terminate()
            server.wait(timeout=60)
    grpc, http = (result["protocols"][p]["levels"] for p in ("grpc", "http"))
    result["grpc_over_http"] = {
        str(g["concurrency"]): round(g["inferences_per_s"] / h["inferences_per_s"], 3)
        for g, h in zip(grpc, http, strict=True)
    }
    out = write_result("grpc_vs_http.json", result)
    print(result["grpc_over_http"], out)


def _wait_ready(log: Path, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while "ready on" not in log.read_text():
        if server.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the server did not start:\n{log.read_text()}")
        time.sleep(0.2)


if __name__ == "__main__":
    main()
