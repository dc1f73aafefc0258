"""How far apart are p90s of one server at one rate, measured again? [11]'s noise floor.

One `serve --cpu-threads 1` of 8 small-cnn models (the validation's server), one Zipf(1.0)
demand at a fixed rate, measured again and again by `loadtest --demand` (3 s of warm-up
each), alternating short windows (6 s, the profile's level length before) and long ones
(20 s, the validation's points and the profile's level length now); before each, the
validation's host probe. No prediction is involved: the spread of these p90s is what any
prediction from one measurement to another must live with on this host. Each measurement
is the validation's (validate_simulate.measure_point): exactly its window, the p90 over raw
latencies, and the machine's busy and stolen CPU shares over it.

    python -m benchmarks.p90_noise [--rate-rps 540] [--windows 6,6,20,...]
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import write_result
from benchmarks.fleet_local import cli
from benchmarks.many_models import build_repository
from benchmarks.validate_simulate import (
    host_probe_ms,
    measure_point,
    wait_listening,
    write_inputs,
    zipf_rates,
)

MODELS = 8
WINDOWS = "6,6,20,6,6,20,6,6,20,6,6,20"


def spread(p90s: list[float]) -> dict[str, float]:
    """Median, range and the largest ratio of one p90 to the median."""
    median = float(np.median(p90s))
    return {
        "windows": len(p90s),
        "median_ms": round(median, 3),
        "min_ms": round(min(p90s), 3),
        "max_ms": round(max(p90s), 3),
        "max_over_median": round(max(p90s) / median, 3),
        "min_over_median": round(min(p90s) / median, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate-rps", type=float, default=540.0)
    parser.add_argument("--windows", default=WINDOWS)
    args = parser.parse_args()
    windows = [float(w) for w in args.windows.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo = root / "repo"
        build_repository(repo, MODELS)
        rates = zipf_rates(MODELS, args.rate_rps)
        demand, _ = write_inputs(root, rates)
        command = ["serve", "--model-repository", str(repo), "--http-port", "0",
                   "--grpc-port", "-1", "--model-control-mode", "explicit",
                   "--cpu-threads", "1", "--log-level", "warning"]  # fmt: skip
        for name in rates:
            command += ["--load-model", name]
        log = root / "serve.log"
        with log.open("w") as sink:
            server = subprocess.Popen(cli(*command), stdout=sink, stderr=sink, text=True)
        try:
            url = wait_listening(log, server)
            for index, window_s in enumerate(windows):
                probe = host_probe_ms()
                out = root / f"window-{index}.json"
                level = measure_point(url, demand, out, window_s)
                keys = ("p50_ms", "p90_ms", "throughput_rps", "measured_s", "host_busy_share",
                        "host_steal_share")  # fmt: skip
                row = {"window_s": window_s, "host_probe_ms": probe, **{k: level[k] for k in keys}}
                rows.append(row)
                print(row, flush=True)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
    by_window = {
        f"{window_s:g}s": spread([r["p90_ms"] for r in rows if r["window_s"] == window_s])
        for window_s in sorted(set(windows))
    }
    print(by_window)
    print(write_result("p90_noise.json", {
        "method": (__doc__ or "").split("\n\n")[1], "rate_rps": args.rate_rps,
        "models": MODELS, "windows": rows, "p90_by_window": by_window,
    }))  # fmt: skip


if __name__ == "__main__":
    main()
