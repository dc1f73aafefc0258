"""Does the simulated p90 hold on a real server? [11]'s validation, on this machine.

    a repository of 64 distinct small-cnn models
    inferpack profile: 8 copies, --cpu-threads 1, writes capacity and the server block
    for models in (8, 24, 64), utilisation in (0.3, 0.6, 0.8, 0.9) of that capacity:
        Zipf(1.0) demand over the models at utilisation x capacity
        a one-server plan holding them (plan.yaml written directly: the server is fixed)
        inferpack simulate            -> predicted p90
        inferpack serve --cpu-threads 1 + inferpack loadtest --demand, straight to it
                                      -> measured p90 (pooled over the models)
    ratio = measured / simulated; the acceptance band is 0.75 .. 1.25

The load generator shares the 2 cores with the server, as it would on a user's laptop;
the profile was measured the same way, so its server block carries that contention.

    python -m benchmarks.validate_simulate [--duration-s 20] [--counts 8,24,64]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import write_result
from benchmarks.fleet_local import INSTANCE, catalog, cli, run
from benchmarks.many_models import build_repository
from inferpack.loadtest.histogram import pooled_percentile_ms
from inferpack.plan.formats import (
    ModelShare,
    Plan,
    PlanSummary,
    ServerPlan,
    read_profiles,
    write_plan,
)

SLO_MS = 50.0
_LISTENING = re.compile(r"listening\s+on\s+(http://\S+?)[,\s]")


def zipf_rates(count: int, total_rps: float) -> dict[str, float]:
    weights = 1.0 / np.arange(1, count + 1)
    return {f"cnn-{i:04d}": float(total_rps * w / weights.sum()) for i, w in enumerate(weights)}


def write_inputs(folder: Path, rates: dict[str, float]) -> tuple[Path, Path]:
    demand = folder / "demand.csv"
    lines = ["model,kind,rps", *(f"{m},small-cnn,{r:.4f}" for m, r in rates.items())]
    demand.write_text("\n".join(lines) + "\n")
    shares = tuple(ModelShare(m, "small-cnn", round(r, 4)) for m, r in rates.items())
    server = ServerPlan("local-vm-001", INSTANCE, 0.1, shares, 1.0, 0.1, 0.0, None)
    plan = folder / "plan.yaml"
    write_plan(plan, Plan(PlanSummary(SLO_MS, "fixed", 0.0, 0.1, 0.1, 0.0), (server,)))
    return demand, plan


def simulate(plan: Path, profiles: Path, demand: Path, out: Path) -> dict[str, Any]:
    run("simulate", str(plan), "--profiles", str(profiles), "--demand", str(demand),
        "--duration-s", "600", "--output", str(out))  # fmt: skip
    document: dict[str, Any] = json.loads(out.read_text())["fleet"]
    return document


def measure(repo: Path, names: list[str], demand: Path, out: Path, duration_s: float) -> Any:
    args = [
        "serve",
        "--model-repository",
        str(repo),
        "--http-port",
        "0",
        "--grpc-port",
        "-1",
        "--model-control-mode",
        "explicit",
        "--cpu-threads",
        "1",
        "--log-level",
        "warning",
    ]
    for name in names:
        args += ["--load-model", name]
    log = out.with_suffix(".log")
    with log.open("w") as sink:
        server = subprocess.Popen(cli(*args), stdout=sink, stderr=sink, text=True)
    try:
        url = _wait(log, server)
        run("loadtest", "--url", url, "--demand", str(demand), "--duration-s", str(duration_s),
            "--warmup-s", "3", "--output", str(out))  # fmt: skip
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    level = json.loads(out.read_text())["levels"][0]
    stats = [s for s in level["per_model"].values() if s["requests"]]
    return {
        "p90_ms": pooled_percentile_ms([s["latency_histogram"] for s in stats], 90),
        "throughput_rps": level["throughput_rps"],
        "errors": sum(s["errors"] for s in stats),
    }


def _wait(log: Path, process: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        text = log.read_text()
        found = _LISTENING.search(text)
        if found and re.search(r"ready\s+on", text):
            return found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"the server did not start:\n{log.read_text()}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="8,24,64")
    parser.add_argument("--utilizations", default="0.3,0.6,0.8,0.9")
    parser.add_argument("--duration-s", type=float, default=20.0)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo, prices, profiles = root / "repo", root / "prices.yaml", root / "profiles.yaml"
        build_repository(repo, max(counts))
        catalog(prices)
        run("profile", "--model-repository", str(repo), "--model", "cnn-0000",
            "--kind", "small-cnn", "--slo-p90-ms", str(SLO_MS), "--instance-type", INSTANCE,
            "--catalog", str(prices), "--region", "local", "--models-per-server", "8",
            "--cpu-threads", "1", "--duration-s", "6", "--output", str(profiles))  # fmt: skip
        [profile] = read_profiles([profiles])
        for count in counts:
            for share in (float(u) for u in args.utilizations.split(",")):
                folder = root / f"{count}-{share}"
                folder.mkdir()
                rates = zipf_rates(count, share * profile.capacity_rps)
                demand, plan = write_inputs(folder, rates)
                predicted = simulate(plan, profiles, demand, folder / "sim.json")
                measured = measure(repo, list(rates), demand, folder / "lt.json", args.duration_s)
                row = {
                    "models": count,
                    "utilization": share,
                    "rate_rps": round(sum(rates.values()), 2),
                    "simulated_p90_ms": predicted["p90_ms"],
                    "measured_p90_ms": measured["p90_ms"],
                    "measured_throughput_rps": measured["throughput_rps"],
                    "errors": measured["errors"],
                    "ratio": round(measured["p90_ms"] / predicted["p90_ms"], 3),
                }
                rows.append(row)
                print(row, flush=True)
    within = sum(1 for r in rows if 0.75 <= r["ratio"] <= 1.25)
    out = write_result(
        "validate_simulate.json",
        {
            "profile": {
                "capacity_rps": profile.capacity_rps,
                "server": None if profile.server is None else profile.server.__dict__,
            },
            "points": rows,
            "within_25pct": f"{within}/{len(rows)}",
        },
    )
    print(f"{within}/{len(rows)} points within +-25 %; {out}")


if __name__ == "__main__":
    main()
