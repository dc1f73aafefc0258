"""Does the predicted p90 hold on a real server, and through the router? [11]'s validation.

    a repository of 64 distinct small-cnn models
    inferpack profile --models-per-server 8,24,64 --traffic zipf:1.0 --cpu-threads 1:
        capacity and the server block (fitted service spread) at each count, measured
        straight to the server; and the same with --through-router (the server as a
        one-server local fleet, the load through its router)
    for models in (8, 24, 64), utilisation in (0.3, 0.6, 0.8, 0.9) of that count's capacity:
        Zipf(1.0) demand over the models; a one-server plan holding them
        planned p90  = the planner's tail-constraint simulation of that server (plan/tail.py)
        simulated    = inferpack simulate
        measured     = serve --cpu-threads 1 + loadtest --demand straight to it
        and through the router, at that share of the capacity measured through the router,
        predicted from that profile: deploy --target local (the same server behind the
        router) + loadtest --demand to the router (pooled p90 over the models), with the
        router's CPU per request (its process's CPU seconds / requests)
    ratio = measured / predicted; the acceptance band is 0.75 .. 1.25
    service ratio = the point's own batches (the server's statistics over the measurement)
        against the profile's batch curve for the same sizes: the host's speed then,
        against when profiled; adjusted = the planner's p90 from the profile with its batch
        curve times that ratio: with the host's speed known, is the latency model right?
    profiled = the profile's own measured p90 at that rate (between its levels): measured /
        profiled is the host and the harness (same server, same rate, later), profiled /
        predicted the fit; a miss is one or the other

The load generator shares the 2 cores with the server (and the router), as the profile's
did, so the profile's numbers carry that contention.

    python -m benchmarks.validate_simulate [--duration-s 40] [--profile-duration-s 20]
        [--counts 8,24,64] [--utilizations 0.3,0.6,0.8,0.9] [--no-router]
        [--output-name validate_simulate.json]
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from benchmarks.common import host_cpu_ticks, host_shares, process_cpu_s, write_result
from benchmarks.fleet_local import INSTANCE, catalog, cli, run, start_fleet
from benchmarks.many_models import build_repository
from inferpack.loadtest.histogram import pooled_percentile_ms
from inferpack.plan.counts import families
from inferpack.plan.formats import (
    Demand,
    ModelShare,
    Plan,
    PlanSummary,
    RatePoint,
    ServerPlan,
    read_profiles,
    write_plan,
)
from inferpack.plan.problem import PlanOptions, ServerType, build_problem
from inferpack.plan.tail import simulated_p90_ms
from inferpack.profile.calibrate import batch_totals, request_times_ms
from inferpack.profile.fit import usable_points

SLO_MS = 50.0
BAND = (0.75, 1.25)
WARMUP_S = 3
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


def planned_p90_ms(profiles: Path, rates: dict[str, float]) -> float | None:
    """The planner's own prediction for this one server: its tail-constraint simulation."""
    demand = [Demand(m, "small-cnn", r) for m, r in rates.items()]
    box = ServerType(INSTANCE, 0.1, 24_000.0)
    problem = build_problem(read_profiles([profiles]), demand, [box], PlanOptions(SLO_MS))
    return simulated_p90_ms(problem, dict.fromkeys(range(len(demand)), 1.0), 0)


def simulate(
    plan: Path, profiles: Path, demand: Path, out: Path, router_ms: float, network_ms: float
) -> float:
    run("simulate", str(plan), "--profiles", str(profiles), "--demand", str(demand),
        "--duration-s", "300", "--router-ms", f"{router_ms:.4f}",
        "--network-ms", f"{network_ms:.4f}", "--output", str(out))  # fmt: skip
    p90: float = json.loads(out.read_text())["fleet"]["p90_ms"]
    return p90


def _level(out: Path) -> dict[str, Any]:
    """The point's measurement: every request goes to the one server, so the level's own
    percentiles (nearest rank over the raw latencies) are the server's; runs 1-6 read them
    from the per-model histograms pooled (steps of 5-10 %)."""
    level = json.loads(out.read_text())["levels"][0]
    stats = [s for s in level["per_model"].values() if s["requests"]]
    errors = sum(level["errors"].values())
    answered = level["requests"] - errors  # throughput_rps counts only these
    return {
        "p50_ms": level["latency_ms"]["p50"],
        "p90_ms": level["latency_ms"]["p90"],
        "p90_histogram_ms": pooled_percentile_ms([s["latency_histogram"] for s in stats], 90),
        "throughput_rps": level["throughput_rps"],
        "requests": level["requests"],
        "errors": errors,
        "measured_s": round(answered / max(level["throughput_rps"], 1e-9), 1),
        "stable": level["stable"],
    }


