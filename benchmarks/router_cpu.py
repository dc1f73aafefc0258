"""What the local fleet's router costs: its CPU per request and the latency of its hop.

    one small-cnn server (--cpu-threads 1) behind deploy --target local's router
    loadtest --demand at RATE req/s (8 Zipf models, binary HTTP): straight to the server,
        then through the router
    router CPU per request = the deploy process's own CPU seconds (the router runs in it;
        the servers are its children and not counted) / requests it forwarded

On a host the router shares with its servers, every millisecond of router CPU is taken from
them: at 1,000 req/s, 0.5 ms a request is half a core.

    python -m benchmarks.router_cpu [--rate-rps 300] [--duration-s 15] [--label NAME]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from benchmarks.common import write_result
from benchmarks.fleet_local import catalog
from benchmarks.many_models import build_repository
from benchmarks.validate_simulate import measure_direct, measure_routed, write_inputs, zipf_rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rate-rps", type=float, default=300.0)
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--duration-s", type=float, default=15.0)
    parser.add_argument("--label", default="current")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        repo, prices = root / "repo", root / "prices.yaml"
        build_repository(repo, args.models)
        catalog(prices)
        rates = zipf_rates(args.models, args.rate_rps)
        demand, plan = write_inputs(root, rates)
        direct = measure_direct(repo, list(rates), demand, root / "d.json", args.duration_s)
        routed = measure_routed(repo, plan, prices, demand, root / "r.json", args.duration_s)
    result = {
        "label": args.label,
        "rate_rps": args.rate_rps,
        "models": args.models,
        "direct": direct,
        "routed": routed,
        "router_cpu_ms_per_request": routed["router_cpu_ms_per_request"],
        "hop_p50_ms": round(routed["p50_ms"] - direct["p50_ms"], 3),
        "hop_p90_ms": round(routed["p90_ms"] - direct["p90_ms"], 3),
    }
    out = write_result(f"router_cpu_{args.label}.json", result)
    print(result)
    print(out)


if __name__ == "__main__":
    main()
