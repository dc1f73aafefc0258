"""One instance of a python model: the user's class, loaded once, run on whole batches.

The same two classes run on a thread of the server and inside a worker process
(``kind: process``): both take a batch as one dict of input arrays per request and answer
one result per request, the outputs or the InferpackError that request failed with, so
that one bad request fails alone.

inferpack's contract (``InferpackModel``)::

    __init__(context)                 once per instance (context: ModelContext)
    preprocess(inputs) -> inputs      optional, per request, before batching
    execute(inputs) -> outputs        the whole batch: requests' rows concatenated
    postprocess(outputs) -> outputs   optional, per request
    unload()                          optional, once

If ``execute`` raises on a batch of several requests, each request is run again alone, so
only the request that makes it fail gets the error. Triton's contract
(``TritonPythonModel``): ``initialize(args)``, ``execute(requests) -> responses`` (or
``async def execute``), ``finalize()``; one response per request, each with outputs or a
``TritonError``; an exception fails the whole batch, as in Triton.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import numpy as np

from inferpack.backends.python import triton_utils as pb
from inferpack.backends.python.calls import (
    ModelCalls,
    calls_in_effect,
    current_calls,
    remember,
)
from inferpack.backends.python.module import (
    NATIVE_CLASS,
    describe,
    import_model_file,
    model_class,
    user_error,
)
from inferpack.datatypes import bytes_elements
from inferpack.errors import (
    ConfigError,
    InferpackError,
    InvalidInputError,
    ModelExecutionError,
    NotFoundError,
    UnavailableError,
)
from inferpack.types import Tensor

Outputs = dict[str, Tensor]
Result = Outputs | InferpackError
# Request parameters the protocols consume themselves; the rest reach the model
# (Triton's request.parameters()).
PROTOCOL_PARAMETERS: Final = frozenset(
    {"binary_data_output", "timeout", "priority", "sequence_id", "sequence_start", "sequence_end"}
)


@dataclass(frozen=True, slots=True)
class PythonRequest:
    """One request as a python model gets it: its tensors and what else the client said
    (id, custom parameters, the outputs it asked for; None: all)."""

    inputs: Outputs
    id: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    outputs: list[str] | None = None

    @classmethod
    def of(
        cls,
        inputs: Outputs,
        id: str | None,
        parameters: dict[str, Any],
        outputs: list[str] | None,
    ) -> PythonRequest:
        custom = {k: v for k, v in parameters.items() if k not in PROTOCOL_PARAMETERS}
        return cls(inputs, id or "", custom, outputs)


@dataclass(frozen=True)
class ModelContext:
    """What an ``InferpackModel`` is given when it loads.

    ``folder`` is the version folder (where model.py and its files are); ``config`` the
    model's configuration as Triton's JSON (inputs, outputs, max_batch_size, parameters);
    ``instance`` counts from 0. :meth:`infer` runs another model of the same server."""

    name: str
    version: str
    folder: Path
    config: dict[str, Any]
    instance: int = 0
    device: str = "cpu"
    kind: str = "thread"
    parameters: dict[str, str] = field(default_factory=dict)
    nice: int = 0  # a worker process's scheduling priority (kind: process)

    def infer(
        self, model: str, inputs: dict[str, Tensor], outputs: list[str] | None = None
    ) -> Outputs:
        """Run one request on ``model`` (in process, no network) and wait for its outputs;
        raises the error a client would get."""
        return current_calls().submit(model, inputs, outputs).result()


class ModelInstance(Protocol):
    model: Any  # the user's object
    name: str

    def run(self, requests: list[PythonRequest]) -> list[Result]: ...

    def close(self) -> None: ...


def load_instance(path: Path, context: ModelContext, calls: ModelCalls | None) -> ModelInstance:
    """Import ``path`` and build one instance of its class; ConfigError naming the model,
    the file and the line if the import or the load fails."""
    module = import_model_file(path, context.name, context.version)
    name, cls = model_class(module, context.name, path)
    kind = NativeInstance if name == NATIVE_CLASS else TritonInstance
    return kind(cls, context, path, calls)


class _Instance:
    def __init__(self, context: ModelContext, path: Path, calls: ModelCalls | None) -> None:
        self.context = context
        self.name = context.name
        self.path = path
        self.calls = calls
        if calls is not None:
            remember(calls)
        self.outputs = [o["name"] for o in context.config.get("output", [])]

    def _user(self, call: Callable[..., Any], *args: Any) -> Any:
        """Call model code with this server's calls in effect."""
        with calls_in_effect(self.calls):
            return call(*args)

    def _loaded(self, during: str, call: Callable[..., Any], *args: Any) -> Any:
        try:
            return self._user(call, *args)
        except BaseException as error:
            raise ConfigError(
                [f"model {self.context.name!r}: {during} failed: {describe(error, self.path)}"]
            ) from None

    def _error(self, error: BaseException, during: str) -> InferpackError:
        return user_error(error, self.context.name, self.path, during)

    def _checked(self, outputs: Any, during: str) -> Result:
        """A model's outputs as arrays (strings as BYTES), or the error naming what is wrong."""
        if not isinstance(outputs, dict):
            return ModelExecutionError(
                f"model {self.context.name!r}: {during} returned {type(outputs).__name__}, "
                "not a dict of output arrays"
            )
        unknown = sorted(set(outputs) - set(self.outputs))
        if unknown:
            return ModelExecutionError(
                f"model {self.context.name!r}: {during} returned output(s) {unknown} the "
                f"config does not declare (declared: {self.outputs})"
            )
        return {name: as_tensor(value) for name, value in outputs.items()}


