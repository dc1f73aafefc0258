"""profile → plan → deploy --target local → loadtest --demand, end to end on this machine.

    36 distinct small-cnn models (each its own weights) in a repository
    inferpack profile: one server holding 12 copies, p90 SLO, this machine's capacity
    inferpack plan: Zipf demand over the 36 models, at most 12 models per server
    inferpack deploy --target local: the plan's servers as processes behind the router
    inferpack loadtest --url ROUTER --demand: every model at its own rate
    per server: measured p90 (its models' latency histograms pooled) beside predicted_p90_ms

Every step is the CLI in a subprocess, as a user would run it. The instance type is this
VM, priced nominally in a catalogue override (it has no price; the plan's shape, not its
dollars, is what is checked here).

    python -m benchmarks.fleet_local [--models 36] [--duration-s 30]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.common import write_result
from benchmarks.many_models import build_repository
from inferpack.loadtest.histogram import pooled_percentile_ms

INSTANCE = "local-vm"
_ROUTER = re.compile(r"router\s+listening\s+on\s+(http://\S+?)[,\s]")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "from inferpack.cli import main; main()", *args]


def run(*args: str, timeout_s: float = 900) -> None:
    done = subprocess.run(
        cli(*args), capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode:
        raise RuntimeError(f"{args[0]} failed:\n{done.stdout}\n{done.stderr}")


def catalog(path: Path) -> None:
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    entry = {
        "name": INSTANCE,
        "region": "local",
        "basis": "on-demand",
        "price_usd_per_hour": 0.1,
        "price_date": time.strftime("%Y-%m-%d"),
        "source": "nominal: this VM has no price",
        "vcpu": os.cpu_count() or 1,
        "memory_gib": round(memory_gib, 1),
        "accelerator": None,
        "accelerator_count": 0,
        "accelerator_memory_gib": None,
    }
    path.write_text(yaml.safe_dump({"instances": [entry]}))


def demand(path: Path, models: int, total_rps: float) -> dict[str, float]:
    weights = 1.0 / np.arange(1, models + 1) ** 1.0
    rates = {f"cnn-{i:04d}": round(total_rps * w / weights.sum(), 3) for i, w in enumerate(weights)}
    lines = ["model,kind,rps", *(f"{m},small-cnn,{r}" for m, r in rates.items())]
    path.write_text("\n".join(lines) + "\n")
    return rates


def start_fleet(
    plan: Path, repo: Path, prices: Path, log: Path
) -> tuple[subprocess.Popen[str], str]:
    args = ("deploy", str(plan), "--target", "local", "--model-repository", str(repo),
            "--catalog", str(prices), "--region", "local", "--router-http-port", "0",
            "--router-grpc-port", "-1", "--cpu-threads", "1")  # fmt: skip
    sink = log.open("w")
    process = subprocess.Popen(cli(*args), stdout=sink, stderr=sink, text=True)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        found = _ROUTER.search(log.read_text())
        if found:
            return process, found.group(1)
        if process.poll() is not None:
            break
        time.sleep(0.5)
    process.kill()
    raise RuntimeError(f"the fleet did not start:\n{log.read_text()}")


def per_server(plan: dict[str, Any], level: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for server in plan["servers"]:
        names = [m["name"] for m in server["models"]]
        stats = [level["per_model"].get(n) for n in names]
        answered = [s for s in stats if s]
        rows.append(
            {
                "server": server["name"],
                "models": len(names),
                "planned_rps": round(sum(m["rps"] for m in server["models"]), 3),
                "achieved_rps": round(sum(s["achieved_rps"] for s in answered), 3),
                "errors": sum(s["errors"] for s in answered),
                "models_answered": sum(1 for s in answered if s["requests"] > s["errors"]),
                "predicted_p90_ms": server["predicted_p90_ms"],
                "measured_p90_ms": pooled_percentile_ms(
                    [s["latency_histogram"] for s in answered], 90
                ),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", type=int, default=36)
    parser.add_argument("--per-server", type=int, default=12)
    parser.add_argument("--total-rps", type=float, default=120.0)
    parser.add_argument("--slo-p90-ms", type=float, default=50.0)
    parser.add_argument("--duration-s", type=float, default=30.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo, prices = root / "repo", root / "prices.yaml"
        build_repository(repo, args.models)
        catalog(prices)
        started = time.perf_counter()
        run("profile", "--model-repository", str(repo), "--model", "cnn-0000",
            "--kind", "small-cnn", "--slo-p90-ms", str(args.slo_p90_ms),
            "--instance-type", INSTANCE, "--catalog", str(prices), "--region", "local",
            "--models-per-server", str(args.per_server), "--max-models", str(args.per_server),
            "--cpu-threads", "1", "--duration-s", "6",
            "--output", str(root / "profiles.yaml"))  # fmt: skip
        profile_s = time.perf_counter() - started
        rates = demand(root / "demand.csv", args.models, args.total_rps)
        run("plan", "--profiles", str(root / "profiles.yaml"), "--demand", str(root / "demand.csv"),
            "--slo-p90-ms", str(args.slo_p90_ms), "--catalog", str(prices), "--region", "local",
            "--output", str(root / "plan.yaml"))  # fmt: skip
        plan = yaml.safe_load((root / "plan.yaml").read_text())
        fleet, router = start_fleet(root / "plan.yaml", repo, prices, root / "fleet.log")
        try:
            run("loadtest", "--url", router, "--demand", str(root / "demand.csv"),
                "--duration-s", str(args.duration_s), "--warmup-s", "3",
                "--output", str(root / "loadtest.json"))  # fmt: skip
        finally:
            fleet.send_signal(signal.SIGTERM)
            fleet_exit = fleet.wait(timeout=120)
        level = json.loads((root / "loadtest.json").read_text())["levels"][0]
        profile = yaml.safe_load((root / "profiles.yaml").read_text())["profiles"][0]
    servers = per_server(plan, level)
    result = {
        "profile": profile,
        "profile_s": round(profile_s, 1),
        "demand_total_rps": round(sum(rates.values()), 3),
        "plan": plan["plan"],
        "totals": plan["totals"],
        "servers": servers,
        "loadtest": {
            k: level.get(k) for k in ("offered", "throughput_rps", "errors", "latency_ms")
        },
        "models_answered": sum(
            1 for s in level["per_model"].values() if s["requests"] > s["errors"]
        ),
        "models": args.models,
        "fleet_exit_code": fleet_exit,
    }
    out = write_result("fleet_local.json", result)
    for row in servers:
        print(row)
    print(
        f"{result['models_answered']}/{args.models} models answered; fleet exit {fleet_exit}; {out}"
    )


if __name__ == "__main__":
    main()
