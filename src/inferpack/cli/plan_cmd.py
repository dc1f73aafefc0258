"""``inferpack plan``: profiles + demand + prices → the cheapest fleet, written to plan.yaml."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from inferpack.cli.app import _csv, app, console
from inferpack.errors import InferpackError

# Servers listed in the terminal; the plan file has all of them.
SHOWN_SERVERS = 12


@app.command()
def plan(
    profiles: Annotated[list[Path], typer.Option(help="profiles.yaml (repeat for several files).")],
    demand: Annotated[Path, typer.Option(help="CSV with a header model,kind,rps.")],
    slo_p90_ms: Annotated[float, typer.Option(min=0.001, help="p90 latency every server keeps.")],
    output: Annotated[Path, typer.Option(help="plan.yaml to write.")],
    catalog: Annotated[
        Path | None, typer.Option(help="YAML/JSON entries overriding catalogue prices.")
    ] = None,
    region: Annotated[str | None, typer.Option(help="Catalogue region.")] = None,
    instance_types: Annotated[
        str | None,
        typer.Option(help="Comma-separated types to choose from (default: all profiled)."),
    ] = None,
    max_memory_utilization: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Share of a server's memory models may use.")
    ] = 0.9,
    max_compute_utilization: Annotated[
        float, typer.Option(min=0.01, max=1.0, help="Share of capacity_rps a server may carry.")
    ] = 0.8,
    server_overhead_mb: Annotated[
        float, typer.Option(min=0.0, help="Memory each server process takes before models.")
    ] = 600.0,
    time_limit_s: Annotated[float, typer.Option(min=0.1, help="Solver time limit.")] = 10.0,
    slowdown_margin: Annotated[
        float | None,
        typer.Option(
            min=1.0,
            help="Servers meet the SLO on a host this many times slower than profiled "
            "(default 1, or --previous's).",
        ),
    ] = None,
    previous: Annotated[
        Path | None,
        typer.Option(help="A plan.yaml to change as little as possible (moves listed)."),
    ] = None,
    headroom: Annotated[
        float, typer.Option(min=0.0, help="Plan for the demand's rates x (1 + headroom).")
    ] = 0.0,
    max_moves: Annotated[
        int | None,
        typer.Option(min=0, help="With --previous: replicas moved only to save money, at most."),
    ] = None,
) -> None:
    """Pack the demand's models onto instance types at the least USD/h, gap to the bound stated."""
    from inferpack.bench.catalog import Catalog
    from inferpack.plan.formats import read_demand, read_profiles, write_plan
    from inferpack.plan.problem import PlanOptions, server_types_from_catalog
    from inferpack.plan.solve import make_plan

    if max_moves is not None and previous is None:
        console.print(
            "[red]error:[/] --max-moves needs --previous (the plan moves are counted from)"
        )
        raise typer.Exit(2)
    try:
        loaded = read_profiles(profiles)
        models = read_demand(demand)
        before = None
        if previous is not None:
            from inferpack.plan.formats import read_plan

            before = read_plan(previous)
        if slowdown_margin is None:
            kept = None if before is None else before.plan.slowdown_margin
            slowdown_margin = 1.0 if kept is None else kept
        wanted = _csv(instance_types) if instance_types else None
        names = {p.instance_type for p in loaded}
        if wanted:
            unknown = sorted(set(wanted) - names)
            if unknown:
                console.print(
                    f"[red]error:[/] no profile for instance type(s) {', '.join(unknown)} "
                    f"(profiled: {', '.join(sorted(names))})"
                )
                raise typer.Exit(2)
            names &= set(wanted)
        types = server_types_from_catalog(Catalog.load(catalog), names, region)
        options = PlanOptions(
            slo_p90_ms=slo_p90_ms,
            max_memory_utilization=max_memory_utilization,
            max_compute_utilization=max_compute_utilization,
            time_limit_s=time_limit_s,
            server_overhead_mb=server_overhead_mb,
            slowdown_margin=slowdown_margin,
        )
        with console.status(f"planning {len(models):,} models on {len(types)} instance types"):
            if before is not None:
                from inferpack.plan.incremental import replan

                result = replan(
                    before, loaded, models, types, options, headroom=headroom, max_moves=max_moves
                )
            else:
                scaled = [replace(d, rps=d.rps * (1 + headroom)) for d in models]
                result = make_plan(loaded, scaled, types, options)
    except InferpackError as error:
        console.print(f"[red]error:[/] {escape(str(error))}")
        raise typer.Exit(1) from None
    write_plan(output, result)
    _print_plan(result)
    if result.changes is not None:
        change = result.changes
        console.print(
            f"changes from {previous}: {len(change['moves'])} model(s) moved, "
            f"{len(change['servers_added'])} server(s) added, "
            f"{len(change['servers_removed'])} removed"
        )
    console.print(f"wrote {output}")


