"""``inferpack deploy``: a plan → Kubernetes manifests, or a local fleet behind a router."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from inferpack.cli.app import app, console
from inferpack.errors import InferpackError

if TYPE_CHECKING:
    from inferpack.deploy.spec import Shapes


class Target(StrEnum):
    KUBERNETES = "kubernetes"
    LOCAL = "local"


@app.command()
def deploy(
    plan_file: Annotated[Path, typer.Argument(help="plan.yaml written by `inferpack plan`.")],
    model_repository: Annotated[
        str, typer.Option(help="Repository every server loads from (s3://... for Kubernetes).")
    ],
    target: Annotated[Target, typer.Option(help="kubernetes: write manifests; local: run here.")],
    image: Annotated[
        str | None, typer.Option(help="kubernetes: container image running inferpack.")
    ] = None,
    output: Annotated[
        Path | None, typer.Option(help="kubernetes: folder the manifests are written to.")
    ] = None,
    namespace: Annotated[str | None, typer.Option(help="kubernetes: namespace.")] = None,
    catalog: Annotated[
        Path | None, typer.Option(help="Price catalogue override (instance shapes).")
    ] = None,
    region: Annotated[str | None, typer.Option(help="Catalogue region.")] = None,
    host: Annotated[str, typer.Option(help="local: address the router binds.")] = "127.0.0.1",
    router_http_port: Annotated[int, typer.Option(help="local: router REST port.")] = 8000,
    router_grpc_port: Annotated[
        int, typer.Option(help="local: router gRPC port (-1 turns it off).")
    ] = 8001,
    base_port: Annotated[int, typer.Option(help="local: first server port (0: free ports).")] = 0,
    cpu_threads: Annotated[
        int | None, typer.Option(min=1, help="local: --cpu-threads of each server.")
    ] = None,
    fleet_name: Annotated[
        str | None,
        typer.Option(
            help="kubernetes: the fleet's name (its objects' part-of label; default: the plan "
            "file's name); a re-plan must keep it."
        ),
    ] = None,
    previous: Annotated[
        Path | None,
        typer.Option(
            help="kubernetes: the plan running now; adds rollout/ and rollout.sh, the order "
            "that keeps every model served."
        ),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            help="local: re-plan every interval from the observed demand and apply the moves."
        ),
    ] = False,
    controller: Annotated[
        bool,
        typer.Option(
            help="kubernetes: add controller.yaml, the in-cluster re-plan loop "
            "(inferpack controller) with a Role limited to the namespace."
        ),
    ] = False,
    interval_s: Annotated[
        float, typer.Option(min=1.0, help="--follow, --controller: seconds between re-plans.")
    ] = 30.0,
    profiles: Annotated[
        list[Path] | None,
        typer.Option(help="--follow, --controller: profiles.yaml to re-plan with."),
    ] = None,
    headroom: Annotated[
        float,
        typer.Option(
            min=0.0, help="--follow, --controller: plan for observed rates x (1 + headroom)."
        ),
    ] = 0.2,
    max_moves: Annotated[
        int | None,
        typer.Option(
            min=0, help="--follow, --controller: replicas moved per re-plan only to save money."
        ),
    ] = None,
) -> None:
    """Run a plan: Kubernetes manifests (no cluster needed to write them) or a local fleet."""
    from inferpack.bench.catalog import Catalog
    from inferpack.deploy.spec import catalog_shapes, server_specs
    from inferpack.plan.formats import read_plan

    if target is Target.KUBERNETES and (image is None or output is None):
        console.print("[red]error:[/] --target kubernetes needs --image and --output")
        raise typer.Exit(2)
    if previous is not None and target is not Target.KUBERNETES:
        console.print(
            "[red]error:[/] --previous is for --target kubernetes (--follow re-plans a local fleet)"
        )
        raise typer.Exit(2)
    if previous is not None and fleet_name is None:
        console.print(
            "[red]error:[/] --previous needs --fleet-name: the name the running fleet was "
            "deployed with (by default its plan file's name), so its objects stay the same"
        )
        raise typer.Exit(2)
    if controller and (target is not Target.KUBERNETES or not profiles):
        console.print("[red]error:[/] --controller needs --target kubernetes and --profiles")
        raise typer.Exit(2)
    if follow and (target is not Target.LOCAL or not profiles):
        console.print("[red]error:[/] --follow needs --target local and --profiles")
        raise typer.Exit(2)
    try:
        plan = read_plan(plan_file)
        before = None if previous is None else read_plan(previous)
        shapes = Catalog.load(catalog)
        servers = (*plan.servers, *(before.servers if before else ()))
        instances = catalog_shapes(shapes, {s.instance_type for s in servers}, region)
        specs = server_specs(plan, model_repository, instances)
        if target is Target.KUBERNETES:
            from inferpack.deploy.kubernetes import write_manifests

            assert image is not None and output is not None  # checked above
            old = None if before is None else server_specs(before, model_repository, instances)
            name = fleet_name or plan_file.stem
            loop = None
            if controller:
                assert profiles  # checked above
                loop = _controller_files(
                    plan_file, profiles, model_repository, image, name, namespace, region,
                    interval_s=interval_s, headroom=headroom, max_moves=max_moves,
                )  # fmt: skip
            written = write_manifests(
                specs,
                output,
                image=image,
                namespace=namespace,
                plan_name=name,
                previous=old,
                controller=loop,
            )
            console.print(f"wrote {len(written)} files to {output}")
            return
        from inferpack.deploy.local import run_local_fleet
        from inferpack.router.demand import WINDOW_S

        companion = None
        if follow:
            assert profiles  # checked above
            companion = _controller(
                plan, profiles, shapes, instances, model_repository, region,
                interval_s=interval_s, headroom=headroom, max_moves=max_moves,
            )  # fmt: skip
        code = run_local_fleet(
            specs,
            host=host,
            router_http_port=router_http_port,
            router_grpc_port=router_grpc_port,
            base_port=base_port,
            cpu_threads=cpu_threads,
            companion=companion,
            # following: each re-plan sees the demand of the interval since the last one
            demand_window_s=interval_s if follow else WINDOW_S,
        )
    except InferpackError as error:
        console.print(f"[red]error:[/] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)


def _controller(
    plan: Any,
    profiles: list[Path],
    catalog: Any,
    shapes: Shapes,
    model_repository: str,
    region: str | None,
    *,
    interval_s: float,
    headroom: float,
    max_moves: int | None,
) -> Any:
    """deploy --follow's controller, as the local fleet's companion: re-plans with the
    plan's own SLO and caps, on the profiled instance types of the catalogue."""
    from inferpack.deploy.follow import Controller, FollowConfig, replan_time_limit_s
    from inferpack.deploy.spec import catalog_shapes
    from inferpack.plan.formats import read_profiles
    from inferpack.plan.incremental import options_of
    from inferpack.plan.problem import server_types_from_catalog

    loaded = read_profiles(profiles)
    types = server_types_from_catalog(catalog, {p.instance_type for p in loaded}, region)
    shapes = {**shapes, **catalog_shapes(catalog, {t.name for t in types}, region)}
    options = options_of(plan.plan, time_limit_s=replan_time_limit_s(interval_s))
    config = FollowConfig(
        plan=plan,
        profiles=tuple(loaded),
        types=tuple(types),
        options=options,
        shapes=shapes,
        model_repository=model_repository,
        interval_s=interval_s,
        headroom=headroom,
        max_moves=max_moves,
    )

    def companion(members: Any, router: Any, fleet: Any, log_dir: Path, echo: Any) -> Any:
        return Controller(config, members, router, fleet=fleet, log_dir=log_dir, echo=echo).run()

    return companion


def _controller_files(
    plan_file: Path,
    profiles: list[Path],
    model_repository: str,
    image: str,
    fleet_name: str,
    namespace: str | None,
    region: str | None,
    *,
    interval_s: float,
    headroom: float,
    max_moves: int | None,
) -> tuple[list[str], str, str]:
    """deploy --controller: the controller's arguments, its profiles and first plan."""
    if len(profiles) > 1:
        console.print("[red]error:[/] --controller takes one --profiles file")
        raise typer.Exit(2)
    args = [
        "--model-repository", model_repository, "--image", image, "--fleet-name", fleet_name,
        "--namespace", namespace or "default", "--interval-s", f"{interval_s:g}",
        "--headroom", f"{headroom:g}",
        *(["--max-moves", str(max_moves)] if max_moves is not None else []),
        *(["--region", region] if region else []),
    ]  # fmt: skip
    return args, profiles[0].read_text(), plan_file.read_text()
