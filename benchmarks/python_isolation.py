"""A CPU-bound pure-Python model beside small-cnn: what ``instances.kind: process`` buys.

    one server (inferpack serve, its own process): small-cnn and a pure-Python model
    ("spin": a Python loop of about SPIN_MS per request, which holds the GIL throughout)
    small-cnn driven open-loop at RATE req/s (loadtest --rate-rps), measured three ways:
      alone             the spin model is not loaded
      spin in-thread    spin (kind: thread) driven closed-loop at concurrency 2 meanwhile
      spin in-process   spin (kind: process) driven the same way, its worker at nice 0
                        and at the default nice 10
    small-cnn's p50/p90/p99 in each; spin's own throughput beside it

The acceptance ([13]): with kind process, small-cnn's p99 rises by at most 20 % over alone.

    python -m benchmarks.python_isolation [--rate-rps 40] [--duration-s 20]
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import write_result
from benchmarks.fleet_local import cli
from benchmarks.validate_simulate import wait_listening

SPIN = textwrap.dedent(
    """\
    import time

    import numpy as np


    class InferpackModel:
        \"\"\"Pure Python, CPU-bound: a loop that holds the GIL for about spin_ms.\"\"\"

        def __init__(self, context):
            self.spin_s = float(context.parameters["spin_ms"]) / 1e3

        def execute(self, inputs):
            end = time.perf_counter() + self.spin_s
            total = 0
            while time.perf_counter() < end:
                for i in range(1000):
                    total += i * i
            return {"y": inputs["x"] + (total % 7)}
    """
)


SPIN_MODELS = {
    "spin-thread": {"kind": "thread"},
    "spin-process-nice0": {"kind": "process", "nice": 0},
    "spin-process": {"kind": "process"},  # the default nice (10)
}


def build_repository(root: Path, spin_ms: float) -> None:
    from inferpack.repository.init import init_repository

    init_repository(root, ["small-cnn"])
    for name, instances in SPIN_MODELS.items():
        folder = root / name
        (folder / "1").mkdir(parents=True)
        (folder / "1" / "model.py").write_text(SPIN)
        config = {
            "platform": "python",
            "max_batch_size": 0,
            "inputs": [{"name": "x", "datatype": "FP32", "shape": [1]}],
            "outputs": [{"name": "y", "datatype": "FP32", "shape": [1]}],
            "instances": {**instances, "count": 1},
            "parameters": {"spin_ms": str(spin_ms)},
        }
        (folder / "model.yaml").write_text(yaml.safe_dump(config))


def _loadtest(url: str, out: Path, *args: str) -> subprocess.Popen[str]:
    command = cli("loadtest", "--url", url, "--output", str(out), *args)
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _level(out: Path) -> dict[str, Any]:
    level = json.loads(out.read_text())["levels"][0]
    latency = level["latency_ms"]
    return {
        "throughput_rps": level["throughput_rps"],
        "requests": level["requests"],
        "errors": sum(level["errors"].values()) if level["errors"] else 0,
        **{f"{p}_ms": latency.get(p) for p in ("p50", "p90", "p99")},
    }


def measure(repo: Path, spin: str | None, rate_rps: float, duration_s: float, tmp: Path) -> Any:
    """small-cnn at ``rate_rps`` with ``spin`` (a model name, or None) busy meanwhile."""
    args = ["serve", "--model-repository", str(repo), "--http-port", "0", "--grpc-port", "-1",
            "--model-control-mode", "explicit", "--load-model", "small-cnn",
            "--log-level", "warning"]  # fmt: skip
    if spin:
        args += ["--load-model", spin]
    log = tmp / f"serve-{spin}.log"
    with log.open("w") as sink:
        server = subprocess.Popen(cli(*args), stdout=sink, stderr=sink, text=True)
    try:
        url = wait_listening(log, server)
        busy = None
        if spin:
            busy = _loadtest(url, tmp / f"{spin}.json", "--model", spin, "--concurrency", "2",
                             "--duration-s", str(duration_s + 6), "--warmup-s", "1")  # fmt: skip
            time.sleep(2)
        cnn = tmp / f"cnn-{spin}.json"
        done = _loadtest(url, cnn, "--model", "small-cnn", "--rate-rps", str(rate_rps),
                         "--duration-s", str(duration_s), "--warmup-s", "2")  # fmt: skip
        if done.wait() != 0:
            raise RuntimeError(done.stderr.read() if done.stderr else "loadtest failed")
        result = {"small_cnn": _level(cnn)}
        if busy is not None:
            if busy.wait() != 0:
                raise RuntimeError(busy.stderr.read() if busy.stderr else "loadtest failed")
            result["spin"] = _level(tmp / f"{spin}.json")
        return result
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate-rps", type=float, default=40.0)
    parser.add_argument("--duration-s", type=float, default=20.0)
    parser.add_argument("--spin-ms", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        repo = tmp / "repo"
        build_repository(repo, args.spin_ms)
        runs = {
            name: measure(repo, spin, args.rate_rps, args.duration_s, tmp)
            for name, spin in (("alone", None), ("spin_thread", "spin-thread"),
                               ("spin_process_nice0", "spin-process-nice0"),
                               ("spin_process", "spin-process"))
        }  # fmt: skip
    alone = runs["alone"]["small_cnn"]["p99_ms"]
    result = {
        "method": __doc__.split("\n\n")[1] if __doc__ else "",
        "rate_rps": args.rate_rps,
        "duration_s": args.duration_s,
        "spin_ms": args.spin_ms,
        "runs": runs,
        "p99_ratio_to_alone": {
            name: round(run["small_cnn"]["p99_ms"] / alone, 3) for name, run in runs.items()
        },
    }
    out = write_result("python_isolation.json", result)
    print(json.dumps(result["p99_ratio_to_alone"]), out)


if __name__ == "__main__":
    main()
