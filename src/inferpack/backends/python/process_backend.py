"""Python model instances in worker processes (``instances.kind: process``).

Why: a pure-Python CPU-bound model run on a thread holds the GIL, and the server's event
loop and every other model wait for it; code that crashes (a C extension's segfault,
``os._exit``) would take the server down. In a process of its own the model competes for a
core like any process, and a crash costs only its batch.

One process per instance, started with ``spawn`` (no copy of the server's threads or
locks), which imports model.py and loads the class there (``worker.main``). Each instance
keeps its own thread in the server (``executor``) that hands the worker one batch at a
time, the tensors through shared memory (``shm``), and answers the worker's BLS calls
while it waits. If the worker dies, the batch it was running fails (500, naming the exit
code) and a new worker is started at once on the same thread, before the next batch.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, Final

from inferpack.backends.python import shm
from inferpack.backends.python.backend_base import PythonBackendBase
from inferpack.backends.python.calls import ModelCalls
from inferpack.backends.python.instances import ModelContext, PythonRequest, Result
from inferpack.backends.python.worker import error_from, error_message, main
from inferpack.errors import ConfigError, InferpackError, ModelExecutionError, UnavailableError
from inferpack.types import Tensor

log = logging.getLogger(__name__)
# A worker imports numpy and inferpack's light modules, then model.py: seconds at most,
# unless the model's own load is long (it may be: a minute is generous, not a hang).
START_TIMEOUT_S: Final = 120.0
STOP_TIMEOUT_S: Final = 5.0
# How long an unload waits for a batch still running in the worker before killing it.
CLOSE_GRACE_S: Final = 30.0


class WorkerDiedError(Exception):
    """The pipe to the worker closed: it exited (or was killed)."""


class ProcessBackend(PythonBackendBase):
    """One instance of a python model in a worker process of its own."""

    def __init__(self, context: ModelContext, path: Path, calls: ModelCalls | None) -> None:
        self.device = context.device
        self.name = context.name
        self._context = context
        self._path = path
        self._calls = calls
        self.executor = ThreadPoolExecutor(1, thread_name_prefix=f"python-{context.name}")
        self._process: BaseProcess | None = None
        self._conn: Connection | None = None
        self._inputs = shm.Block.create(shm.MIN_BLOCK_BYTES)
        self._outputs = shm.Block.create(shm.MIN_BLOCK_BYTES)
        self._memory_bytes = 0
        self._closing = False
        self.restarts = 0
        try:
            self.executor.submit(self._start).result()
        except BaseException:
            self._release()
            raise

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def _start(self) -> None:
        """Start a worker and wait until it has loaded the model (ConfigError if it fails)."""
        context = multiprocessing.get_context("spawn")
        ours, theirs = context.Pipe()
        process = context.Process(
            target=main,
            args=(theirs, self._path, self._context),
            name=f"inferpack-python-{self.name}-{self._context.instance}",
            daemon=True,
        )
        process.start()
        theirs.close()
        try:
            message = self._loaded(process, ours)
        except ConfigError:
            _reap(process)
            ours.close()
            raise
        self._process, self._conn = process, ours
        self._memory_bytes = int(message[1])

    def _loaded(self, process: BaseProcess, conn: Connection) -> tuple[Any, ...]:
        """The worker's "ready" message, answering the calls its load makes (BLS in
        ``initialize``); ConfigError if it fails, exits or takes too long."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if not conn.poll(max(deadline - time.monotonic(), 0)):
                raise ConfigError(
                    [f"model {self.name!r}: worker did not load in {START_TIMEOUT_S:.0f} s"]
                )
            try:
                message = conn.recv()
            except (EOFError, OSError):
                process.join(STOP_TIMEOUT_S)
                raise ConfigError(
                    [f"model {self.name!r}: worker exited while loading (code {process.exitcode})"]
                ) from None
            if message[0] == "failed":
                raise ConfigError([message[1]])
            if message[0] == "ready":
                return tuple(message)
            self._answer_call(conn, *message[1:])

    def run_requests(self, requests: list[PythonRequest]) -> list[Result]:
        """One batch through the worker (on ``executor``); a dead worker fails the batch and
        is replaced before this returns."""
        if self._closing:
            return [UnavailableError(f"model {self.name!r} is unloading")] * len(requests)
        if self._conn is None:  # a restart failed earlier: try again
            try:
                self._start()
            except ConfigError as error:
                return [error] * len(requests)
        try:
            return self._run(requests)
        except WorkerDiedError:
            code = None
            if self._process is not None:
                self._process.join(STOP_TIMEOUT_S)  # the pipe closes just before it exits
                code = self._process.exitcode
            failed = ModelExecutionError(
                f"model {self.name!r}: its worker process died (exit code {code}) while running "
                "this batch; a new one is started"
            )
        except OSError as error:  # shared memory could not grow: this batch only
            return [ModelExecutionError(f"model {self.name!r}: {error}")] * len(requests)
        except Exception as error:  # the exchange broke mid-way: the pipe cannot be trusted
            failed = ModelExecutionError(
                f"model {self.name!r}: the exchange with its worker failed "
                f"({type(error).__name__}: {error}); a new worker is started"
            )
        if not self._closing:
            self._restart()
        return [failed] * len(requests)

    def _run(self, requests: list[PythonRequest]) -> list[Result]:
        assert self._conn is not None
        payloads = [r.inputs for r in requests]
        meta = [(r.id, r.parameters, r.outputs) for r in requests]
        packed = shm.pack(payloads)
        layout = shm.write(self._inputs, packed)
        if layout is None:
            grown = shm.Block.create(2 * packed.nbytes)  # OSError: no room
            self._inputs.close()
            self._inputs = grown
            layout = shm.write(self._inputs, packed)
        inputs = (str(self._inputs.path), self._inputs.size)
        outputs = (str(self._outputs.path), self._outputs.size)
        try:
            self._conn.send(("run", inputs, outputs, layout, meta))
            while True:
                message = self._conn.recv()
                if message[0] == "done":
                    break
                self._answer_call(self._conn, *message[1:])
        except (EOFError, OSError) as error:
            raise WorkerDiedError from error
        return self._results(message[1])

    def _results(self, answers: list[tuple[Any, ...]]) -> list[Result]:
        results: list[Result] = []
        inline = 0
        for answer in answers:
            if answer[0] == "error":
                results.append(error_from(answer[1], answer[2]))
            elif answer[0] == "shm":
                results.append(shm.read(self._outputs, [answer[1]], copy=True)[0])
            else:
                results.append(answer[1])
                inline += shm.pack([answer[1]]).nbytes
        if inline > self._outputs.size:  # did not fit: room for next time, if there is room
            with contextlib.suppress(OSError):
                grown = shm.Block.create(2 * inline)
                self._outputs.close()
                self._outputs = grown
        return results

    def _answer_call(
        self,
        conn: Connection,
        model: str,
        inputs: dict[str, Tensor],
        outputs: list[str] | None,
        version: str | None,
    ) -> None:
        """A BLS call the worker made: run it on this server, send back the answer. Every
        call gets one answer, whatever fails: the worker waits for it."""
        try:
            if self._calls is None:
                raise ModelExecutionError("no server to call")
            answer: tuple[Any, ...] = (
                "answer",
                self._calls.submit(model, inputs, outputs, version).result(),
            )
        except InferpackError as error:
            answer = error_message(error)
        except BaseException as error:
            what = f"a call to model {model!r} failed: {type(error).__name__}: {error}"
            answer = error_message(ModelExecutionError(what))
        conn.send(answer)

    def _restart(self) -> None:
        self._stop(kill=True)
        self.restarts += 1
        try:
            self._start()
            log.warning("model %s: worker process restarted (restart %d)", self.name, self.restarts)
        except ConfigError as error:
            log.error("model %s: worker restart failed: %s", self.name, error.message)

    def close(self) -> None:
        """Ask the worker to unload (its ``finalize``), on the instance's thread, then free
        the shared memory. A worker still running a batch after CLOSE_GRACE_S is killed (the
        batch fails, no new worker starts), so an unload or a shutdown never hangs on it."""
        self._closing = True
        released = self.executor.submit(self._release)
        self.executor.shutdown(wait=False)
        timer = threading.Timer(CLOSE_GRACE_S, self._kill_if_stuck, args=(released,))
        timer.daemon = True
        timer.start()

    def _kill_if_stuck(self, released: Future[None]) -> None:
        process = self._process
        if not released.done() and process is not None and process.is_alive():
            log.warning("model %s: worker still busy at unload; killed", self.name)
            process.kill()

    def _release(self) -> None:
        self._stop(kill=False)
        self._inputs.close()
        self._outputs.close()

    def _stop(self, kill: bool) -> None:
        process, conn = self._process, self._conn
        self._process = self._conn = None
        if process is None or conn is None:
            return
        if kill:
            process.kill()
        else:
            with contextlib.suppress(OSError):
                conn.send(("close",))
        _reap(process)
        conn.close()


def _reap(process: BaseProcess) -> None:
    """Join a worker that is exiting; kill it if it does not."""
    process.join(STOP_TIMEOUT_S)
    if process.is_alive():
        process.kill()
        process.join(STOP_TIMEOUT_S)
