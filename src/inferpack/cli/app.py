"""The ``inferpack`` command line: one verb per step of the loop (serve, repo, ...).

Configuration is read here, once, and handed down as config objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from inferpack import __version__
from inferpack.config import ServerConfig
from inferpack.config.control import ControlConfig, ControlMode
from inferpack.config.server_config import DEFAULT_MAX_INFLIGHT_BYTES, DEFAULT_MAX_REQUEST_BYTES
from inferpack.config.trust import parse_allowed_platforms
from inferpack.errors import InferpackError

app = typer.Typer(
    help="Serve deep-learning models fast and cheaply, and measure the cost.", no_args_is_help=True
)
repo_app = typer.Typer(help="Create and inspect model repositories.", no_args_is_help=True)
app.add_typer(repo_app, name="repo")
console = Console(stderr=True)
# The repository API token may come from the environment (kept out of the process list).
REPOSITORY_API_TOKEN_ENV = "INFERPACK_REPOSITORY_API_TOKEN"


@app.command()
def version() -> None:
    """Print the inferpack version."""
    print(__version__)


@app.command()
def serve(
    model_repository: Annotated[
        str, typer.Option(help="Folder of models (model.yaml each), or s3:// gs:// http(s)://")
    ],
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(help="HTTP port (0 picks a free one).")] = 8000,
    grpc_port: Annotated[
        int, typer.Option(help="gRPC port (0 picks a free one, -1 turns gRPC off).")
    ] = 8001,
    model_control_mode: Annotated[
        ControlMode,
        typer.Option(
            help="none: load all at start; explicit: load/unload API; "
            "lru: load on first request, evict over budget."
        ),
    ] = ControlMode.NONE,
    memory_budget_mb: Annotated[
        float | None, typer.Option(help="lru: most memory the loaded models may measure.")
    ] = None,
    load_model: Annotated[
        list[str] | None, typer.Option(help="explicit/lru: load this model at start (repeat).")
    ] = None,
    max_request_bytes: Annotated[
        int, typer.Option(help="Largest request body accepted (413 above).")
    ] = DEFAULT_MAX_REQUEST_BYTES,
    max_inflight_bytes: Annotated[
        int,
        typer.Option(min=1, help="Request bytes being decoded, queued or run at once (429 above)."),
    ] = DEFAULT_MAX_INFLIGHT_BYTES,
    cache_dir: Annotated[
        Path | None, typer.Option(help="Where remote artifacts are cached.")
    ] = None,
    log_level: Annotated[str, typer.Option(help="debug, info, warning, error")] = "info",
    cpu_threads: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="CPU threads model compute may use in all: worker threads x torch intra-op "
            "threads (default: the CPUs this process may run on).",
        ),
    ] = None,
    allowed_platforms: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated platforms whose models may load, e.g. workload,onnx "
            "(default: all). torchscript, torch_export and torch_aoti artifacts are code.",
        ),
    ] = None,
    repository_api_token: Annotated[
        str | None,
        typer.Option(
            envvar=REPOSITORY_API_TOKEN_ENV,
            show_default=False,
            help="Bearer token the repository API (load, unload, index) requires. "
            "Without one the API is open on a loopback --host and refused on any other.",
        ),
    ] = None,
) -> None:
    """Serve a model repository over KServe v2 REST and TorchServe-style /predictions."""
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    if "://" not in model_repository and not Path(model_repository).is_dir():
        console.print(f"[red]error:[/] model repository {model_repository} is not a directory")
        raise typer.Exit(2)
    try:
        allowed = parse_allowed_platforms(allowed_platforms) if allowed_platforms else None
    except InferpackError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    control = ControlConfig(
        mode=model_control_mode,
        memory_budget_bytes=int(memory_budget_mb * 2**20) if memory_budget_mb else None,
        startup_models=tuple(load_model or ()),
        cpu_threads=cpu_threads,
        allowed_platforms=allowed,
    )
    config = ServerConfig(
        model_repository,
        host=host,
        http_port=http_port,
        grpc_port=None if grpc_port < 0 else grpc_port,
        max_request_bytes=max_request_bytes,
        max_inflight_bytes=max_inflight_bytes,
        control=control,
        cache_dir=cache_dir,
        repository_api_token=repository_api_token or None,
    )
    try:
        asyncio.run(_serve(config))
    except InferpackError as error:  # e.g. a taken port: one line, never wrapped
        console.print(f"[red]error:[/] {escape(str(error))}", soft_wrap=True)
        raise typer.Exit(1) from None


async def _serve(config: ServerConfig) -> None:
    from inferpack.server import start_server

    server = await start_server(config)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    grpc_note = f", gRPC on {server.grpc_address}" if server.grpc_port else ""
    console.print(
        f"inferpack {__version__} listening on {server.url}{grpc_note} (loading models...)"
    )
    try:
        ready = await server.wait_started()
        _print_ready(server.url, server.engine, ready)
        await stop.wait()
    finally:
        console.print("stopping: draining in-flight requests")
        await server.stop()


def _print_ready(url: str, engine: object, ready: bool) -> None:
    from inferpack.runtime import Engine

    assert isinstance(engine, Engine)
    for entry in engine.manager.entries.values():
        colour = "green" if entry.state.value == "READY" else "red"
        reason = f" ({entry.reason})" if entry.reason else ""
        console.print(f"  [{colour}]{entry.state.value:<11}[/] {entry.name}{reason}")
    if engine.startup_error:
        console.print(f"[red]error:[/] {engine.startup_error}")
    if not ready:
        console.print("[yellow]server is live but not ready: see the models above[/]")
        return
    example = _example_curl(url, engine)
    console.print(f"[green]ready[/] on {url}")
    if example:
        console.print(f"try:\n  {example}", soft_wrap=True, highlight=False)


def _example_curl(url: str, engine: object) -> str:
    from inferpack.runtime import Engine

    assert isinstance(engine, Engine)
    entry = engine.manager.entries.get("tiny-mlp")
    if entry is None:
        return ""
    values = ",".join(["0.5"] * 16)
    body = f'{{"inputs":[{{"name":"input","datatype":"FP32","shape":[1,16],"data":[{values}]}}]}}'
    return f"curl -s -X POST {url}/v2/models/tiny-mlp/infer -d '{body}'"


def _csv(text: str, kind: type = str) -> tuple:  # type: ignore[type-arg]
    return tuple(kind(item.strip()) for item in text.split(",") if item.strip())


@app.command()
def bench(
    output: Annotated[Path, typer.Option(help="Result JSON to write.")],
    model: Annotated[str | None, typer.Option(help="Model in --model-repository.")] = None,
    model_repository: Annotated[Path | None, typer.Option(help="Repository folder.")] = None,
    workload: Annotated[str | None, typer.Option(help="Reference workload, e.g. resnet50.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto")] = "auto",
    precision: Annotated[str, typer.Option(help="Comma-separated: fp32,bf16,fp16")] = "fp32",
    batch_size: Annotated[
        str, typer.Option(help="Comma-separated batch sizes.")
    ] = "1,2,4,8,16,32,64",
    instances: Annotated[str, typer.Option(help="Comma-separated data-parallel copies.")] = "1",
    duration_s: Annotated[float, typer.Option(help="Measured seconds per configuration.")] = 10.0,
    warmup_s: Annotated[float, typer.Option(help="Warm-up seconds, excluded.")] = 2.0,
    repeats: Annotated[int, typer.Option(help="Windows compared for noise.")] = 3,
    instance_type: Annotated[str | None, typer.Option(help="Price from the catalogue.")] = None,
    region: Annotated[str | None, typer.Option(help="Catalogue region.")] = None,
    price_usd_per_hour: Annotated[float | None, typer.Option(help="Explicit price.")] = None,
    catalog: Annotated[
        Path | None, typer.Option(help="YAML/JSON entries overriding catalogue prices.")
    ] = None,
    profile: Annotated[bool, typer.Option(help="Time each top-level stage.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of weights and inputs.")] = 0,
    compiled_bucket: Annotated[
        str | None,
        typer.Option(
            help="Comma-separated compile batch sizes: each batch runs as calls of exactly "
            "that many rows (padded), on a model compiled for it."
        ),
    ] = None,
    compile_mode: Annotated[
        str | None,
        typer.Option(
            help="inductor, cudagraphs or none (padding and chunking only); "
            "default inductor on CPU, cudagraphs on CUDA."
        ),
    ] = None,
) -> None:
    """Measure a model on this hardware: throughput, latency, utilisation, accuracy, cost."""
    import json
    import math

    from rich.progress import Progress

    from inferpack.bench.runner import run_bench
    from inferpack.bench.spec import BenchSpec

    if (workload is None) == (model is None) or (model and model_repository is None):
        console.print("[red]error:[/] give --workload W, or --model-repository DIR --model M")
        raise typer.Exit(2)
    spec = BenchSpec(
        model=workload or str(model),
        source="workload" if workload else "repository",
        repository=str(model_repository) if model_repository else None,
        device=device,
        precisions=_csv(precision),
        batch_sizes=_csv(batch_size, int),
        instances=_csv(instances, int),
        duration_s=duration_s,
        warmup_s=warmup_s,
        repeats=repeats,
        instance_type=instance_type,
        region=region,
        price_usd_per_hour=price_usd_per_hour,
        catalog_path=str(catalog) if catalog else None,
        profile=profile,
        seed=seed,
        compiled_buckets=_csv(compiled_bucket or "", int),
        compile_mode=compile_mode,
    )
    if compile_mode is not None and not spec.compiled_buckets:
        console.print("[red]error:[/] --compile-mode needs --compiled-bucket")
        raise typer.Exit(2)
    sizes = (spec.precisions, spec.batch_sizes, spec.instances, spec.compiled_buckets or (1,))
    total = math.prod(len(values) for values in sizes)
    try:
        with Progress(console=console) as bar:
            task = bar.add_task(f"bench {spec.model}", total=total)

            def advance(label: str) -> None:
                bar.update(task, advance=1, description=f"bench {spec.model}: {label}")

            document = run_bench(spec, advance)
    except InferpackError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None
    output.write_text(json.dumps(document, indent=1) + "\n")
    _print_bench_table(document)
    console.print(f"wrote {output}")


def _print_bench_table(document: dict) -> None:  # type: ignore[type-arg]
    from rich.table import Table

    table = Table(title=f"{document['spec']['model']} on {document['spec']['device']}")
    compiled = any(r.get("compiled_bucket") for r in document["results"])
    columns = ("precision", *(("compile batch",) if compiled else ()), "batch", "inst")
    for column in (*columns, "items/s", "p50 ms", "p90 ms", "USD/1M"):
        table.add_column(column, justify="right")
    for r in document["results"]:
        cost = r["cost"]["usd_per_million"] if r["cost"] else None
        table.add_row(
            r["precision"],
            *((str(r["compiled_bucket"]),) if compiled else ()),
            str(r["batch_size"]),
            str(r["instances"]),
            f"{r['items_per_s']:,.1f}",
            f"{r['latency_ms']['p50']:.3f}",
            f"{r['latency_ms']['p90']:.3f}",
            f"{cost:.4f}" if cost else "-",
        )
    console.print(table)
    for warning in document["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")


@app.command()
def loadtest(
    url: Annotated[str, typer.Option(help="http://host:port or grpc://host:port")],
    output: Annotated[Path, typer.Option(help="Result JSON to write.")],
    model: Annotated[str | None, typer.Option(help="One model.")] = None,
    models: Annotated[str | None, typer.Option(help="Comma-separated models.")] = None,
    models_from_repository: Annotated[
        Path | None, typer.Option(help="Every model of a repository folder.")
    ] = None,
    concurrency: Annotated[str | None, typer.Option(help="Closed loop levels: 1,8,32")] = None,
    rate_rps: Annotated[str | None, typer.Option(help="Open loop levels: 100,200")] = None,
    distribution: Annotated[
        str | None, typer.Option(help="sequential (default), uniform or zipf:S")
    ] = None,
    demand: Annotated[
        Path | None,
        typer.Option(
            help="Demand CSV (model,kind,rps): open loop, each model at its own rate "
            "(instead of the model, level and distribution options)."
        ),
    ] = None,
    trace: Annotated[
        Path | None,
        typer.Option(
            help="Trace CSV (t_s,model,rps steps): open loop, each model's rate changing "
            "over --duration-s seconds, measured in --window-s windows."
        ),
    ] = None,
    window_s: Annotated[
        float, typer.Option(min=0.1, help="--trace: seconds per reported window.")
    ] = 5.0,
    rate_scale: Annotated[
        float, typer.Option(help="--demand, --trace: multiply every model's rate by this (> 0).")
    ] = 1.0,
    binary: Annotated[bool, typer.Option(help="HTTP: binary tensors (else JSON).")] = True,
    batch_size: Annotated[int, typer.Option(help="Rows per request.")] = 1,
    duration_s: Annotated[
        float, typer.Option(help="Measured seconds per level (3 windows).")
    ] = 10.0,
    warmup_s: Annotated[float, typer.Option(help="Warm-up seconds, not measured.")] = 2.0,
    max_windows: Annotated[int, typer.Option(help="Windows before a level stops unstable.")] = 10,
    workers: Annotated[int, typer.Option(help="Client processes.")] = 1,
    max_requests: Annotated[int, typer.Option(help="Requests per level at most.")] = 1_000_000,
    seed: Annotated[int, typer.Option(help="Seed of inputs, model choice and arrivals.")] = 0,
    input_file: Annotated[
        list[str] | None,
        typer.Option(
            help="NAME=PATH: send the file's bytes as BYTES input NAME, one per row (an image "
            "or text upload); repeatable. Only these inputs are sent."
        ),
    ] = None,
) -> None:
    """Drive a KServe v2 server (REST or gRPC) closed- or open-loop and measure it."""
    import json

    from inferpack.loadtest.runner import run_loadtest
    from inferpack.loadtest.spec import LoadSpec

    chosen = (model, models, models_from_repository, concurrency, rate_rps, distribution)
    if demand is not None and trace is not None:
        console.print("[red]error:[/] give --demand or --trace, not both")
        raise typer.Exit(2)
    if trace is not None:
        shape = _trace_shape(
            trace, duration_s, window_s, rate_scale, [x is not None for x in chosen]
        )
        warmup_s = 0.0
    elif demand is not None:
        shape = _demand_shape(demand, rate_scale, [x is not None for x in chosen])
    else:
        shape = _level_shape(model, models, models_from_repository, concurrency, rate_rps)
        shape["distribution"] = distribution or "sequential"
    transport = "grpc" if url.startswith("grpc://") else ("http-binary" if binary else "http-json")
    spec = LoadSpec(
        url=url.rstrip("/"),
        transport=transport,
        batch_size=batch_size,
        duration_s=duration_s,
        warmup_s=warmup_s,
        max_windows=shape.pop("max_windows", max_windows),
        workers=workers,
        max_requests=max_requests,
        seed=seed,
        input_files=_input_files(input_file or []),
        **shape,
    )
    try:
        document = _run_with_live_display(spec, run_loadtest)
    except InferpackError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None
    output.write_text(json.dumps(document, indent=1) + "\n")
    for warning in document["warnings"]:
        console.print(f"[yellow]warning:[/] {warning}")
    console.print(f"wrote {output}")


def _input_files(given: list[str]) -> tuple[tuple[str, str], ...]:
    files = []
    for item in given:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            console.print(f"[red]error:[/] --input-file takes NAME=PATH, got {item!r}")
            raise typer.Exit(2)
        files.append((name, path))
    return tuple(files)


def _level_shape(
    model: str | None,
    models: str | None,
    repository: Path | None,
    concurrency: str | None,
    rate_rps: str | None,
) -> dict[str, Any]:
    """LoadSpec fields of a sweep of levels over the named models."""
    names = _model_list(model, models, repository)
    if (concurrency is None) == (rate_rps is None):
        console.print("[red]error:[/] give --concurrency LEVELS or --rate-rps LEVELS")
        raise typer.Exit(2)
    return {
        "models": names,
        "mode": "closed" if concurrency else "open",
        "levels": _csv(concurrency or rate_rps or "", float),
    }


def _demand_shape(demand: Path, rate_scale: float, given: list[bool]) -> dict[str, Any]:
    """LoadSpec fields of one open-loop level with each model at its demand's rate."""
    from inferpack.loadtest.demand import demand_load
    from inferpack.plan.formats import read_demand

    if any(given):
        console.print(
            "[red]error:[/] --demand sets the models, the rate and the distribution: leave out "
            "--model, --models, --models-from-repository, --concurrency, --rate-rps "
            "and --distribution"
        )
        raise typer.Exit(2)
    try:
        load = demand_load(read_demand(demand), rate_scale)
    except InferpackError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    return {
        "models": load.models,
        "mode": "open",
        "levels": (load.rate_rps,),
        "distribution": "weighted",
        "weights": load.weights,
    }


