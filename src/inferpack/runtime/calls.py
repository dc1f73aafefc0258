"""The server's models as python models call them (Triton's BLS), from their own threads.

A call becomes an ordinary request to the engine, scheduled on the server's event loop
(``run_coroutine_threadsafe``): it is batched, counted, and fails with the same errors as a
client's. Called from the event loop itself it would wait on itself, so that is refused.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any, TypeVar

from inferpack.errors import InferpackError, UnavailableError
from inferpack.types import InferRequest, Tensor

if TYPE_CHECKING:
    from inferpack.runtime.engine import Engine

T = TypeVar("T")


class EngineCalls:
    """:class:`inferpack.backends.python.ModelCalls` over one engine; ``bind`` names the
    loop it serves on (at start)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def submit(
        self,
        model: str,
        inputs: dict[str, Tensor],
        outputs: list[str] | None = None,
        version: str | None = None,
    ) -> Future[dict[str, Tensor]]:
        request = InferRequest(model, dict(inputs), version, requested_outputs=outputs)
        return self._schedule(self._infer(request))

    async def _infer(self, request: InferRequest) -> dict[str, Tensor]:
        return (await self._engine.infer(request)).outputs

    def ready(self, model: str, version: str | None = None) -> bool:
        return self._schedule(self._ready(model, version)).result()

    async def _ready(self, model: str, version: str | None) -> bool:
        return self._engine.model_ready(model, version)

    def load(self, model: str) -> None:
        self._schedule(self._engine.load_model(model)).result()

    def unload(self, model: str) -> None:
        self._schedule(self._engine.unload_model(model)).result()

    def _schedule(self, coroutine: Coroutine[Any, Any, T]) -> Future[T]:
        loop = self._loop
        if loop is None or loop.is_closed():
            coroutine.close()
            raise UnavailableError("the server is not serving: no model can be called")
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coroutine.close()
            raise InferpackError(
                "a model called another model from the server's event loop (it would wait "
                "on itself): call from model code, which runs on its own thread"
            )
        return asyncio.run_coroutine_threadsafe(coroutine, loop)
