"""``inferpack controller``: deploy --follow's loop in a Kubernetes cluster (its own pod)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from inferpack.cli.app import app, console
from inferpack.errors import InferpackError


@app.command()
def controller(
    plan_file: Annotated[
        Path, typer.Option("--plan", help="The plan deployed first (used until one is stored).")
    ],
    profiles: Annotated[list[Path], typer.Option(help="profiles.yaml to re-plan with.")],
    model_repository: Annotated[str, typer.Option(help="Repository every server loads from.")],
    image: Annotated[str, typer.Option(help="Container image the servers run.")],
    fleet_name: Annotated[str, typer.Option(help="The fleet's name (deploy --fleet-name).")],
    namespace: Annotated[str, typer.Option(help="The fleet's namespace.")] = "default",
    interval_s: Annotated[float, typer.Option(min=1.0, help="Seconds between re-plans.")] = 60.0,
    headroom: Annotated[
        float, typer.Option(min=0.0, help="Plan for observed rates x (1 + headroom).")
    ] = 0.2,
    max_moves: Annotated[
        int | None, typer.Option(min=0, help="Replicas moved per re-plan only to save money.")
    ] = None,
    catalog: Annotated[Path | None, typer.Option(help="Price catalogue override.")] = None,
    region: Annotated[str | None, typer.Option(help="Catalogue region.")] = None,
    kubeconfig: Annotated[
        str | None, typer.Option(help="kubeconfig file (default: the pod's service account).")
    ] = None,
    rollout_timeout_s: Annotated[
        float, typer.Option(min=1.0, help="A Deployment not rolled out by then fails the step.")
    ] = 900.0,
    steps: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many re-plans (default: never).")
    ] = None,
) -> None:
    """Observe the fleet's pods, re-plan, and roll the moves out through the Kubernetes API."""
    from inferpack.bench.catalog import Catalog
    from inferpack.deploy.follow import replan_time_limit_s
    from inferpack.deploy.k8s_controller import ClusterController, KubeCluster
    from inferpack.deploy.k8s_workload import ManifestConfig
    from inferpack.deploy.spec import catalog_shapes
    from inferpack.plan.formats import read_plan, read_profiles
    from inferpack.plan.incremental import options_of
    from inferpack.plan.problem import server_types_from_catalog

    try:
        plan = read_plan(plan_file)
        loaded = read_profiles(profiles)
        prices = Catalog.load(catalog)
        types = server_types_from_catalog(prices, {p.instance_type for p in loaded}, region)
        names = {t.name for t in types} | {s.instance_type for s in plan.servers}
        shapes = catalog_shapes(prices, names, region)
        options = options_of(plan.plan, time_limit_s=replan_time_limit_s(interval_s))
        cluster = KubeCluster(namespace, fleet_name, kubeconfig)
        loop = ClusterController(
            cluster=cluster,
            manifests=ManifestConfig(image=image, namespace=namespace, plan_name=fleet_name),
            profiles=tuple(loaded),
            types=tuple(types),
            options=options,
            shapes=shapes,
            model_repository=model_repository,
            headroom=headroom,
            max_moves=max_moves,
            rollout_timeout_s=rollout_timeout_s,
            log=lambda line: console.print(escape(line), soft_wrap=True),
        )
        loop.run(plan, interval_s, steps)
    except InferpackError as error:
        console.print(f"[red]error:[/] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None
