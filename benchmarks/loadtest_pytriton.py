"""`inferpack loadtest` against NVIDIA Triton (PyTriton), a KServe v2 server that is not ours.

Starts benchmarks/pytriton_server.py with a separate venv that has nvidia-pytriton (default
/tmp/pyt; make it with `python3 -m venv /tmp/pyt && /tmp/pyt/bin/pip install
nvidia_pytriton-0.7.0-...whl numpy`), then runs the `inferpack loadtest` CLI of this
project's venv:

  sleep20 (20 ms per call, no batching, one instance), known answers:
    --concurrency 1   calibration: the server's real per-call time t (20 ms + overhead)
    --concurrency 4   expect ~1/t req/s (~50 at t = 20 ms), p50 ~4t (~80 ms)
    --rate-rps 20     expect 20 req/s, p50 ~t (~20 ms) plus a little queueing
    each over HTTP binary, HTTP JSON and gRPC;
  tiny (FP32 [16] -> [4], dynamic batching up to 64): --concurrency 1,8,32,64 over HTTP
    binary, HTTP JSON (--no-binary) and gRPC;

all with --duration-s 6 --warmup-s 1 --max-windows 6. Each run writes one JSON into
benchmarks/results/pytriton/; then the server is stopped (SIGTERM) and summary.md is
written from the JSONs. Only 127.0.0.1 traffic; every step has a timeout.

    .venv/bin/python benchmarks/loadtest_pytriton.py [--pytriton-python /tmp/pyt/bin/python]
    .venv/bin/python benchmarks/loadtest_pytriton.py --summary-only
"""

from __future__ import annotations

import argparse
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results" / "pytriton"
INFERPACK = ROOT / ".venv" / "bin" / "inferpack"
TIMING = ["--duration-s", "6", "--warmup-s", "1", "--max-windows", "6"]
START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 30.0
# Per level: 2.5 s worker start-up + 1 s warm-up + at most 6 windows of 2 s, plus slack.
RUN_TIMEOUT_PER_LEVEL_S = 45.0
TRANSPORTS = ("http-binary", "http-json", "grpc")
OBSERVATIONS = "## Observations"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _runs(http: str, grpc: str) -> list[tuple[str, list[str], int]]:
    """(result name, loadtest arguments, number of levels) for every run."""
    urls = {"http-binary": [http], "http-json": [http, "--no-binary"], "grpc": [grpc]}
    runs = []
    for transport in TRANSPORTS:
        url = ["--url", *urls[transport]]
        for name, load in (
            ("concurrency1", ["--concurrency", "1"]),
            ("concurrency4", ["--concurrency", "4"]),
            ("rate20", ["--rate-rps", "20"]),
        ):
            runs.append((f"sleep20_{name}_{transport}", [*url, "--model", "sleep20", *load], 1))
    for transport in TRANSPORTS:
        url = ["--url", *urls[transport]]
        runs.append(
            (f"tiny_{transport}", [*url, "--model", "tiny", "--concurrency", "1,8,32,64"], 4)
        )
    return runs


def _start_server(
    python: str, http_port: int, grpc_port: int, log: Path
) -> subprocess.Popen[bytes]:
    command = [
        python,
        str(ROOT / "benchmarks" / "pytriton_server.py"),
        "--http-port",
        str(http_port),
        "--grpc-port",
        str(grpc_port),
    ]
    handle = log.open("wb")
    server = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=handle, start_new_session=True
    )
    assert server.stdout is not None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([server.stdout], [], [], 1.0)
        if ready:
            line = server.stdout.readline()
            if not line:
                break
            handle.write(line)
            handle.flush()
            if line.strip() == b"ready":
                return server
        elif server.poll() is not None:
            break
    _stop_server(server)
    raise RuntimeError(f"PyTriton server did not start within {START_TIMEOUT_S:.0f} s; see {log}")


def _stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=10)


def _server_info(http: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{http}/v2", timeout=10) as reply:
        info: dict[str, Any] = json.loads(reply.read())
    models = {}
    for model in ("sleep20", "tiny"):
        with urllib.request.urlopen(f"{http}/v2/models/{model}", timeout=10) as reply:
            models[model] = json.loads(reply.read())
    return {"server": info, "models": models}


def _pytriton_version(python: str) -> str:
    out = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('nvidia-pytriton'))"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout.strip()