def _trace_shape(
    trace: Path, duration_s: float, window_s: float, rate_scale: float, given: list[bool]
) -> dict[str, Any]:
    """LoadSpec fields of a trace run: the schedule's spans, one window per window_s."""
    import math

    from inferpack.plan.trace import read_trace, segments

    if any(given):
        console.print(
            "[red]error:[/] --trace sets the models and their rates: leave out --model, "
            "--models, --models-from-repository, --concurrency, --rate-rps and --distribution"
        )
        raise typer.Exit(2)
    if not math.isfinite(rate_scale) or rate_scale <= 0:
        console.print(f"[red]error:[/] --rate-scale must be > 0 (got {rate_scale})")
        raise typer.Exit(2)
    try:
        steps = read_trace(trace, duration_s, rate_scale)
    except InferpackError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    names = tuple(sorted(steps))
    schedule = tuple(segments(steps, names, duration_s))
    if not names or not any(sum(rates) > 0 for *_, rates in schedule):
        console.print(
            f"[red]error:[/] {trace}: no model has a rate above 0 before {duration_s:g} s"
        )
        raise typer.Exit(2)
    return {
        "models": names,
        "mode": "trace",
        "levels": (1.0,),
        "distribution": "uniform",
        "schedule": schedule,
        "trace_window_s": window_s,
        "max_windows": max(1, math.ceil(duration_s / window_s - 1e-9)),
    }


