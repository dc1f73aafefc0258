"""Load generator benchmark (issue [4]) on this machine.

1. The generator's own ceiling: closed loop at concurrency 64 against a server that does no
   work (benchmarks/trivial_server.py), 1 and 2 worker processes, HTTP binary and gRPC.
2. tiny-mlp served by inferpack at concurrency 1, 8, 32, 64 over HTTP JSON, HTTP binary
   and gRPC.
Writes benchmarks/results/loadtest_cpu.json (and a report with the curves).

    python -m benchmarks.loadtest_cpu [--duration-s 6]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
from pathlib import Path

from benchmarks.common import serve_command, started, write_result
from inferpack.loadtest.runner import run_loadtest
from inferpack.loadtest.spec import LoadSpec
from inferpack.repository.init import init_repository

LEVELS = (1, 8, 32, 64)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _summary(document: dict) -> list[dict]:  # type: ignore[type-arg]
    return [
        {
            "concurrency": level["concurrency"],
            "stable": level["stable"],
            "requests_per_s": level["throughput_rps"],
            "latency_ms": level["latency_ms"],
            "errors": level["errors"],
        }
        for level in document["levels"]
    ]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration-s", type=float, default=6.0)
    args = parser.parse_args()
    timing = {"duration_s": args.duration_s, "warmup_s": 1.0, "max_windows": 6}
    http_port, grpc_port = _free_port(), _free_port()
    trivial = [sys.executable, "-m", "benchmarks.trivial_server", str(http_port), str(grpc_port)]
    ceiling = {}
    with started(trivial, "ready"):
        for workers in (1, 2):
            for transport, url in (
                ("http-binary", f"http://127.0.0.1:{http_port}"),
                ("grpc", f"grpc://127.0.0.1:{grpc_port}"),
            ):
                spec = LoadSpec(
                    url, ("m",), transport=transport, levels=(64,), workers=workers, **timing
                )
                ceiling[f"{transport}_workers{workers}"] = _summary(run_loadtest(spec))[0]
    repo = Path(tempfile.mkdtemp(prefix="inferpack-lt-"))
    init_repository(repo, ["tiny-mlp"], seed=0)
    http_port, grpc_port = _free_port(), _free_port()
    server = serve_command(repo, "--http-port", str(http_port), "--grpc-port", str(grpc_port))
    served, documents = {}, []
    with started(server, "ready on"):
        for transport, url in (
            ("http-json", f"http://127.0.0.1:{http_port}"),
            ("http-binary", f"http://127.0.0.1:{http_port}"),
            ("grpc", f"grpc://127.0.0.1:{grpc_port}"),
        ):
            document = run_loadtest(
                LoadSpec(url, ("tiny-mlp",), transport=transport, levels=LEVELS, **timing)
            )
            documents.append(document)
            served[transport] = _summary(document)
    results = Path(__file__).parent / "results"
    for document in documents:
        name = f"loadtest_tiny_mlp_{document['spec']['transport']}.json"
        (results / name).write_text(__import__("json").dumps(document, indent=1) + "\n")
    path = write_result(
        "loadtest_cpu.json",
        {
            "method": documents[0]["method"],
            "note": "generator and server share this machine's 2 cores",
            "generator_ceiling_trivial_server_concurrency_64": ceiling,
            "tiny_mlp_served_by_inferpack": served,
        },
    )
    print(path.read_text())


if __name__ == "__main__":
    main()