def as_tensor(value: Any) -> Tensor:
    """An output as inferpack's tensor: BYTES (string, bytes or object arrays) become
    object arrays of bytes, each element encoded as Triton does (bytes as they are, str as
    UTF-8, anything else as its str)."""
    array = np.asarray(value)
    return bytes_elements(array) if array.dtype.kind in "SUO" else array


class NativeInstance(_Instance):
    """An ``InferpackModel``."""

    def __init__(
        self, cls: type[Any], context: ModelContext, path: Path, calls: ModelCalls | None
    ) -> None:
        super().__init__(context, path, calls)
        self.model = self._loaded("load", cls, context)
        self.batching = int(context.config.get("max_batch_size", 0)) > 0
        self._pre = getattr(self.model, "preprocess", None)
        self._post = getattr(self.model, "postprocess", None)

    def run(self, requests: list[PythonRequest]) -> list[Result]:
        results: list[Result | None] = [None] * len(requests)
        ready: list[tuple[int, Outputs]] = []
        for index, payload in enumerate(r.inputs for r in requests):
            if self._pre is None:
                ready.append((index, payload))
                continue
            try:
                ready.append((index, self._user(self._pre, payload)))
            except BaseException as error:
                results[index] = self._error(error, "preprocess")
        for index, outputs in self._execute(ready):
            results[index] = self._postprocess(outputs)
        return [r if r is not None else ModelExecutionError("no result") for r in results]

    def _postprocess(self, outputs: Result) -> Result:
        if self._post is None or isinstance(outputs, InferpackError):
            return outputs
        try:
            return self._checked(self._user(self._post, outputs), "postprocess")
        except BaseException as error:
            return self._error(error, "postprocess")

    def _execute(self, ready: list[tuple[int, Outputs]]) -> list[tuple[int, Result]]:
        if self.batching and len(ready) > 1:
            with contextlib.suppress(_BatchFailedError):
                return self._execute_joined(ready)
        return [(index, self._execute_one(payload)) for index, payload in ready]

    def _execute_one(self, payload: Outputs) -> Result:
        try:
            return self._checked(self._user(self.model.execute, payload), "execute")
        except BaseException as error:
            return self._error(error, "execute")

    def _execute_joined(self, ready: list[tuple[int, Outputs]]) -> list[tuple[int, Result]]:
        """One call for the whole batch; _BatchFailedError (run each alone) if it cannot be."""
        try:
            rows = [len(next(iter(payload.values()))) for _, payload in ready]
            names = list(ready[0][1])
            joined = {n: np.concatenate([payload[n] for _, payload in ready]) for n in names}
            outputs = self._checked(self._user(self.model.execute, joined), "execute")
            if isinstance(outputs, InferpackError) or any(
                a.ndim == 0 or len(a) != sum(rows) for a in outputs.values()
            ):
                raise _BatchFailedError
        except BaseException as error:
            raise _BatchFailedError from error
        bounds = np.cumsum([0, *rows])
        return [
            (index, {n: a[bounds[i] : bounds[i + 1]] for n, a in outputs.items()})
            for i, (index, _) in enumerate(ready)
        ]

    def close(self) -> None:
        unload = getattr(self.model, "unload", None)
        if unload is not None:
            self._user(unload)


