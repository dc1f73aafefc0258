"""Ahead-of-time conversions: a torch module → ``model.onnx`` or an AOTInductor ``model.pt2``.

Both artifacts keep the source model's tensors at the wire: the module is wrapped so that
floating inputs are cast to the compile precision inside the graph and floating outputs
back to fp32 (clients and model.yaml datatypes are unchanged; the artifact's model.yaml
says ``precision: fp32``, the precision its I/O has). The batch dim is dynamic from 1 to
max_batch_size, other variable dims (-1) are dynamic too.
"""

from __future__ import annotations

import contextlib
import logging
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from inferpack.compile.spec import CompileError
from inferpack.config.model_config import ModelConfig
from inferpack.workloads import example_inputs

if TYPE_CHECKING:
    import torch

# Rows of the example batch: 2, not 1, so that export does not specialise the batch dim.
_EXAMPLE_ROWS = 2
# Lines of torch's exception kept in our message: the reason, not the whole traceback.
_REASON_LINES = 4
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True, slots=True)
class Exported:
    """An artifact written, and which exporter wrote it."""

    path: Path
    exporter: str


def io_wrapper(module: torch.nn.Module, precision: str, channels_last: bool) -> torch.nn.Module:
    """``module`` at ``precision`` behind fp32 inputs and outputs (module docstring)."""
    import torch

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    if dtype != torch.float32:
        module = module.to(dtype)
    if channels_last:
        module = module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    class Fp32Io(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module

        def forward(self, *inputs: torch.Tensor) -> Any:
            cast = [_into(x, dtype, channels_last) for x in inputs]
            out = self.inner(*cast)
            if isinstance(out, torch.Tensor):
                return _out(out)
            if isinstance(out, dict):
                return {key: _out(value) for key, value in out.items()}
            return tuple(_out(value) for value in out)

    return Fp32Io().eval()


def _into(x: torch.Tensor, dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    import torch

    if x.is_floating_point():
        x = x.to(dtype)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _out(x: torch.Tensor) -> torch.Tensor:
    import torch

    return x.float() if x.is_floating_point() and x.dtype != torch.float32 else x


def example_args(config: ModelConfig, device: str, seed: int) -> tuple[torch.Tensor, ...]:
    """Seeded example inputs in model.yaml order (no batch dim for a model without one)."""
    import torch

    rows = min(_EXAMPLE_ROWS, config.max_batch_size) if config.batching else 1
    arrays = example_inputs(config.inputs, rows, seed)
    tensors = [torch.from_numpy(arrays[spec.name]).to(device) for spec in config.inputs]
    return tuple(t if config.batching else t[0] for t in tensors)


def dynamic_shapes(config: ModelConfig) -> tuple[tuple[dict[int, Any], ...]]:
    """torch.export's dynamic_shapes for ``forward(*inputs)``: the batch dim (1 ..
    max_batch_size) and every variable dim."""
    from torch.export import Dim

    batch = Dim("batch", min=1, max=config.max_batch_size) if config.max_batch_size > 1 else None
    specs = []
    for spec in config.inputs:
        offset = 1 if config.batching else 0
        dims: dict[int, Any] = {i + offset: Dim.DYNAMIC for i, d in enumerate(spec.dims) if d < 0}
        if batch is not None:
            dims[0] = batch
        specs.append(dims)
    return (tuple(specs),)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Exporters warn and log at length about things that do not concern the user."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch._dynamo", "torch.export")]
    levels = [logger.level for logger in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _reason(error: BaseException) -> str:
    """torch's reason in a few lines: its "Exception summary" where it gives one."""
    text = _ANSI.sub("", str(error))
    _, summary, after = text.partition("## Exception summary")
    lines = [line.strip() for line in (after if summary else text).splitlines() if line.strip()]
    return f"{type(error).__name__}: " + " / ".join(lines[:_REASON_LINES])


def export_onnx(
    module: torch.nn.Module, config: ModelConfig, args: tuple[Any, ...], path: Path
) -> Exported:
    """torch.onnx's dynamo exporter; the TorchScript exporter where that one fails (e.g. a
    TorchScript source module). CompileError with both reasons if neither works."""
    import torch

    inputs, outputs = [s.name for s in config.inputs], config.output_names()
    with _quiet():
        try:
            torch.onnx.export(
                module, args, str(path), dynamic_shapes=dynamic_shapes(config),
                dynamo=True, verbose=False, external_data=False, input_names=inputs,
                output_names=outputs,
            )  # fmt: skip
            return Exported(path, "torch.onnx (dynamo)")
        except Exception as error:
            first = _reason(error)
        path.unlink(missing_ok=True)
        axes = {name: {0: "batch"} for name in (*inputs, *outputs)}
        try:
            torch.onnx.export(
                module, args, str(path), dynamo=False,
                dynamic_axes=axes if config.batching else None, input_names=inputs,
                output_names=outputs,
            )  # fmt: skip
            return Exported(path, "torch.onnx (torchscript, dynamo failed)")
        except Exception as error:
            raise CompileError(
                f"ONNX export failed. dynamo exporter: {first}. TorchScript exporter: "
                f"{_reason(error)}"
            ) from None


def export_aoti(
    module: torch.nn.Module, config: ModelConfig, args: tuple[Any, ...], path: Path
) -> Exported:
    """torch.export.export with a dynamic batch dim, then AOTInductor into a package."""
    import torch

    with _quiet():
        try:
            program = torch.export.export(module, args, dynamic_shapes=dynamic_shapes(config))
        except Exception as error:
            raise CompileError(
                f"torch.export could not capture {config.name!r} with a dynamic batch dim "
                f"(1..{config.max_batch_size}): {_reason(error)}"
            ) from None
        try:
            torch._inductor.aoti_compile_and_package(program, package_path=str(path))
        except Exception as error:
            raise CompileError(
                f"AOTInductor failed for {config.name!r}: {_reason(error)}"
            ) from None
    return Exported(path, "torch.export + AOTInductor")
