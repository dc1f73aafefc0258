"""Tensors between the server and a python model's worker process, through shared memory.

The server owns two blocks per worker, one for a batch's inputs and one for its outputs:
files in ``/dev/shm`` (memory, not disk), mapped by both processes. A batch is written
into the input block once; only its small description (names, dtypes, shapes, offsets)
crosses the pipe. The worker maps the inputs without copying and writes its outputs into
the output block; outputs that do not fit travel pickled once and the server grows the
block for the next batch. BYTES tensors are stored in the binary extension's
length-prefixed form. A block is unlinked by the server when its worker stops or dies, so a
crash leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
import tempfile
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np

from inferpack.datatypes import deserialize_bytes_tensor, serialize_bytes_tensor
from inferpack.types import Tensor

_SHM_DIR: Final = Path("/dev/shm") if Path("/dev/shm").is_dir() else Path(tempfile.gettempdir())
_ALIGN: Final = 64  # every tensor starts on a cache line (and any dtype's alignment)
MIN_BLOCK_BYTES: Final = 1 << 20


@dataclass(frozen=True, slots=True)
class TensorRef:
    """Where one tensor lies in a block: ``dtype`` is numpy's string, or "BYTES"."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


Layout = list[list[TensorRef]]  # per request, its tensors


class Block:
    """A shared-memory file mapped in this process; the creator unlinks it."""

    def __init__(self, path: Path, size: int, create: bool) -> None:
        self.path = path
        self.size = size
        flags = os.O_RDWR | (os.O_CREAT | os.O_EXCL if create else 0)
        fd = os.open(path, flags, 0o600)
        # The owner unlinks the file however the block ends (closed, or dropped by a load
        # that failed half-way); unlinking twice is harmless.
        self._unlink = weakref.finalize(self, path.unlink, missing_ok=True) if create else None
        try:
            if create:
                _reserve(fd, size)
            self.map = mmap.mmap(fd, size)
        except BaseException:
            self.close()
            raise
        finally:
            os.close(fd)

    @classmethod
    def create(cls, size: int) -> Block:
        """A new block of at least ``size`` bytes; OSError (ENOSPC) if /dev/shm is full."""
        path = _SHM_DIR / f"inferpack-{os.getpid()}-{secrets.token_hex(8)}"
        return cls(path, max(size, MIN_BLOCK_BYTES), create=True)

    def close(self) -> None:
        mapped = getattr(self, "map", None)
        if mapped is not None:
            with contextlib.suppress(BufferError):  # a view is still held: unmapped with it
                mapped.close()
        if self._unlink is not None:
            self._unlink()


def _reserve(fd: int, size: int) -> None:
    """Give the file its pages now. A sparse tmpfs file (``ftruncate`` alone) takes pages
    when they are first written through the mapping, and a full /dev/shm then kills the
    process with SIGBUS instead of failing here with ENOSPC."""
    if hasattr(os, "posix_fallocate"):
        os.posix_fallocate(fd, 0, size)
    else:  # pragma: no cover - not Linux
        os.ftruncate(fd, size)


@dataclass(frozen=True, slots=True)
class Packed:
    """Tensors ready to be written: per request, each tensor's name, dtype, shape and raw
    bytes (BYTES encoded once here, however often the block must grow), and the bytes a
    block needs to hold them all."""

    tensors: list[list[tuple[str, str, tuple[int, ...], bytes | Tensor]]]
    nbytes: int


def pack(batches: list[dict[str, Tensor]]) -> Packed:
    tensors = [
        [
            (name, "BYTES" if a.dtype.kind in "OSU" else a.dtype.str, tuple(a.shape), _raw(a))
            for name, a in request.items()
        ]
        for request in batches
    ]
    nbytes = sum(_aligned(len(raw)) for request in tensors for *_, raw in request)
    return Packed(tensors, nbytes)


def write(block: Block, packed: Packed) -> Layout | None:
    """Copy every tensor into ``block``; None if they do not fit."""
    if packed.nbytes > block.size:
        return None
    layout: Layout = []
    offset = 0
    for request in packed.tensors:
        refs = []
        for name, dtype, shape, raw in request:
            block.map[offset : offset + len(raw)] = raw  # type: ignore[assignment]
            refs.append(TensorRef(name, dtype, shape, offset, len(raw)))
            offset += _aligned(len(raw))
        layout.append(refs)
    return layout


def read(block: Block, layout: Layout, copy: bool) -> list[dict[str, Tensor]]:
    """The tensors of ``layout``: views of the block (``copy=False``: valid until it is
    written again) or copies."""
    batches = []
    for refs in layout:
        tensors: dict[str, Tensor] = {}
        for ref in refs:
            view = memoryview(block.map)[ref.offset : ref.offset + ref.nbytes]
            if ref.dtype == "BYTES":
                tensors[ref.name] = deserialize_bytes_tensor(view, ref.name).reshape(ref.shape)
            else:
                array = np.frombuffer(view, dtype=np.dtype(ref.dtype)).reshape(ref.shape)
                tensors[ref.name] = array.copy() if copy else array
        batches.append(tensors)
    return batches


def _raw(array: Tensor) -> bytes | Tensor:
    if array.dtype.kind in "OSU":
        return serialize_bytes_tensor(array)
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


def _aligned(size: int) -> int:
    return (size + _ALIGN - 1) // _ALIGN * _ALIGN
