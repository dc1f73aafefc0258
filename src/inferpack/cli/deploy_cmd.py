"""``inferpack deploy``: a plan → Kubernetes manifests, or a local fleet behind a router."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from inferpack.cli.app import app, console
from inferpack.errors import InferpackError


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
) -> None:
    """Run a plan: Kubernetes manifests (no cluster needed to write them) or a local fleet."""
    from inferpack.bench.catalog import Catalog
    from inferpack.deploy.spec import server_specs
    from inferpack.plan.formats import read_plan

    if target is Target.KUBERNETES and (image is None or output is None):
        console.print("[red]error:[/] --target kubernetes needs --image and --output")
        raise typer.Exit(2)
    try:
        plan = read_plan(plan_file)
        shapes = Catalog.load(catalog)
        instances = {}
        for server in plan.servers:
            entry = shapes.get(server.instance_type, region)
            instances[server.instance_type] = (
                entry.accelerator,
                entry.accelerator_count,
                entry.vcpu,
                entry.memory_gib,
            )
        specs = server_specs(plan, model_repository, instances)
        if target is Target.KUBERNETES:
            from inferpack.deploy.kubernetes import write_manifests

            assert image is not None and output is not None  # checked above
            written = write_manifests(
                specs, output, image=image, namespace=namespace, plan_name=plan_file.stem
            )
            console.print(f"wrote {len(written)} files to {output}")
            return
        from inferpack.deploy.local import run_local_fleet

        code = run_local_fleet(
            specs,
            host=host,
            router_http_port=router_http_port,
            router_grpc_port=router_grpc_port,
            base_port=base_port,
            cpu_threads=cpu_threads,
        )
    except InferpackError as error:
        console.print(f"[red]error:[/] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None
    raise typer.Exit(code)
