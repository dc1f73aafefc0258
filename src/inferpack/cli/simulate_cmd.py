"""``inferpack simulate``: a planned fleet under a demand or a trace, event by event."""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from inferpack.cli.app import app, console
from inferpack.errors import InferpackError

SHOWN_SERVERS = 12


@app.command()
def simulate(
    plan_file: Annotated[Path, typer.Argument(help="plan.yaml from `inferpack plan`.")],
    profiles: Annotated[
        list[Path], typer.Option(help="profiles.yaml with 'server' blocks (repeat for several).")
    ],
    output: Annotated[Path, typer.Option(help="sim.json to write.")],
    demand: Annotated[
        Path | None, typer.Option(help="Demand CSV model,kind,rps (default: the plan's rates).")
    ] = None,
    trace: Annotated[
        Path | None, typer.Option(help="Trace CSV t_s,model,rps: rate steps over time.")
    ] = None,
    rate_scale: Annotated[float, typer.Option(min=0.0, help="Multiply every rate.")] = 1.0,
    duration_s: Annotated[float, typer.Option(min=0.001, help="Simulated seconds.")] = 600.0,
    network_ms: Annotated[
        float, typer.Option(min=0.0, help="Added per request (router <-> server).")
    ] = 0.0,
    router_ms: Annotated[
        float, typer.Option(min=0.0, help="Router CPU per request (one FIFO stage).")
    ] = 0.0,
    seed: Annotated[int, typer.Option(help="Random seed of arrivals and routing.")] = 0,
    slowdown: Annotated[
        float,
        typer.Option(min=0.01, help="The servers compute this many times slower than profiled."),
    ] = 1.0,
) -> None:
    """Predict p50/p90/p99 per server and per model of a plan by discrete-event simulation."""
    from inferpack.plan.formats import read_demand, read_plan, read_profiles
    from inferpack.simulate import demand as rates
    from inferpack.simulate.fleet import FleetOptions, simulate_fleet
    from inferpack.simulate.result import build_document

    if demand is not None and trace is not None:
        console.print("[red]error:[/] give --demand or --trace, not both")
        raise typer.Exit(2)
    options = FleetOptions(duration_s, network_ms, router_ms, seed)
    try:
        plan = read_plan(plan_file)
        loaded = [
            p if p.server is None else replace(p, server=p.server.slowed(slowdown))
            for p in read_profiles(profiles)
        ]
        if trace is not None:
            steps = rates.read_trace(trace, duration_s, rate_scale)
        elif demand is not None:
            steps = rates.from_demand(read_demand(demand), duration_s, rate_scale)
        else:
            steps = rates.from_plan(plan, duration_s, rate_scale)
        started = time.perf_counter()
        with console.status(f"simulating {len(plan.servers)} servers for {duration_s:g} s"):
            arrivals, outcomes = simulate_fleet(plan, loaded, steps, options)
        wall_s = time.perf_counter() - started
    except InferpackError as error:
        console.print(f"[red]error:[/] {escape(str(error))}")
        raise typer.Exit(1) from None
    spec = {
        "plan": str(plan_file),
        "profiles": [str(p) for p in profiles],
        "demand": None if demand is None else str(demand),
        "trace": None if trace is None else str(trace),
        "rate_scale": rate_scale,
        "slowdown": slowdown,
        "wall_s": round(wall_s, 3),
    }
    document = build_document(plan, arrivals, outcomes, options, spec)
    output.write_text(json.dumps(document, indent=1) + "\n")
    _print(document, wall_s)
    console.print(f"wrote {output}")


def _print(document: dict[str, Any], wall_s: float) -> None:
    fleet = document["fleet"]
    rate = fleet["requests"] / wall_s if wall_s > 0 else 0.0
    console.print(
        f"[bold]fleet p50 {fleet['p50_ms']} ms, p90 {fleet['p90_ms']} ms, p99 "
        f"{fleet['p99_ms']} ms[/] over {fleet['requests']:,} requests "
        f"({fleet['over_slo_pct']} % above the SLO of {fleet['slo_p90_ms']:g} ms); "
        f"{rate:,.0f} simulated requests per wall second"
    )
    if fleet["servers_over_slo"]:
        over = ", ".join(fleet["servers_over_slo"][:SHOWN_SERVERS])
        console.print(f"[yellow]servers with p90 above the SLO:[/] {over}")
    table = Table(title="Servers")
    for header in ("server", "models", "req/s", "p50", "p90", "p99", "planned p90", "busy"):
        table.add_column(header, justify="left" if header == "server" else "right")
    for row in document["servers"][:SHOWN_SERVERS]:
        planned = row["planned_p90_ms"]
        table.add_row(
            row["name"],
            str(row["models"]),
            f"{row['rps']:,.1f}",
            *(str(row[k]) for k in ("p50_ms", "p90_ms", "p99_ms")),
            "-" if planned is None else f"{planned:.1f}",
            f"{row['utilization']:.0%}",
        )
    console.print(table)