def _model_list(model: str | None, models: str | None, repository: Path | None) -> tuple[str, ...]:
    given = [x for x in (model, models, repository) if x]
    if len(given) != 1:
        console.print("[red]error:[/] give one of --model, --models, --models-from-repository")
        raise typer.Exit(2)
    if repository:
        from inferpack.repository import LocalRepository

        return tuple(LocalRepository(repository).model_names())
    return _csv(model or models or "")


def _run_with_live_display(spec: Any, run: Any) -> dict:  # type: ignore[type-arg]
    from rich.live import Live
    from rich.table import Table

    table = Table(title=f"loadtest {spec.url} ({spec.transport}, {spec.mode} loop)")
    for column in ("level", "window", "req/s", "p99 ms", "requests"):
        table.add_column(column, justify="right")

    with Live(table, console=console, refresh_per_second=4):

        def progress(row: dict) -> None:  # type: ignore[type-arg]
            table.add_row(
                f"{row['level']:g}",
                str(row["window"]),
                f"{row['throughput_rps']:,.1f}",
                f"{row['latency_p99_ms']:.2f}",
                str(row["requests"]),
            )

        document: dict = run(spec, progress)  # type: ignore[type-arg]
    return document


@app.command()
def report(
    results: Annotated[
        list[Path], typer.Argument(help="Bench/loadtest result JSON or plan.yaml files.")
    ],
    output: Annotated[Path, typer.Option(help="HTML file to write.")] = Path("report.html"),
) -> None:
    """One self-contained HTML page with plots and tables from bench results."""
    from inferpack.report import write_report

    try:
        write_report(results, output)
    except InferpackError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(1) from None
    console.print(f"wrote {output}")


