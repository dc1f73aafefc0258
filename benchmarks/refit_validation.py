"""The validation's stored runs predicted again with other spread fits ([11]).

For each point of each stored ``validate_simulate`` run, straight to the server and
through the router, the server is simulated again from that run's own profile of that
path (the 8, 24 or 64-copy entry, Zipf 1.0 over the copies, at the point's rate) with
three fits of the service spread to the same profile levels, and compared with the point's
measured p90: one spread for every rate (``service_cv``); each level's own spread made
non-decreasing by a running maximum (the table before); and the non-decreasing table of
least absolute log error (isotonic regression, ``profile.fit``'s table now). Same
measurements, predictions recomputed: what the fit changes, independent of the VM's
run-to-run spread. Each point also gets the profile's own p90 at its rate (between the
levels that answered), so a miss splits into host (measured / profiled) and fit.
Every simulated p90 is the planner's (``plan.tail.server_p90_ms``): replications until
their p90s agree; ``--max-replications 1`` predicts with one 20 s run per point, as the
planner did before, for comparison.
Writes benchmarks/results/refit_validation.json (refit_validation_one_replication.json).

python -m benchmarks.refit_validation [RUN.json ...] [--max-replications N]
"""

from __future__ import annotations

import argparse
import itertools
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.common import write_result
from benchmarks.validate_simulate import profiled_p90_ms
from inferpack.plan import tail
from inferpack.plan.formats import RatePoint
from inferpack.plan.server_model import ServerModel, parse_server_model
from inferpack.profile.fit import (
    CV_GRID,
    isotonic_indices,
    log_errors,
    running_max_indices,
    simulated_p90_ms,
    traffic_weights,
    usable_points,
)

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = (
    "validate_simulate.json",
    "validate_simulate_run2.json",
    "validate_simulate_run3.json",
    "validate_simulate_run4.json",
    "validate_simulate_run5.json",
    "validate_simulate_count8_diag.json",
    "validate_simulate_count8_fill.json",
    "validate_simulate_run6.json",
    "validate_simulate_run7.json",
)
BAND = 0.25
FITS = ("one_cv", "running_max", "isotonic")
# path -> (profiles key, rate key, measurement key)
PATHS = {
    "direct": ("profiles", "rate_rps", "direct"),
    "routed": ("routed_profiles", "routed_rate_rps", "routed"),
}


def _block(raw: dict[str, Any]) -> ServerModel:
    server = {**raw, "batch_service_ms": {int(k): v for k, v in raw["batch_service_ms"].items()}}
    server.pop("service_cv_by_rate", None)
    problems: list[str] = []
    block = parse_server_model(server, "profile", problems)
    assert block is not None and not problems, problems
    return block


def _points(raw: list[dict[str, Any]]) -> list[RatePoint]:
    keys = ("rate_rps", "achieved_rps", "p50_ms", "p90_ms", "p99_ms", "error_pct")
    return [RatePoint(*(float(p[k]) for k in keys)) for p in raw]


def fits(raw_profile: dict[str, Any], shares: Any) -> dict[str, ServerModel]:
    one = _block(raw_profile["server"])
    usable = usable_points(_points(raw_profile["points"]))
    errors = log_errors(one, usable, shares)
    tables = {
        "running_max": running_max_indices(errors),
        "isotonic": isotonic_indices(errors),
    }
    blocks = {"one_cv": one}
    for name, chosen in tables.items():
        table = tuple((p.rate_rps, CV_GRID[c]) for p, c in zip(usable, chosen, strict=True))
        blocks[name] = replace(one, service_cv_by_rate=table)
    return blocks


def refit(run: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for path, (profiles_key, rate_key, measured_key) in PATHS.items():
        if not run.get(profiles_key):
            continue
        profiles = {p["models_per_server"]: p for p in run[profiles_key]}
        cache: dict[int, dict[str, ServerModel]] = {}
        for point in run["points"]:
            if measured_key not in point:
                continue
            count = point["models"]
            shares = traffic_weights("zipf:1.0", count)
            if count not in cache:
                cache[count] = fits(profiles[count], shares)
            rate = point[rate_key]
            measured = point[measured_key]["p90_ms"]
            profiled = profiled_p90_ms(_points(profiles[count]["points"]), rate)
            row: dict[str, Any] = {
                "path": path, "models": count, "utilization": point["utilization"],
                "rate_rps": rate, "measured_p90_ms": measured, "profiled_p90_ms": profiled,
                "ratio_profiled": None if not profiled else round(measured / profiled, 3),
            }  # fmt: skip
            for name, block in cache[count].items():
                predicted = simulated_p90_ms(block, shares, rate)
                row[f"{name}_p90_ms"] = round(predicted, 3)
                row[f"ratio_{name}"] = round(measured / predicted, 3)
            for name in ("running_max", "isotonic"):
                row[f"{name}_table"] = dict(cache[count][name].service_cv_by_rate)
            rows.append(row)
    within = {
        f"{path}_{key}": sum(
            1
            for row in rows
            if row["path"] == path and row[key] is not None and abs(row[key] - 1) <= BAND
        )
        for path, key in itertools.product(
            PATHS, ("ratio_profiled", *(f"ratio_{name}" for name in FITS))
        )
    }
    counted = {path: sum(row["path"] == path for row in rows) for path in PATHS}
    return {"points": rows, "within_25pct": within, "points_per_path": counted}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("runs", nargs="*", default=[str(RESULTS / name) for name in RUNS])
    parser.add_argument(
        "--max-replications",
        type=int,
        default=tail.MAX_REPLICATIONS,
        help="replications per simulated p90 at most (1: the single run of before; the "
        "result is then written to refit_validation_one_replication.json)",
    )
    args = parser.parse_args()
    tail.MAX_REPLICATIONS = args.max_replications
    result: dict[str, Any] = {
        "method": (__doc__ or "").split("\n\n")[1],
        "max_replications": args.max_replications,
        "runs": {},
    }
    totals: dict[str, int] = {}
    for path in map(Path, args.runs):
        refitted = refit(json.loads(path.read_text()))
        result["runs"][path.name] = refitted
        for key, value in [*refitted["within_25pct"].items(),
                           *refitted["points_per_path"].items()]:  # fmt: skip
            totals[key] = totals.get(key, 0) + value
        print(path.name, refitted["within_25pct"], refitted["points_per_path"], flush=True)
    result["totals"] = totals
    print("totals", totals)
    name = "refit_validation" + ("_one_replication" if args.max_replications == 1 else "")
    print(write_result(f"{name}.json", result))


if __name__ == "__main__":
    main()