def measure_point(url: str, demand: Path, out: Path, duration_s: float) -> dict[str, Any]:
    """_loadtest, then _level, with the machine's busy and stolen CPU shares over it (the
    load generator's warm-up and start included): two cores shared by the server, the
    router and the load generator, and whatever else the host runs; and the server's own
    batch service curve over the point (its statistics extension, through the router when
    routed: it sums its servers')."""
    stats_before = _get_json(f"{url}/v2/models/stats")
    before = host_cpu_ticks()
    _loadtest(url, demand, out, duration_s)
    shares = host_shares(before, host_cpu_ticks())
    stats_after = _get_json(f"{url}/v2/models/stats")
    names = [model["name"] for model in stats_after.get("model_stats", [])]
    frontend_ms, _ = request_times_ms(stats_before, stats_after, names)
    return {**_level(out), **shares, "batch_service": service_delta(stats_before, stats_after),
            "server_frontend_ms": frontend_ms}  # fmt: skip


def _get_json(url: str) -> Any:
    import urllib.request

    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())


def service_delta(before: Any, after: Any) -> dict[int, tuple[int, float]]:
    """Per batch size, (batches, mean ms of one) computed between two stats documents, over
    every model: the curve the point's server actually ran, beside the profile's."""
    names = [model["name"] for model in after.get("model_stats", [])]
    start, end = batch_totals(before, names), batch_totals(after, names)
    curve = {}
    for size, (count, ns) in end.items():
        count0, ns0 = start.get(size, (0, 0))
        if count > count0:
            curve[size] = (count - count0, round((ns - ns0) / (count - count0) / 1e6, 4))
    return curve


def service_ratio(measured: dict[int, tuple[int, float]], profiled: Any) -> float | None:
    """The point's batches against the profile's curve for the same sizes: total measured
    compute / total the profile's curve gives those batches (sizes it lacks interpolated).
    Above 1 the server computed slower than when profiled: the host, not the queueing."""
    if profiled is None or not measured:
        return None
    sizes, times = zip(*profiled.batch_service_ms, strict=True)
    spent = sum(count * ms for count, ms in measured.values())
    expected = sum(count * float(np.interp(b, sizes, times)) for b, (count, _) in measured.items())
    return round(spent / expected, 4) if expected > 0 else None


def scaled_profiles(profiles: Path, factor: float, out: Path) -> Path:
    """``profiles`` with every server block's batch curve times ``factor``: the profile as it
    would have measured a host that computed at the point's speed (the spread fit kept)."""
    document = yaml.safe_load(profiles.read_text())
    for entry in document["profiles"]:
        curve = (entry.get("server") or {}).get("batch_service_ms")
        if curve:
            entry["server"]["batch_service_ms"] = {b: ms * factor for b, ms in curve.items()}
    out.write_text(yaml.safe_dump(document, sort_keys=False))
    return out


def host_adjusted(
    measured: dict[str, Any], profile: Any, profiles: Path, rates: dict[str, float], out: Path
) -> dict[str, Any]:
    """The point's service ratio and the planner's p90 again from the profile scaled by it:
    with the host's speed at the point known, is the latency model right?"""
    ratio = service_ratio(measured["batch_service"], profile.server)
    if ratio is None:
        return {"service_ratio": None, "adjusted_planned_p90_ms": None, "adjusted_ratio": None}
    adjusted = planned_p90_ms(scaled_profiles(profiles, ratio, out), rates)
    return {"service_ratio": ratio, "adjusted_planned_p90_ms": adjusted,
            "adjusted_ratio": _within(measured["p90_ms"], adjusted)}  # fmt: skip


def _loadtest(url: str, demand: Path, out: Path, duration_s: float) -> None:
    """Exactly ``duration_s`` measured (3 windows), as a profile level is. With loadtest's
    default (until 3 windows agree, at most 10) a point ran 20 s when calm and 67 s when a
    window was slow, all 10 pooled: at 80-90 % load straight, measured / profiled had a
    median of 0.69 at the first and 1.62 at the second (runs 1-6, docs/plan.md)."""
    run("loadtest", "--url", url, "--demand", str(demand), "--duration-s", str(duration_s),
        "--max-windows", "3", "--warmup-s", str(WARMUP_S), "--output", str(out))  # fmt: skip


def measure_direct(repo: Path, names: list[str], demand: Path, out: Path, duration_s: float) -> Any:
    args = ["serve", "--model-repository", str(repo), "--http-port", "0", "--grpc-port", "-1",
            "--model-control-mode", "explicit", "--cpu-threads", "1",
            "--log-level", "warning"]  # fmt: skip
    for name in names:
        args += ["--load-model", name]
    log = out.with_suffix(".log")
    with log.open("w") as sink:
        server = subprocess.Popen(cli(*args), stdout=sink, stderr=sink, text=True)
    try:
        level = measure_point(wait_listening(log, server), demand, out, duration_s)
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=60)
    return level


