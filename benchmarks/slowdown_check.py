"""Did each server's tolerated slowdown say when its SLO would break? ([11], run 8 on.)

For every point of a stored ``validate_simulate`` run that recorded the server's own
batches (run 8 on: ``service_ratio``, the point's batches against the profile's curve),
on both paths: the planner's tolerated slowdown of that server (``plan.tail``: the largest
factor by which its host may compute slower than profiled with the simulated p90 still
within the SLO), from the run's own profile at the point's rates. A server is predicted
to break the SLO where the host at the point ran slower than that factor
(service_ratio > tolerated); the table sets that beside whether the measured p90 did.
The ratio is the batches' alone (the statistics extension times compute, not the
frontend's share of the event loop); the tolerance slows both, as a slower host would.

python -m benchmarks.slowdown_check [RUN.json] [--slo-p90-ms 50]
    writes benchmarks/results/slowdown_check_<run>.json (run8 for validate_simulate_run8.json)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import write_result
from benchmarks.validate_simulate import INSTANCE, SLO_MS, zipf_rates
from inferpack.plan.formats import Demand, read_profiles
from inferpack.plan.problem import PlanOptions, ServerType, build_problem
from inferpack.plan.tail import simulated_p90_ms, tolerated_slowdown

RESULTS = Path(__file__).resolve().parent / "results"
PATHS = {"direct": ("profiles", "rate_rps"), "routed": ("routed_profiles", "routed_rate_rps")}


def profiles_file(raw: list[dict[str, Any]], out: Path) -> Path:
    """A run's stored profiles as profiles.yaml (JSON turned the curve's sizes into text)."""
    entries = []
    for entry in raw:
        server = dict(entry["server"])
        server["batch_service_ms"] = {int(b): ms for b, ms in server["batch_service_ms"].items()}
        table = server.get("service_cv_by_rate") or {}
        server["service_cv_by_rate"] = {float(r): cv for r, cv in table.items()}
        entries.append({**entry, "server": server})
    out.write_text(yaml.safe_dump({"profiles": entries}, sort_keys=False))
    return out


def check(run: dict[str, Any], slo_ms: float, folder: Path) -> list[dict[str, Any]]:
    rows = []
    for path, (profiles_key, rate_key) in PATHS.items():
        if not run.get(profiles_key):
            continue
        profiles = read_profiles([profiles_file(run[profiles_key], folder / f"{path}.yaml")])
        for point in run["points"]:
            ratio = point.get(f"{path}_service_ratio")
            if ratio is None:
                continue
            rates = zipf_rates(point["models"], point[rate_key])
            demand = [Demand(m, "small-cnn", r) for m, r in rates.items()]
            box = ServerType(INSTANCE, 0.1, 24_000.0)
            problem = build_problem(profiles, demand, [box], PlanOptions(slo_ms))
            members = dict.fromkeys(range(len(demand)), 1.0)
            p90 = simulated_p90_ms(problem, members, 0)
            assert p90 is not None
            tolerated = tolerated_slowdown(problem, members, 0, slo_ms, p90)
            measured = point[path]["p90_ms"]
            rows.append({
                "path": path, "models": point["models"], "utilization": point["utilization"],
                "rate_rps": point[rate_key], "planned_p90_ms": p90,
                "tolerated_slowdown": tolerated, "service_ratio": ratio,
                "measured_p90_ms": measured, "breach_predicted": ratio > tolerated,
                "breach_measured": measured > slo_ms,
            })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("run", nargs="?", default=str(RESULTS / "validate_simulate_run8.json"))
    parser.add_argument("--slo-p90-ms", type=float, default=SLO_MS)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = check(json.loads(Path(args.run).read_text()), args.slo_p90_ms, Path(tmp))
    agree = sum(r["breach_predicted"] == r["breach_measured"] for r in rows)
    for row in rows:
        print(row)
    summary = {
        "points": len(rows),
        "breach_predicted_as_measured": agree,
        "breaches_measured": sum(r["breach_measured"] for r in rows),
        "breaches_predicted": sum(r["breach_predicted"] for r in rows),
    }
    print(summary)
    name = f"slowdown_check_{Path(args.run).stem.removeprefix('validate_simulate_')}.json"
    print(write_result(name, {"run": Path(args.run).name,
                                                "slo_p90_ms": args.slo_p90_ms,
                                                "points": rows, "summary": summary}))  # fmt: skip


if __name__ == "__main__":
    main()
