"""``inferpack profile``: what one server sustains for a model kind at a p90 SLO."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from inferpack.cli.app import app, console
from inferpack.errors import InferpackError


class ProfileTransport(StrEnum):
    HTTP_BINARY = "http-binary"
    GRPC = "grpc"


@app.command()
def profile(
    model_repository: Annotated[Path, typer.Option(help="Repository folder holding --model.")],
    model: Annotated[str, typer.Option(help="The model to profile.")],
    slo_p90_ms: Annotated[float, typer.Option(min=0.001, help="p90 latency to meet.")],
    instance_type: Annotated[
        str, typer.Option(help="Catalogue name of the machine this runs on (what is priced).")
    ],
    output: Annotated[Path, typer.Option(help="profiles.yaml to write or update.")],
    models_per_server: Annotated[
        str,
        typer.Option(
            help="Distinct copies served together, as on a fleet server; a list (1,4,16,64) "
            "measures one profile entry per count."
        ),
    ] = "1",
    traffic: Annotated[
        str, typer.Option(help="How requests spread over the copies: uniform or zipf:S.")
    ] = "uniform",
    kind: Annotated[str | None, typer.Option(help="Profile kind (default: the model).")] = None,
    transport: Annotated[ProfileTransport, typer.Option(help="Wire format of the load.")] = (
        ProfileTransport.HTTP_BINARY
    ),
    batch_size: Annotated[int, typer.Option(min=1, help="Rows per request.")] = 1,
    duration_s: Annotated[
        float, typer.Option(min=0.3, help="Measured seconds per rate (3 windows).")
    ] = 20.0,
    warmup_s: Annotated[float, typer.Option(min=0.0, help="Unmeasured seconds per rate.")] = 1.0,
    start_rps: Annotated[float, typer.Option(min=0.001, help="First rate tried.")] = 10.0,
    max_rps: Annotated[float, typer.Option(min=0.001, help="Highest rate ever offered.")] = (
        100_000.0
    ),
    search_steps: Annotated[
        int, typer.Option(min=0, help="Bisection steps after the first failing rate.")
    ] = 4,
    fill_levels: Annotated[
        str,
        typer.Option(
            help="Shares of the capacity found measured after the search, for the latency "
            "curve and the fitted service spread where plans run; 'none' for none."
        ),
    ] = "0.3,0.6,0.8,0.9",
    workers: Annotated[int, typer.Option(min=1, help="Load generator processes.")] = 1,
    cpu_threads: Annotated[
        int | None, typer.Option(min=1, help="Server: CPU threads of model compute in all.")
    ] = None,
    catalog: Annotated[
        Path | None, typer.Option(help="YAML/JSON entries overriding catalogue prices.")
    ] = None,
    region: Annotated[str | None, typer.Option(help="Catalogue region of --instance-type.")] = (
        None
    ),
    max_models: Annotated[
        int | None, typer.Option(min=1, help="Most models a server may hold (written as is).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of inputs, model choice and arrivals.")] = 0,
    through_router: Annotated[
        bool,
        typer.Option(
            help="Measure through a local fleet's router (deploy --target local of one "
            "server), as a local fleet's users reach it: the router's CPU is in the numbers."
        ),
    ] = False,
) -> None:
    """Find the highest open-loop rate whose p90 meets the SLO and write it as a profile."""
    from inferpack.bench.catalog import Catalog
    from inferpack.profile.output import read_existing, write_updated
    from inferpack.profile.run import ProfileSpec, run_profile
    from inferpack.profile.search import SearchConfig

    try:
        fill = parse_shares(fill_levels)
        search = SearchConfig(
            slo_p90_ms, start_rps, max_rps, search_steps, measured_s=duration_s, fill_shares=fill
        )
        counts = parse_counts(models_per_server)
        problems = [*search.problems(), *traffic_problems(traffic)]
        if problems:
            raise InferpackError("; ".join(problems))
        Catalog.load(catalog).get(instance_type, region)
        existing = read_existing(output)
    except InferpackError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    for count in counts:
        spec = ProfileSpec(
            model_repository, model, instance_type, search, kind, count, transport.value,
            batch_size, duration_s, warmup_s, workers, cpu_threads, max_models, seed, traffic,
            through_router, catalog, region,
        )  # fmt: skip
        console.print(
            f"profiling {count} x {model} ({transport.value}, batch {batch_size}, {traffic} "
            f"traffic{', through the router' if through_router else ''}) against p90 <= "
            f"{slo_p90_ms:g} ms, {duration_s:g} s per rate"
        )
        try:
            outcome = run_profile(spec, _print_point)
        except InferpackError as error:
            console.print(f"[red]error:[/] {count} models: {error}")
            raise typer.Exit(1) from None
        write_updated(output, existing, outcome.profile)
        existing = read_existing(output)
        _print_summary(outcome, output)


def parse_counts(text: str) -> list[int]:
    """``--models-per-server``: one count or a comma-separated list, each >= 1."""
    try:
        counts = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        counts = []
    if not counts or any(c < 1 for c in counts):
        raise InferpackError(
            f"--models-per-server takes counts >= 1, one or comma-separated (got {text!r})"
        )
    return sorted(set(counts))


def parse_shares(text: str) -> tuple[float, ...]:
    """``--fill-levels``: comma-separated shares of the capacity, or 'none'."""
    if text.strip().lower() in ("none", ""):
        return ()
    try:
        return tuple(sorted({float(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        raise InferpackError(
            f"--fill-levels takes shares of the capacity, comma-separated, or none (got {text!r})"
        ) from None


def traffic_problems(traffic: str) -> list[str]:
    """``--traffic``: uniform, or zipf:S with S > 0."""
    if traffic == "uniform":
        return []
    kind, _, exponent = traffic.partition(":")
    try:
        ok = kind == "zipf" and float(exponent) > 0
    except ValueError:
        ok = False
    return [] if ok else [f"--traffic must be uniform or zipf:S with S > 0 (got {traffic!r})"]


def _print_point(point: Any, why: str | None) -> None:
    verdict = "[green]meets the SLO[/]" if why is None else f"[red]fails[/]: {why}"
    console.print(
        f"  {point.rate_rps:>10,.1f} req/s  answered {point.achieved_rps:>10,.1f}  "
        f"p90 {point.p90_ms:>8.2f} ms  errors {point.error_pct:>5.2f} %  {verdict}"
    )


def _print_summary(outcome: Any, output: Path) -> None:
    for warning in dict.fromkeys(outcome.warnings):
        console.print(f"[yellow]warning:[/] {warning}")
    profile = outcome.profile
    bound = outcome.search.failed_rps
    above = f", {bound:,.1f} failed" if bound is not None else " (--max-rps reached)"
    count = f" with {profile.models_per_server} models" if profile.models_per_server else ""
    console.print(
        f"[bold]{profile.kind} on {profile.instance_type}{count}: "
        f"{profile.capacity_rps:,.1f} req/s[/] "
        f"at p90 <= {profile.slo_p90_ms:g} ms{above}; {profile.model_memory_mb:.3f} MB per model; "
        f"{len(profile.points)} rates measured; wrote {output}"
    )