class _BatchFailedError(Exception):
    pass


class TritonInstance(_Instance):
    """A ``TritonPythonModel``, run as Triton's python backend runs it."""

    def __init__(
        self, cls: type[Any], context: ModelContext, path: Path, calls: ModelCalls | None
    ) -> None:
        super().__init__(context, path, calls)
        self.model = self._loaded("load", cls)
        self.loop: asyncio.AbstractEventLoop | None = None
        if inspect.iscoroutinefunction(self.model.execute):
            self.loop = asyncio.new_event_loop()  # this instance's own, for async execute
        initialize = getattr(self.model, "initialize", None)
        try:
            if initialize is not None:
                self._loaded("initialize", initialize, triton_args(context))
        except BaseException:
            if self.loop is not None:
                self.loop.close()
            raise

    def run(self, requests: list[PythonRequest]) -> list[Result]:
        triton_requests = [
            pb.InferenceRequest(
                inputs=[pb.Tensor(n, a) for n, a in r.inputs.items()],
                requested_output_names=r.outputs or self.outputs,
                request_id=r.id,
                parameters=r.parameters,
            )
            for r in requests
        ]
        try:
            responses = self._user(self._execute, triton_requests)
        except BaseException as error:
            failed = self._error(error, "execute")
            return [failed] * len(requests)
        if not isinstance(responses, list | tuple) or len(responses) != len(requests):
            got = (
                len(responses) if isinstance(responses, list | tuple) else type(responses).__name__
            )
            failed = ModelExecutionError(
                f"model {self.context.name!r}: execute returned {got} responses for "
                f"{len(requests)} requests"
            )
            return [failed] * len(requests)
        return [self._result(response) for response in responses]

    def _execute(self, requests: list[pb.InferenceRequest]) -> Any:
        if self.loop is None:
            return self.model.execute(requests)
        return self.loop.run_until_complete(self.model.execute(requests))

    def _result(self, response: Any) -> Result:
        if not isinstance(response, pb.InferenceResponse):
            return ModelExecutionError(
                f"model {self.context.name!r}: execute returned {type(response).__name__}, "
                "not an InferenceResponse"
            )
        error = response.error()
        if error is not None:
            return triton_error(error)
        return self._checked({t.name(): t.as_numpy() for t in response.output_tensors()}, "execute")

    def close(self) -> None:
        finalize = getattr(self.model, "finalize", None)
        try:
            if finalize is not None:
                self._user(finalize)
        finally:
            if self.loop is not None:
                self.loop.close()


def triton_error(error: pb.TritonError) -> InferpackError:
    """A response's TritonError as the error a client gets (its message as it is)."""
    kinds: dict[int, type[InferpackError]] = {
        pb.TritonError.INVALID_ARG: InvalidInputError,
        pb.TritonError.UNSUPPORTED: InvalidInputError,
        pb.TritonError.NOT_FOUND: NotFoundError,
        pb.TritonError.UNAVAILABLE: UnavailableError,
    }
    return kinds.get(error.code(), ModelExecutionError)(error.message())


def triton_args(context: ModelContext) -> dict[str, str]:
    """``initialize``'s argument: Triton's keys, every value a string."""
    return {
        "model_config": json.dumps(context.config),
        "model_instance_kind": "GPU" if context.device.startswith("cuda") else "CPU",
        "model_instance_name": f"{context.name}_{context.instance}",
        "model_instance_device_id": context.device.partition(":")[2] or "0",
        "model_repository": str(context.folder.parent),
        "model_version": context.version,
        "model_name": context.name,
    }
