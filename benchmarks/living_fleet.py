"""A living local fleet under a changing trace: deploy --follow beside loadtest --trace.

    12 tiny-mlp models (each its own weights), Zipf 1.0 demand; a plan for the first phase
    inferpack deploy plan.yaml --target local --follow --interval-s I --profiles P
    inferpack loadtest --url ROUTER --trace trace.csv, four phases of P seconds:
        base       60 req/s, models 0..11 by Zipf rank
        shift      the hot set moves: model i takes the rate of model (i + 6) mod 12
        up         3x (180 req/s), hot set as in shift
        down       0.5x of base (30 req/s)
    from the fleet's own log (every line read as it is printed, timed here): servers
    started and stopped, models loaded, moved and unloaded; from loadtest: each window's
    rate, errors and p90

Reported: failed requests (acceptance: 0), windows over the SLO outside transitions (a
transition lasts two intervals), each transition's settling time (its last applied step),
server-seconds over the trace against a static plan for the peak (every model at its
highest rate of the trace, headroom as --follow), and the log's actions.

The profile is written by hand and deliberately conservative (80 req/s per server for a
model this VM serves at over 1,000 req/s): four servers, the router and the load
generator share two cores, so capacity is set where the fleet's mechanics, not the host,
decide the outcome. The plan's type is this VM, priced nominally.

    python -m benchmarks.living_fleet [--phase-s 75] [--interval-s 15]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.common import write_result
from inferpack.plan.formats import Demand, Profile, read_plan, write_demand, write_profiles
from inferpack.plan.problem import PlanOptions, ServerType
from inferpack.plan.solve import make_plan
from inferpack.repository.init import init_repository

INSTANCE = "local-vm"
PRICE_USD_PER_HOUR = 0.1
MODELS = 12
BASE_RPS = 60.0
SLO_MS = 50.0
CAPACITY_RPS = 80.0
HEADROOM = 0.2
PHASES = (("base", 1.0, 0), ("shift", 1.0, 6), ("up", 3.0, 6), ("down", 0.5, 6))
_ROUTER = re.compile(r"router\s+listening\s+on\s+(http://[^\s,]+)")
_STARTED = re.compile(r"^\s+(\S+)\s+\S+\s+\d+ models\s+http://")
_READY = re.compile(r"server (\S+) ready at")
_STOPPED = re.compile(r"stopped server (\S+)")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "inferpack", *args]


def run(*args: str, timeout_s: float = 600) -> str:
    done = subprocess.run(
        cli(*args), capture_output=True, text=True, timeout=timeout_s, check=False
    )
    if done.returncode:
        raise RuntimeError(f"{args[0]} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def repository(root: Path) -> Path:
    repo = root / "repo"
    for index in range(MODELS):
        seed_dir = root / f"seed-{index}"
        init_repository(seed_dir, ["tiny-mlp"], index)
        name = f"m{index:02d}"
        shutil.copytree(seed_dir / "tiny-mlp", repo / name)
        config = repo / name / "model.yaml"
        config.write_text(yaml.safe_dump({**yaml.safe_load(config.read_text()), "name": name}))
        shutil.rmtree(seed_dir)
    return repo


def rates(scale: float, shift: int) -> dict[str, float]:
    weights = 1.0 / np.arange(1, MODELS + 1)
    base = BASE_RPS * weights / weights.sum()
    return {f"m{i:02d}": round(float(base[(i + shift) % MODELS]) * scale, 4) for i in range(MODELS)}


def write_inputs(root: Path, phase_s: float) -> dict[str, Path]:
    catalog, profiles = root / "catalog.yaml", root / "profiles.yaml"
    entry = {
        "name": INSTANCE, "region": "local", "basis": "on-demand",
        "price_usd_per_hour": PRICE_USD_PER_HOUR, "price_date": time.strftime("%Y-%m-%d"),
        "source": "nominal: this VM has no price", "vcpu": os.cpu_count() or 1,
        "memory_gib": 16, "accelerator": None, "accelerator_count": 0,
        "accelerator_memory_gib": None,
    }  # fmt: skip
    catalog.write_text(yaml.safe_dump({"instances": [entry]}))
    profile = Profile("tiny-mlp", INSTANCE, 60.0, CAPACITY_RPS, SLO_MS, "hand-written", 8)
    write_profiles(profiles, [profile])
    demand = root / "demand.csv"
    write_demand(demand, [Demand(m, "tiny-mlp", r) for m, r in rates(1.0, 0).items()])
    trace = root / "trace.csv"
    lines = ["t_s,model,rps"]
    for number, (_, scale, shift) in enumerate(PHASES):
        lines += [f"{number * phase_s},{m},{r}" for m, r in rates(scale, shift).items()]
    trace.write_text("\n".join(lines) + "\n")
    return {"catalog": catalog, "profiles": profiles, "demand": demand, "trace": trace}


def static_peak_servers(profiles: Path) -> int:
    """Servers of a fresh plan for every model's highest rate of the trace x (1 + headroom)."""
    peak: dict[str, float] = {}
    for _, scale, shift in PHASES:
        for model, rps in rates(scale, shift).items():
            peak[model] = max(peak.get(model, 0.0), rps * (1 + HEADROOM))
    from inferpack.plan.formats import read_profiles

    plan = make_plan(
        read_profiles([profiles]),
        [Demand(m, "tiny-mlp", r) for m, r in peak.items()],
        [ServerType(INSTANCE, PRICE_USD_PER_HOUR, 16 * 1024)],
        PlanOptions(slo_p90_ms=SLO_MS),
    )
    return len(plan.servers)


