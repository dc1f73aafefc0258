"""The validation's stored runs predicted again with the spread by rate ([11]).

For each routed point of each stored ``validate_simulate`` run, the server is simulated
again from that run's own routed profile (the 8, 24 or 64-copy entry, Zipf 1.0 over the
copies, at the point's rate), once with the one fitted spread (``service_cv``) and once
with a per-level table fitted from the same profile's levels
(``profile.fit.fit_service_cv``), and compared with the point's measured p90. Same
measurements, predictions recomputed: what the table changes, independent of the VM's
run-to-run spread. Writes benchmarks/results/refit_validation.json.

python -m benchmarks.refit_validation [RUN.json ...]
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from benchmarks.common import write_result
from inferpack.plan.formats import RatePoint
from inferpack.plan.server_model import ServerModel, parse_server_model
from inferpack.profile.fit import fit_service_cv, simulated_p90_ms, traffic_weights

RESULTS = Path(__file__).resolve().parent / "results"
RUNS = ("validate_simulate.json", "validate_simulate_run2.json")
BAND = 0.25


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


def refit(run: dict[str, Any]) -> dict[str, Any]:
    profiles = {p["models_per_server"]: p for p in run["routed_profiles"]}
    rows = []
    for point in run["points"]:
        profile = profiles[point["models"]]
        shares = traffic_weights("zipf:1.0", point["models"])
        one = _block(profile["server"])
        table = fit_service_cv(one, _points(profile["points"]), shares)
        rate = point["routed_rate_rps"]
        measured = point["routed"]["p90_ms"]
        one_cv = simulated_p90_ms(replace(one, service_cv_by_rate=()), shares, rate)
        by_rate = simulated_p90_ms(table, shares, rate)
        rows.append({
            "models": point["models"], "utilization": point["utilization"],
            "rate_rps": rate, "measured_p90_ms": measured,
            "one_cv": one.service_cv, "one_cv_p90_ms": round(one_cv, 3),
            "by_rate": dict(table.service_cv_by_rate), "by_rate_p90_ms": round(by_rate, 3),
            "ratio_one_cv": round(measured / one_cv, 3),
            "ratio_by_rate": round(measured / by_rate, 3),
        })  # fmt: skip
    within = {
        key: sum(abs(row[key] - 1) <= BAND for row in rows)
        for key in ("ratio_one_cv", "ratio_by_rate")
    }
    return {"points": rows, "within_25pct": within}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("runs", nargs="*", default=[str(RESULTS / name) for name in RUNS])
    args = parser.parse_args()
    result: dict[str, Any] = {"method": (__doc__ or "").split("\n\n")[1], "runs": {}}
    for path in map(Path, args.runs):
        result["runs"][path.name] = refit(json.loads(path.read_text()))
        print(path.name, result["runs"][path.name]["within_25pct"], flush=True)
    print(write_result("refit_validation.json", result))


if __name__ == "__main__":
    main()
