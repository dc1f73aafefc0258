"""``inferpack compile``: an optimised version of a model, checked for accuracy."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from inferpack.cli.app import app, console
from inferpack.errors import InferpackError

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID
    from rich.table import Table

    from inferpack.compile.run import CompileResult


class CompileMode(StrEnum):
    EXPORT = "export"
    INDUCTOR = "inductor"
    CUDAGRAPHS = "cudagraphs"
    ONNX = "onnx"


class CompileTarget(StrEnum):
    CPU = "cpu"
    CUDA = "cuda"


class CompilePrecision(StrEnum):
    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


_METRICS = (
    "max_abs_error",
    "relative_l2",
    "cosine_similarity",
    "top1_agreement",
    "top5_agreement",
    "keypoint_agreement",
)


@app.command()
def compile(
    model_repository: Annotated[Path, typer.Option(help="Repository folder holding --model.")],
    model: Annotated[str, typer.Option(help="The model to compile (its latest version).")],
    target: Annotated[CompileTarget, typer.Option(help="Device the artifact runs on.")] = (
        CompileTarget.CPU
    ),
    precision: Annotated[CompilePrecision, typer.Option(help="Compute precision.")] = (
        CompilePrecision.FP32
    ),
    mode: Annotated[
        CompileMode,
        typer.Option(
            help="onnx: model.onnx (ONNX Runtime); export: torch.export + AOTInductor "
            "(model.pt2); inductor / cudagraphs: torch.compile at load."
        ),
    ] = CompileMode.ONNX,
    batch_buckets: Annotated[
        str, typer.Option(help="Batch sizes to compile and check, comma-separated.")
    ] = "1,2,4,8,16,32",
    channels_last: Annotated[
        bool, typer.Option(help="NHWC memory layout for 4-D inputs (CNNs).")
    ] = False,
    allow_accuracy_loss: Annotated[
        bool, typer.Option(help="Write the model even if it is outside the tolerance.")
    ] = False,
    version: Annotated[
        int | None, typer.Option(help="Version to write (default: the next one).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed of the example and check inputs.")] = 0,
) -> None:
    """Write an optimised model beside M (M-<mode>-<precision>), checked against fp32 eager."""
    from rich.progress import Progress

    from inferpack.compile.run import compile_model
    from inferpack.compile.spec import CompileSpec, CompileUsageError, parse_buckets
    from inferpack.compile.tolerance import AccuracyLossError

    try:
        spec = CompileSpec(
            model_repository, model, target.value, precision.value, mode.value,
            parse_buckets(batch_buckets), channels_last, allow_accuracy_loss, version, seed,
        )  # fmt: skip
        with Progress(console=console, transient=True) as bar:
            result = compile_model(spec, _BarReporter(bar))
    except CompileUsageError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(2) from None
    except InferpackError as error:
        console.print(f"[red]error:[/red] {error}")
        raise typer.Exit(1) from None
    console.print(_table(result))
    if not result.written:
        console.print(f"[red]refused:[/red] {AccuracyLossError(result.violations)}")
        raise typer.Exit(1)
    _summary(result)


class _BarReporter:
    """Stages as a spinner line, buckets as a bar."""

    def __init__(self, bar: Progress) -> None:
        self.bar = bar
        self.stage_task = bar.add_task("compiling", total=None)
        self.bucket_task: TaskID | None = None

    def stage(self, text: str) -> None:
        self.bar.update(self.stage_task, description=text)

    def bucket(self, batch_size: int, total: int) -> None:
        if self.bucket_task is None:
            self.bucket_task = self.bar.add_task("checking buckets", total=total)
        self.bar.update(self.bucket_task, advance=1, description=f"checked batch {batch_size}")


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if isinstance(value, float) and abs(value) < 1e-3 else f"{value:.6g}"


def _table(result: CompileResult) -> Table:
    from rich.table import Table

    report = result.report
    shown = [m for m in _METRICS if report["overall"].get(m) is not None]
    table = Table(title=f"{result.model} v{result.version}: accuracy vs fp32 eager")
    table.add_column("batch", justify="right")
    for metric in shown:
        table.add_column(metric, justify="right")
    for row in report["buckets"]:
        table.add_row(str(row["batch_size"] or "-"), *(_cell(row.get(m)) for m in shown))
    table.add_row("[b]all[/b]", *(_cell(report["overall"].get(m)) for m in shown))
    tolerance = report["tolerance"]
    table.add_row("tolerance", *(tolerance.get(m, "").removeprefix(m).strip() for m in shown))
    return table


def _summary(result: CompileResult) -> None:
    report = result.report
    if report["mode"] in {"inductor", "cudagraphs"}:
        how = "compiles at load"
    else:
        how = "cached" if report["cached"] else f"compiled in {report['compile_s']:.1f} s"
    console.print(
        f"wrote {result.path} ({report['exporter']}, {how}); "
        f"load + warm-up of the new artifact: {report['load_s']:.2f} s"
    )
    if report["accepted_with_accuracy_loss"]:
        console.print(
            "[yellow]accepted with accuracy loss:[/yellow] " + "; ".join(report["violations"])
        )
