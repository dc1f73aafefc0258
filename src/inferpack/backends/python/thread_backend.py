"""Python model instances on threads of the server (``instances.kind: thread``, the default).

Each instance gets a thread of its own rather than one of the device's shared workers: a
model that calls other models (BLS) blocks its thread until they answer, and those run on
the shared workers; were the caller on one of them, a few concurrent callers could hold
every worker and wait forever for each other. The thread exists from the load on, loads
the instance (so thread-local state its ``initialize`` makes is where ``execute`` runs)
and runs its ``finalize`` at unload.
"""

from __future__ import annotations

import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from inferpack.backends.python.backend_base import PythonBackendBase
from inferpack.backends.python.calls import ModelCalls
from inferpack.backends.python.instances import (
    ModelContext,
    ModelInstance,
    PythonRequest,
    Result,
)
from inferpack.backends.python.instances import load_instance as _load_instance
from inferpack.backends.python.memory import held_bytes
from inferpack.backends.python.process_backend import ProcessBackend
from inferpack.config.triton_json import triton_model_config
from inferpack.repository import ModelSource

log = logging.getLogger(__name__)


class PythonBackend(PythonBackendBase):
    """One instance of a python model, run on its own thread (``executor``)."""

    def __init__(self, context: ModelContext, path: Path, calls: ModelCalls | None) -> None:
        self.device = context.device
        self.name = context.name
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"python-{context.name}")
        try:
            self._instance: ModelInstance = self.executor.submit(
                _load_instance, path, context, calls
            ).result()
        except BaseException:
            self.executor.shutdown(wait=False)
            raise
        # What the instance holds (python_models.memory), at least the file's size.
        self._memory_bytes = max(held_bytes(self._instance.model), path.stat().st_size)

    def run_requests(self, requests: list[PythonRequest]) -> list[Result]:
        """A batch as its requests, one result each (called on ``executor``)."""
        return self._instance.run(requests)

    def close(self) -> None:
        """Unload on the instance's own thread (``finalize``/``unload`` is model code: never
        on the event loop), then let the thread go."""
        future = self.executor.submit(self._instance.close)
        future.add_done_callback(self._closed)
        self.executor.shutdown(wait=False)

    def _closed(self, future: Future[None]) -> None:
        error = future.exception()
        if error is not None:
            log.warning("model %s: unloading raised %s", self.name, error)


def load_python_backends(
    source: ModelSource, calls: ModelCalls | None
) -> list[PythonBackend | ProcessBackend]:
    """One backend per configured instance, each loading its own instance of the class; if
    one fails, those already loaded are closed (their workers, threads and memory freed)."""
    kind = ProcessBackend if source.config.instances.kind == "process" else PythonBackend
    backends: list[PythonBackend | ProcessBackend] = []
    try:
        for context in contexts(source):
            backends.append(kind(context, source.artifact_path, calls))
    except BaseException:
        for backend in backends:
            backend.close()
        raise
    return backends


def contexts(source: ModelSource) -> list[ModelContext]:
    config = source.config
    device = "cpu" if config.instances.device == "auto" else config.instances.device
    as_json = triton_model_config(config)
    return [
        ModelContext(
            name=config.name,
            version=source.version,
            folder=source.artifact_path.parent,
            config=as_json,
            instance=index,
            device=device,
            kind=config.instances.kind,
            parameters=dict(config.parameters),
            nice=config.instances.nice,
        )
        for index in range(config.instances.count)
    ]
