"""The worker process of a ``kind: process`` python model instance (its ``main``).

Messages on the pipe (pickled tuples, small: tensors go through shared memory)::

    server -> worker   ("run", input block, output block, layout, [(id, parameters,
                       requested outputs) per request])  | ("close",)
    worker -> server   ("ready", rss_bytes) | ("failed", message)   once, after loading
                       ("done", results)   per batch; a result is ("shm", refs),
                                           ("inline", tensors) or ("error", kind, message)
                       ("call", model, inputs, outputs, version)    a BLS call
    server -> worker   ("answer", outputs) | ("error", kind, message)   its answer

A BLS call from the worker is answered before the worker goes on (``async_exec`` calls
run one after another here, not concurrently).
"""

from __future__ import annotations

import os
from concurrent.futures import Future
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from inferpack import errors
from inferpack.backends.python import shm
from inferpack.backends.python.instances import (
    ModelContext,
    ModelInstance,
    Outputs,
    PythonRequest,
    Result,
    load_instance,
)
from inferpack.backends.python.memory import rss_bytes
from inferpack.errors import ConfigError, InferpackError, ModelExecutionError, UnavailableError
from inferpack.types import Tensor


def error_message(error: InferpackError) -> tuple[str, str, str]:
    return ("error", type(error).__name__, error.message)


def error_from(kind: str, message: str) -> InferpackError:
    """The error a worker named, as the same class here (a 500 if the name is unknown)."""
    cls = getattr(errors, kind, None)
    if not (isinstance(cls, type) and issubclass(cls, InferpackError)):
        return ModelExecutionError(message)
    if issubclass(cls, ConfigError):
        return cls([message])
    try:
        return cls(message)
    except TypeError:  # a class whose constructor takes other arguments
        return (
            UnavailableError(message)
            if issubclass(cls, UnavailableError)
            else ModelExecutionError(message)
        )


class PipeCalls:
    """:class:`ModelCalls` inside a worker: each call goes to the server and waits."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def submit(
        self,
        model: str,
        inputs: dict[str, Tensor],
        outputs: list[str] | None = None,
        version: str | None = None,
    ) -> Future[dict[str, Tensor]]:
        self._conn.send(("call", model, inputs, outputs, version))
        answer = self._conn.recv()
        future: Future[dict[str, Tensor]] = Future()
        if answer[0] == "answer":
            future.set_result(answer[1])
        else:
            future.set_exception(error_from(answer[1], answer[2]))
        return future

    def ready(self, model: str, version: str | None = None) -> bool:
        raise ModelExecutionError("is_model_ready is not available to kind: process models")

    def load(self, model: str) -> None:
        raise ModelExecutionError("load_model is not available to kind: process models")

    def unload(self, model: str) -> None:
        raise ModelExecutionError("unload_model is not available to kind: process models")


def main(conn: Connection, path: Path, context: ModelContext) -> None:
    """Load the instance, then run batches until told to close or the server goes."""
    if context.nice and hasattr(os, "nice"):
        os.nice(context.nice)
    try:
        instance = load_instance(path, context, PipeCalls(conn))
    except ConfigError as error:
        conn.send(("failed", error.message))
        return
    conn.send(("ready", rss_bytes(os.getpid())))
    blocks: dict[str, shm.Block] = {}
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):  # the server is gone
            break
        if message[0] == "close":
            instance.close()
            break
        conn.send(("done", _batch(instance, blocks, message)))
    for block in blocks.values():
        block.close()


def _batch(
    instance: ModelInstance, blocks: dict[str, shm.Block], message: tuple[Any, ...]
) -> list[tuple[Any, ...]]:
    """One batch's answers (``message``: "run", the input and output blocks, the layout,
    each request's id, parameters and requested outputs); whatever goes wrong, one answer
    per request (not a dead worker)."""
    _, inputs, outputs, layout, meta = message
    try:
        payloads = shm.read(_block(blocks, "inputs", *inputs), layout, copy=False)
        requests = [PythonRequest(p, *m) for p, m in zip(payloads, meta, strict=True)]
        results = instance.run(requests)
        return _answer(results, _block(blocks, "outputs", *outputs))
    except Exception as error:
        failed = ModelExecutionError(f"model {instance.name!r}: {type(error).__name__}: {error}")
        return [error_message(failed)] * len(layout)


def _block(blocks: dict[str, shm.Block], role: str, name: str, size: int) -> shm.Block:
    """The server's block for ``role``, mapped once; a grown block (a new name) replaces
    the old mapping."""
    block = blocks.get(role)
    if block is None or block.path != Path(name) or block.size != size:
        if block is not None:
            block.close()
        block = blocks[role] = shm.Block(Path(name), size, create=False)
    return block


def _answer(results: list[Result], block: shm.Block) -> list[tuple[Any, ...]]:
    """Each result as the server reads it: errors by kind, outputs through ``block`` when
    all fit, pickled otherwise."""
    ok: list[Outputs] = [r for r in results if not isinstance(r, InferpackError)]
    layout = shm.write(block, shm.pack(ok))
    placed = iter(layout) if layout is not None else None
    answer: list[tuple[Any, ...]] = []
    for result in results:
        if isinstance(result, InferpackError):
            answer.append(error_message(result))
        elif placed is not None:
            answer.append(("shm", next(placed)))
        else:
            answer.append(("inline", result))
    return answer