class FleetLog:
    """The fleet's output, each line with the wall time it was read."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[tuple[float, str]] = []
        self._process = process
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self.lines.append((time.time(), line.rstrip("\n")))

    def wait_for(self, pattern: re.Pattern[str], timeout_s: float) -> re.Match[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for _, line in list(self.lines):
                found = pattern.search(line)
                if found:
                    return found
            if self._process.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError("fleet did not start:\n" + "\n".join(t for _, t in self.lines))


def server_changes(log: list[tuple[float, str]]) -> list[tuple[float, int]]:
    """(time, +1) for each server started or ready, (time, -1) for each stopped, in order."""
    changes = []
    for at, line in log:
        if _STARTED.search(line) or _READY.search(line):
            changes.append((at, +1))
        elif _STOPPED.search(line):
            changes.append((at, -1))
    return sorted(changes)


def server_seconds(changes: list[tuple[float, int]], begin: float, end: float) -> float:
    """The integral of servers running over [begin, end)."""
    total, running, last = 0.0, 0, begin
    for at, change in changes:
        if at > begin:
            total += running * (min(at, end) - last)
            last = min(max(at, begin), end)
        running += change
    return total + running * max(0.0, end - last)


def servers_at(changes: list[tuple[float, int]], at: float) -> int:
    return sum(change for when, change in changes if when <= at)


def settling_times(
    lines: list[tuple[float, str]],
    begin: float,
    transitions: list[float],
    phase_s: float,
    interval_s: float,
) -> list[dict[str, Any]]:
    """For each transition: when the servers (last start or stop), the routing (the table
    switch of that step) and the moves (last applied step) settled, seconds after it."""
    applied = [at - begin for at, line in lines if re.search(r"step \d+: applied", line)]
    resized = [at - begin for at, line in lines if _READY.search(line) or _STOPPED.search(line)]
    switched = [at - begin for at, line in lines if "router: table switched" in line]
    settling = []
    for number, t in enumerate(transitions):
        steps = [a - t for a in applied if t <= a < t + phase_s]
        sizes = [a - t for a in resized if t <= a < t + phase_s]
        routes = [a - t for a in switched if t <= a < t + phase_s
                  and any(abs(a - t - size) < 5.0 for size in sizes)]  # fmt: skip
        settling.append({
            "at_s": t, "to_phase": PHASES[number + 1][0],
            "servers_settled_s_after": round(max(sizes), 1) if sizes else 0.0,
            "servers_settled_intervals": round(max(sizes) / interval_s, 2) if sizes else 0.0,
            "routing_settled_s_after": round(max(routes), 1) if routes else 0.0,
            "last_move_s_after": round(max(steps), 1) if steps else None,
            "steps_applied": len(steps),
        })  # fmt: skip
    return settling


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--phase-s", type=float, default=75.0)
    parser.add_argument("--interval-s", type=float, default=15.0)
    parser.add_argument("--window-s", type=float, default=5.0)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="living-fleet-"))
    repo = repository(root)
    inputs = write_inputs(root, args.phase_s)
    plan_path = root / "plan.yaml"
    run("plan", "--profiles", str(inputs["profiles"]), "--demand", str(inputs["demand"]),
        "--slo-p90-ms", str(SLO_MS), "--output", str(plan_path), "--catalog",
        str(inputs["catalog"]), "--region", "local", "--headroom", str(HEADROOM))  # fmt: skip
    initial = read_plan(plan_path)
    env = {**os.environ, "COLUMNS": "400", "TMPDIR": str(root)}
    fleet = subprocess.Popen(
        cli("deploy", str(plan_path), "--target", "local", "--model-repository", str(repo),
            "--catalog", str(inputs["catalog"]), "--region", "local",
            "--router-http-port", "0", "--router-grpc-port", "-1", "--follow",
            "--interval-s", str(args.interval_s), "--profiles", str(inputs["profiles"]),
            "--headroom", str(HEADROOM)),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )  # fmt: skip
    log = FleetLog(fleet)
    duration_s = args.phase_s * len(PHASES)
    try:
        url = log.wait_for(_ROUTER, 300).group(1)
        result_path = root / "loadtest.json"
        run("loadtest", "--url", url, "--trace", str(inputs["trace"]), "--duration-s",
            str(duration_s), "--window-s", str(args.window_s), "--output", str(result_path),
            timeout_s=duration_s + 300)  # fmt: skip
    finally:
        fleet.send_signal(signal.SIGTERM)
        fleet.wait(timeout=120)
    loadtest = json.loads(result_path.read_text())
    level = loadtest["levels"][0]
    begin = level["started_unix_s"]
    end = begin + duration_s
    windows = level["windows"]
    transitions = [number * args.phase_s for number in range(1, len(PHASES))]
    settle_s = 2 * args.interval_s

    def in_transition(start: float) -> bool:
        return any(t <= start < t + settle_s or t <= start + args.window_s - 1e-9 < t + settle_s
                   for t in transitions)  # fmt: skip

    changes = server_changes(log.lines)
    rows = []
    for number, window in enumerate(windows):
        start = number * args.window_s
        rows.append({
            "t_s": start,
            "phase": PHASES[min(int(start // args.phase_s), len(PHASES) - 1)][0],
            "servers": servers_at(changes, begin + start + args.window_s),
            "transition": in_transition(start),
            **window,
        })  # fmt: skip
    steady = [r for r in rows if not r["transition"]]
    over = [r for r in steady if r["latency_p90_ms"] > SLO_MS]
    settling = settling_times(log.lines, begin, transitions, args.phase_s, args.interval_s)
    used = server_seconds(changes, begin, end)
    peak_servers = static_peak_servers(inputs["profiles"])
    document: dict[str, Any] = {
        "setup": {
            "models": MODELS, "base_rps": BASE_RPS, "phases": [p[0] for p in PHASES],
            "phase_s": args.phase_s, "interval_s": args.interval_s, "slo_p90_ms": SLO_MS,
            "profile_capacity_rps": CAPACITY_RPS, "headroom": HEADROOM,
            "initial_servers": len(initial.servers),
        },
        "failed_requests": sum(w["errors"] for w in windows),
        "requests": sum(w["requests"] for w in windows),
        "loadtest_errors": level["errors"],
        "steady_windows": len(steady),
        "steady_windows_over_slo": len(over),
        "settling": settling,
        "server_seconds": round(used, 1),
        "static_peak_servers": peak_servers,
        "static_peak_server_seconds": round(peak_servers * duration_s, 1),
        "saving": round(1 - used / (peak_servers * duration_s), 3),
        "max_servers": max(r["servers"] for r in rows),
        "min_servers": min(r["servers"] for r in rows),
        "windows": rows,
        "fleet_log": [f"{at - begin:8.1f}  {line}" for at, line in log.lines],
    }  # fmt: skip
    write_result("living_fleet.json", document)
    print(json.dumps({k: v for k, v in document.items() if k not in ("windows", "fleet_log")},
                     indent=1))  # fmt: skip
    if math.isnan(used):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
