"""Compile batch x inference batch: the seeds' table for a model compiled per batch size.

The seeds compiled a model for one batch size (Neuron's compile batch size) and ran every
inference batch size against it. Here compile batch C is the model loaded with
``compile: {mode, batch_buckets: [C]}``, and an inference batch of B rows runs the way the
server runs a request larger than its largest bucket (``runtime/served_model.py``)::

    for chunk in chunk_rows(B, C):          # [C, C, ..., rest]: ceil(B / C) calls
        out = run(pad_rows(chunk, C - len(chunk)))[:len(chunk)]   # exactly C rows each
    concatenate the chunks' outputs          # B rows, no padded row among them

Both helpers are the server's own (``batching/buckets.py`` and ``pad_rows``), so the bench
pays exactly the padding and chunking a served model pays. Mode ``none`` keeps the eager
module: the same chunks, so the cost of padding alone shows.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np

from inferpack.batching.buckets import chunk_rows
from inferpack.config.compile_config import COMPILE_MODES, TORCH_MODULE_PLATFORMS, CompileConfig
from inferpack.config.model_config import ModelConfig
from inferpack.errors import ConfigError
from inferpack.repository import ModelSource
from inferpack.runtime.served_model import pad_rows
from inferpack.types import Tensor

Tensors = dict[str, Tensor]
Run = Callable[[Tensors], Tensors]

__all__ = ["COMPILE_MODES", "compiled_buckets", "compiled_variant", "default_mode", "run_chunked"]

# Without --compile-mode: what serves a compiled bucket best on the device kind (CUDA graphs
# remove the launch overhead that dominates small batches; inductor is what CPU has).
DEFAULT_MODE_CPU: Final = "inductor"
DEFAULT_MODE_CUDA: Final = "cudagraphs"


def default_mode(device: str) -> str:
    return DEFAULT_MODE_CUDA if device.startswith("cuda") else DEFAULT_MODE_CPU


def run_chunked(run: Run, inputs: Tensors, bucket: int) -> Tensors:
    """``run`` over ``inputs`` (B rows) as ceil(B / bucket) calls of exactly ``bucket``
    rows; the outputs are B rows, equal to one call on ``inputs`` up to the model's own
    batch-size sensitivity."""
    rows = next(iter(inputs.values())).shape[0]
    sizes = chunk_rows(rows, bucket)
    pieces: list[Tensors] = []
    for start, size in zip(itertools.accumulate(sizes, initial=0), sizes, strict=False):
        chunk = {name: array[start : start + size] for name, array in inputs.items()}
        outputs = run(pad_rows(chunk, bucket - size))
        pieces.append({name: array[:size] for name, array in outputs.items()})
    if len(pieces) == 1:
        return pieces[0]
    return {name: np.concatenate([piece[name] for piece in pieces]) for name in pieces[0]}


def compiled_variant(source: ModelSource, mode: str, bucket: int) -> ModelSource:
    """``source`` compiled (``mode``) for the one batch size ``bucket``."""
    kept = source.config.compile.channels_last
    config = dataclasses.replace(source.config, compile=CompileConfig(mode, (bucket,), kept))
    return dataclasses.replace(source, config=config)


def compiled_buckets(
    requested: Sequence[int], mode: str, config: ModelConfig, device: str, warnings: list[str]
) -> list[int]:
    """The compile batches to measure: ``requested`` within the model's max batch size
    (the others named in ``warnings``). ConfigError, every problem at once, where the
    model or device cannot run ``mode`` at any of them."""
    problems = []
    if mode not in COMPILE_MODES:
        problems.append(f"--compile-mode {mode!r} is not one of {sorted(COMPILE_MODES)}")
    elif mode != "none" and config.platform not in TORCH_MODULE_PLATFORMS:
        problems.append(
            f"{config.name}: --compile-mode {mode} needs platform workload or torch_export, "
            f"not {config.platform} (--compile-mode none still measures the chunking)"
        )
    if mode == "cudagraphs" and not device.startswith("cuda"):
        problems.append(f"--compile-mode cudagraphs needs a CUDA device, not {device}")
    if any(b < 1 for b in requested):
        problems.append(f"--compiled-bucket must be positive, got {list(requested)}")
    if not config.batching:
        problems.append(f"{config.name} has no batch dimension: no compile batch to choose")
    kept = sorted({b for b in requested if b <= config.max_batch_size})
    skipped = sorted(set(requested) - set(kept))
    if skipped and config.batching:
        warnings.append(f"compiled buckets {skipped} exceed max_batch_size {config.max_batch_size}")
        if not kept:
            problems.append(f"{config.name}: no --compiled-bucket within max_batch_size")
    if problems:
        raise ConfigError(problems)
    return kept