def run_all(python: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    http_port, grpc_port = _free_port(), _free_port()
    http, grpc = f"http://127.0.0.1:{http_port}", f"grpc://127.0.0.1:{grpc_port}"
    server = _start_server(python, http_port, grpc_port, RESULTS / "server.log")
    outcomes: dict[str, Any] = {}
    try:
        info = _server_info(http)
        info["pytriton"] = _pytriton_version(python)
        (RESULTS / "server_info.json").write_text(json.dumps(info, indent=1) + "\n")
        for name, arguments, levels in _runs(http, grpc):
            output = RESULTS / f"{name}.json"
            output.unlink(missing_ok=True)
            command = [str(INFERPACK), "loadtest", *arguments, *TIMING, "--output", str(output)]
            print(f"== {name}: {' '.join(command[1:])}", flush=True)
            try:
                done = subprocess.run(
                    command,
                    capture_output=True,
                    text=True,
                    timeout=RUN_TIMEOUT_PER_LEVEL_S * levels + 30,
                    check=False,
                )
                outcome = {"rc": done.returncode, "tail": (done.stdout + done.stderr)[-2000:]}
            except subprocess.TimeoutExpired:
                outcome = {"rc": "timeout", "tail": ""}
            outcomes[name] = {"command": command[1:], **outcome}
            print(f"   rc={outcome['rc']}", flush=True)
            if outcome["rc"] != 0:
                print(outcome["tail"], flush=True)
    finally:
        _stop_server(server)
        (RESULTS / "runs.json").write_text(json.dumps(outcomes, indent=1) + "\n")
    write_summary()


def _lscpu_head() -> str:
    try:
        out = subprocess.run(
            ["lscpu"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return "(lscpu unavailable)"
    return "\n".join(out.splitlines()[:10])


def _row(name: str, transport: str, level: dict[str, Any]) -> str:
    load = (
        f"concurrency {level['concurrency']}"
        if level["concurrency"] is not None
        else f"rate {level['rate_rps']:g} req/s"
    )
    latency = level["latency_ms"]
    late = "" if level["late_fraction"] is None else f"{level['late_fraction']:.1%}"
    return (
        f"| {name} | {transport} | {load} | {level['throughput_rps']:.1f} | "
        f"{latency.get('p50', 0):.1f} | {latency.get('p99', 0):.1f} | "
        f"{'yes' if level['stable'] else 'no'} | {level['errors'] or 0} | "
        f"{level['requests']} | {late} |"
    )


def write_summary() -> Path:
    info = json.loads((RESULTS / "server_info.json").read_text())
    runs = (
        json.loads((RESULTS / "runs.json").read_text()) if (RESULTS / "runs.json").exists() else {}
    )
    header = (
        "| model | transport | load | req/s | p50 ms | p99 ms | stable | errors | "
        "requests | late sends |\n|---|---|---|---:|---:|---:|---|---|---:|---:|"
    )
    tables: dict[str, list[str]] = {"sleep20": [], "tiny": []}
    environment: dict[str, Any] = {}
    for name, _, _ in _runs("http://x", "grpc://x"):
        model = name.split("_")[0]
        path = RESULTS / f"{name}.json"
        if not path.exists():
            rc = runs.get(name, {}).get("rc", "not run")
            tables[model].append(f"| {model} | {name} | (no result, rc={rc}) | | | | | | | |")
            continue
        document = json.loads(path.read_text())
        environment = document["environment"]
        for level in document["levels"]:
            tables[model].append(_row(model, document["spec"]["transport"], level))
    server = info["server"]
    shapes = {
        model: {
            "inputs": [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]],
            "outputs": [(t["name"], t["datatype"], t["shape"]) for t in meta["outputs"]],
        }
        for model, meta in info["models"].items()
    }
    text = f"""# `inferpack loadtest` against NVIDIA Triton (PyTriton)

Generated by `benchmarks/loadtest_pytriton.py` from the JSONs in this folder (one per run,
`inferpack.loadtest/1` schema). Server: `benchmarks/pytriton_server.py`.

## Versions

- nvidia-pytriton {info["pytriton"]} (wheel `nvidia_pytriton-0.7.0-py3-none-manylinux_2_35_x86_64`),
  in its own venv (/tmp/pyt, Python {environment.get("python", "?")} from pyenv)
- Triton Inference Server inside it: `{server["name"]}` {server["version"]} (from `GET /v2`),
  CPU only (no GPU on this machine; Triton logs that CUDA is unavailable and goes on)
- load generator: inferpack {environment.get("inferpack", "?")}
  (git {environment.get("git_sha", "?")}), Python {environment.get("python", "?")},
  one worker process
- model metadata as Triton reports it: `{json.dumps(shapes)}`

## Machine

{environment.get("cores", "?")}-core VM, {environment.get("platform", "?")}; server and load
generator share these cores (127.0.0.1 only).

```
{_lscpu_head()}
```

## Method

`inferpack loadtest ... --duration-s 6 --warmup-s 1 --max-windows 6`: windows of 2 s, a level
is stable when its last 3 windows agree within 10 % on throughput and p99 (else it stops after
6 windows and is reported unstable); percentiles are nearest-rank over the raw latencies of
the reported windows. "late sends" (open loop only) is the fraction of sends more than 1 ms
behind the Poisson schedule.

## sleep20 (20 ms per call, batching disabled, one instance): known answers

{header}
{chr(10).join(tables["sleep20"])}

## tiny (FP32 [16] -> [4] numpy linear layer, dynamic batching, max_batch_size 64)

{header}
{chr(10).join(tables["tiny"])}
"""
    path = RESULTS / "summary.md"
    if path.exists() and OBSERVATIONS in path.read_text():  # hand-written, kept on rewrite
        text += "\n" + OBSERVATIONS + path.read_text().split(OBSERVATIONS, 1)[1]
    path.write_text(text)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pytriton-python", default="/tmp/pyt/bin/python")
    parser.add_argument("--summary-only", action="store_true")
    args = parser.parse_args()
    if args.summary_only:
        print(write_summary().read_text())
        return
    if not Path(args.pytriton_python).exists():
        sys.exit(f"{args.pytriton_python}: no such interpreter (make the PyTriton venv first)")
    run_all(args.pytriton_python)
    print((RESULTS / "summary.md").read_text())


if __name__ == "__main__":
    main()