@app.command("catalog")
def catalog_list(
    catalog: Annotated[Path | None, typer.Option(help="Override file to apply.")] = None,
) -> None:
    """List the instance price catalogue (price, basis, region, date, shape)."""
    from rich.table import Table

    from inferpack.bench.catalog import Catalog

    try:
        entries = list(Catalog.load(catalog))
    except InferpackError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    table = Table(title="instance catalogue")
    for column in ("name", "region", "basis", "USD/h", "date", "vCPU", "GiB", "accelerator"):
        table.add_column(column)
    for item in entries:
        accelerator = f"{item.accelerator_count} x {item.accelerator}" if item.accelerator else "-"
        table.add_row(
            item.name,
            item.region,
            item.basis,
            f"{item.price_usd_per_hour:g}",
            str(item.price_date),
            str(item.vcpu),
            f"{item.memory_gib:g}",
            accelerator,
        )
    Console().print(table)


@repo_app.command("init")
def repo_init(
    directory: Annotated[Path, typer.Argument(help="Folder to write the repository into.")],
    workloads: Annotated[
        str,
        typer.Option(
            help="Comma-separated reference workloads, or python examples "
            "(string-identity, numpy-mlp: model.py files, docs/python-models.md)."
        ),
    ] = "tiny-mlp,small-cnn,squeezenet,resnet50",
    seed: Annotated[int, typer.Option(help="Seed of the weights.")] = 0,
) -> None:
    """Write a ready repository of reference workloads with seeded weights."""
    from inferpack.repository.init import init_repository

    names = [w.strip() for w in workloads.split(",") if w.strip()]
    try:
        written = init_repository(directory, names, seed)
    except InferpackError as error:
        console.print(f"[red]error:[/] {error}")
        raise typer.Exit(2) from None
    for folder in written:
        console.print(f"wrote {folder}")


@repo_app.command("list")
def repo_list(
    directory: Annotated[Path, typer.Argument(help="Model repository folder.")],
) -> None:
    """Validate and list the models of a repository (every problem at once)."""
    from inferpack.repository import LocalRepository

    repository = LocalRepository(directory)
    failed = False
    for name in repository.model_names():
        try:
            config = repository.config(name)
            versions = ",".join(repository.versions(name))
            print(f"{name}\t{config.platform}\t{config.workload or config.artifact}\tv{versions}")
        except InferpackError as error:
            failed = True
            console.print(f"[red]{name}[/]: {error}")
    if failed:
        raise typer.Exit(1)


def main() -> None:
    with contextlib.suppress(KeyboardInterrupt):
        app()