def _print_plan(result: Any) -> None:
    summary, totals = result.plan, result.totals
    console.print(
        f"[bold]{totals['servers']} servers, {totals['usd_per_hour']:.3f} USD/h[/] for "
        f"{totals['models']:,} models ({totals['usd_per_model_hour']:.4f} USD per model-hour, "
        f"{totals['rps']:,.1f} req/s); lower bound {summary.lower_bound_usd_per_hour:.3f} USD/h, "
        f"gap {summary.gap:.2%}; {summary.solver}, {summary.solve_seconds:.2f} s"
    )
    for note in summary.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(_alternatives_table(result))
    console.print(_servers_table(result))


def _alternatives_table(result: Any) -> Table:
    table = Table(title="The mixed plan beside each instance type alone")
    for header in ("plan", "servers", "USD/h", "USD/model-h", "bound USD/h"):
        table.add_column(header, justify="left" if header == "plan" else "right")
    totals = result.totals
    table.add_row(
        "[bold]mixed (this plan)[/]",
        str(totals["servers"]),
        f"{totals['usd_per_hour']:.3f}",
        f"{totals['usd_per_model_hour']:.4f}",
        f"{result.plan.lower_bound_usd_per_hour:.3f}",
    )
    for row in result.alternatives:
        if not row["feasible"]:
            table.add_row(f"{row['instance_type']} only", "-", "-", "-", row["reason"])
            continue
        table.add_row(
            f"{row['instance_type']} only",
            str(row["servers"]),
            f"{row['usd_per_hour']:.3f}",
            f"{row['usd_per_model_hour']:.4f}",
            f"{row['lower_bound_usd_per_hour']:.3f}",
        )
    return table


def _servers_table(result: Any) -> Table:
    shown = result.servers[:SHOWN_SERVERS]
    more = len(result.servers) - len(shown)
    title = "Servers" + (f" (first {len(shown)} of {len(result.servers)})" if more else "")
    table = Table(title=title)
    headers = ("server", "type", "models", "req/s", "memory", "compute", "p90 ms", "slowdown ok")
    for header in headers:
        table.add_column(header, justify="left" if header in ("server", "type") else "right")
    margin = result.plan.slowdown_margin or 1.0
    for server in shown:
        p90 = server.predicted_p90_ms
        table.add_row(
            server.name,
            server.instance_type,
            str(len(server.models)),
            f"{sum(m.rps for m in server.models):,.1f}",
            f"{server.memory_utilization:.0%}",
            f"{server.compute_utilization:.0%}",
            "-" if p90 is None else f"{p90:.1f}",
            _slowdown(server.tolerated_slowdown, margin),
        )
    return table


def _slowdown(factor: float | None, margin: float) -> str:
    """A server's tolerated slowdown as shown: "x1.35"; at the top or bottom of the range
    searched (plan/tail.py, from the plan's margin) ">= x3.83" or "<= x0.25"; "-" where not
    searched."""
    from inferpack.plan.tail import SLOWDOWN_STEP, slowdown_range

    if factor is None:
        return "-"
    bottom, top = slowdown_range(margin)
    if factor >= top / SLOWDOWN_STEP:
        return f">= x{factor:.2f}"
    if factor <= bottom * (1 + 1e-6):
        return f"<= x{factor:.2f}"
    return f"x{factor:.2f}"
