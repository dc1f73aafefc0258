"""Calls from a python model into the other models of its server (Triton's BLS).

A python model runs on a thread of its own; the server's models are served by the event
loop. :class:`ModelCalls` is what the backend needs of the server, implemented by the
runtime (``inferpack.runtime.calls``), so backends never import the engine. The calls of the
model running now are found through a context variable set around its ``initialize`` and
``execute`` (an ``async def execute`` runs its tasks in a copy of that context), so that
``pb_utils.InferenceRequest(...).exec()`` reaches the server that runs the model even when
several servers share one process (the test suite does).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from concurrent.futures import Future
from contextvars import ContextVar
from typing import Protocol

from inferpack.errors import UnavailableError
from inferpack.types import Tensor


class ModelCalls(Protocol):
    """The server's models, as seen from a worker thread (every call may block)."""

    def submit(
        self,
        model: str,
        inputs: dict[str, Tensor],
        outputs: list[str] | None = None,
        version: str | None = None,
    ) -> Future[dict[str, Tensor]]:
        """Queue one request; the future holds its outputs or the InferpackError it failed
        with (the same errors a client gets)."""
        ...

    def ready(self, model: str, version: str | None = None) -> bool: ...

    def load(self, model: str) -> None: ...

    def unload(self, model: str) -> None: ...


_current: ContextVar[ModelCalls | None] = ContextVar("inferpack_model_calls", default=None)
# Every server (ModelCalls) with python models loaded in this process, held weakly.
_servers: weakref.WeakSet[ModelCalls] = weakref.WeakSet()


@contextlib.contextmanager
def calls_in_effect(calls: ModelCalls | None) -> Iterator[None]:
    """Make ``calls`` what :func:`current_calls` returns inside the block."""
    token = _current.set(calls)
    try:
        yield
    finally:
        _current.reset(token)


def remember(calls: ModelCalls) -> None:
    """Note a server whose models may call others (once per loaded instance)."""
    _servers.add(calls)


def current_calls() -> ModelCalls:
    """The server of the model running now. Outside a model's ``initialize``/``execute``
    context (a thread the model started itself), the process's only server if it has just
    one (a worker process, a deployed server); UnavailableError otherwise."""
    calls = _current.get()
    if calls is None and len(_servers) == 1:
        calls = next(iter(_servers))
    if calls is None:
        raise UnavailableError(
            "no server to call: in-process model calls work only inside a served model's "
            "initialize/execute"
        )
    return calls