def measure_routed(
    repo: Path, plan: Path, prices: Path, demand: Path, out: Path, duration_s: float
) -> Any:
    fleet, router = start_fleet(plan, repo, prices, out.with_suffix(".log"))
    try:
        _wait_ready(router)
        before = process_cpu_s(fleet.pid)
        level = measure_point(router, demand, out, duration_s)
        router_cpu_s = process_cpu_s(fleet.pid) - before
    finally:
        fleet.send_signal(signal.SIGTERM)
        fleet.wait(timeout=120)
    # Every request went through the router, the 3 s of warm-up at the same rate included.
    sent = level["requests"] + level["throughput_rps"] * WARMUP_S
    level["router_cpu_ms_per_request"] = round(1e3 * router_cpu_s / max(sent, 1), 4)
    return level


def _wait_ready(url: str) -> None:
    import urllib.request

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/v2/health/ready", timeout=5) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the router at {url} never became ready")


def wait_listening(log: Path, process: subprocess.Popen[str]) -> str:
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


def profiled_p90_ms(levels: Sequence[RatePoint], rate_rps: float) -> float | None:
    """The profile's own measured p90 at ``rate_rps`` (interpolated in the rate between the
    levels that answered it, the ones the fit uses; None outside them). Beside the
    prediction it splits a miss in two: measured / profiled is the host and harness (the
    same server and rate an hour apart), profiled / predicted the model's fit."""
    points = usable_points(levels)
    slack = 1e-9 * rate_rps  # 0.3 x 575 is 172.49999999999997, the level is at 172.5
    if not points or not points[0].rate_rps - slack <= rate_rps <= points[-1].rate_rps + slack:
        return None
    rates = [p.rate_rps for p in points]
    return round(float(np.interp(rate_rps, rates, [p.p90_ms for p in points])), 3)


def _within(measured: float, predicted: float | None) -> float | None:
    return None if not predicted else round(measured / predicted, 3)


def host_probe_ms() -> float:
    """A fixed piece of CPU work timed in this process (median of 5, ms): a number for how
    fast the host is at that moment, beside each profile and point, so a miss that came
    with a slow host shows it (it sees the host's speed, not its contention later)."""
    matrix = np.random.default_rng(0).random((192, 192))
    times = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(40):
            matrix @ matrix
        total = 0
        for i in range(20_000):
            total += i
        times.append(time.perf_counter() - started)
    return round(1e3 * float(np.median(times)), 3)


def profile(
    repo: Path, prices: Path, out: Path, counts: str, duration_s: float, *extra: str
) -> None:
    run("profile", "--model-repository", str(repo), "--model", "cnn-0000",
        "--kind", "small-cnn", "--slo-p90-ms", str(SLO_MS), "--instance-type", INSTANCE,
        "--catalog", str(prices), "--region", "local", "--models-per-server", counts,
        "--traffic", "zipf:1.0", "--cpu-threads", "1", "--duration-s", str(duration_s),
        "--start-rps", "200", "--output", str(out), *extra)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--counts", default="8,24,64")
    parser.add_argument("--utilizations", default="0.3,0.6,0.8,0.9")
    # Seconds measured per point, exactly (3 windows). Runs 1-6: 20, or 67 when unstable.
    parser.add_argument("--duration-s", type=float, default=40.0)
    parser.add_argument("--output-name", default="validate_simulate.json")
    parser.add_argument("--no-router", action="store_true")
    # Seconds per profile level (3 windows). Runs 1-4 used 6 (the profile's default then),
    # runs 5-6 20 (docs/plan.md, "Level length").
    parser.add_argument("--profile-duration-s", type=float, default=20.0)
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",")]
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo, prices = root / "repo", root / "prices.yaml"
        profiles, routed_profiles = root / "profiles.yaml", root / "profiles-routed.yaml"
        build_repository(repo, max(counts))
        catalog(prices)
        started = time.perf_counter()
        probes = {"before_profile": host_probe_ms()}
        profile(repo, prices, profiles, args.counts, args.profile_duration_s)
        profile_s = time.perf_counter() - started
        family = next(iter(families(read_profiles([profiles])).values()))
        routed_family = None
        if not args.no_router:
            probes["before_routed_profile"] = host_probe_ms()
            profile(repo, prices, routed_profiles, args.counts, args.profile_duration_s,
                    "--through-router")  # fmt: skip
            routed_family = next(iter(families(read_profiles([routed_profiles])).values()))
        for count in counts:
            for share in (float(u) for u in args.utilizations.split(",")):
                folder = root / f"{count}-{share}"
                folder.mkdir()
                rates = zipf_rates(count, share * family.at(count).capacity_rps)
                demand, plan = write_inputs(folder, rates)
                row: dict[str, Any] = {
                    "models": count,
                    "utilization": share,
                    "rate_rps": round(sum(rates.values()), 2),
                    "planned_p90_ms": planned_p90_ms(profiles, rates),
                    "profiled_p90_ms": profiled_p90_ms(
                        family.at(count).points, sum(rates.values())
                    ),
                    "simulated_p90_ms": simulate(plan, profiles, demand, folder / "s.json", 0, 0),
                }
                row.update(direct_point(repo, profiles, family.at(count), rates, demand,
                                        folder, row, args.duration_s))  # fmt: skip
                if routed_family is not None:
                    row.update(routed_point(root, repo, prices, routed_profiles, routed_family,
                                            count, share, args.duration_s))  # fmt: skip
                rows.append(row)
                print(row, flush=True)
        document = yaml.safe_load(profiles.read_text())
        routed_document = None
        if routed_family is not None:
            routed_document = yaml.safe_load(routed_profiles.read_text())
    keys = ("direct_ratio_sim", "direct_ratio_plan", "routed_ratio_sim", "routed_ratio_plan",
            "direct_ratio_profiled", "routed_ratio_profiled", "direct_adjusted_ratio",
            "routed_adjusted_ratio")  # fmt: skip
    summary = {
        key: f"{sum(1 for r in rows if r.get(key) and BAND[0] <= r[key] <= BAND[1])}/{len(rows)}"
        for key in keys
        if any(key in r for r in rows)  # --no-router: no routed ratios to count
    }
    out = write_result(
        args.output_name,
        {
            "profiles": document["profiles"],
            "routed_profiles": None if routed_document is None else routed_document["profiles"],
            "profile_s": round(profile_s, 1),
            "profile_duration_s": args.profile_duration_s,
            "duration_s": args.duration_s,
            "host_probe_ms": probes,
            "points": rows,
            "within_25pct": summary,
        },
    )
    print(f"within +-25 %: {summary}; {out}")


def direct_point(
    repo: Path,
    profiles: Path,
    profile: Any,
    rates: dict[str, float],
    demand: Path,
    folder: Path,
    row: dict[str, Any],
    duration_s: float,
) -> dict[str, Any]:
    """One point straight to the server (``row`` holds its predictions)."""
    probe = host_probe_ms()
    direct = measure_direct(repo, list(rates), demand, folder / "d.json", duration_s)
    adjusted = host_adjusted(direct, profile, profiles, rates, folder / "scaled.yaml")
    return {
        "host_probe_ms": probe,
        "direct": direct,
        "direct_ratio_sim": _within(direct["p90_ms"], row["simulated_p90_ms"]),
        "direct_ratio_plan": _within(direct["p90_ms"], row["planned_p90_ms"]),
        "direct_ratio_profiled": _within(direct["p90_ms"], row["profiled_p90_ms"]),
        **{f"direct_{key}": value for key, value in adjusted.items()},
    }


def routed_point(
    root: Path,
    repo: Path,
    prices: Path,
    profiles: Path,
    family: Any,
    count: int,
    share: float,
    duration_s: float,
) -> dict[str, Any]:
    """One point through the local fleet's router, at ``share`` of the capacity measured
    through the router (profile --through-router), predicted from that profile."""
    folder = root / f"{count}-{share}-routed"
    folder.mkdir()
    rates = zipf_rates(count, share * family.at(count).capacity_rps)
    demand, plan = write_inputs(folder, rates)
    planned = planned_p90_ms(profiles, rates)
    simulated = simulate(plan, profiles, demand, folder / "s.json", 0, 0)
    probe = host_probe_ms()
    routed = measure_routed(repo, plan, prices, demand, folder / "lt.json", duration_s)
    profiled = profiled_p90_ms(family.at(count).points, sum(rates.values()))
    adjusted = host_adjusted(routed, family.at(count), profiles, rates, folder / "scaled.yaml")
    return {
        **{f"routed_{key}": value for key, value in adjusted.items()},
        "routed_rate_rps": round(sum(rates.values()), 2),
        "routed_host_probe_ms": probe,
        "routed_profiled_p90_ms": profiled,
        "routed_ratio_profiled": _within(routed["p90_ms"], profiled),
        "routed_planned_p90_ms": planned,
        "routed_simulated_p90_ms": simulated,
        "routed": routed,
        "routed_ratio_sim": _within(routed["p90_ms"], simulated),
        "routed_ratio_plan": _within(routed["p90_ms"], planned),
    }


if __name__ == "__main__":
    main()
