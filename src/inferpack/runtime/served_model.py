"""One version of one model being served: its backends, instance threads and batcher."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Sequence
from concurrent.futures import Executor

import numpy as np

from inferpack.backends import Backend, load_backends
from inferpack.batching import BatchPolicy, DynamicBatcher, QueuedItem
from inferpack.config.model_config import ModelConfig
from inferpack.datatypes import numpy_dtype
from inferpack.errors import ModelExecutionError
from inferpack.repository import ModelSource
from inferpack.runtime.metrics import ServingMetrics
from inferpack.runtime.statistics import BatchTiming, ModelStatistics
from inferpack.runtime.validation import validate_request
from inferpack.runtime.workers import DevicePools
from inferpack.types import InferRequest, Tensor

Outputs = dict[str, Tensor]
_MAX_ERROR_CHARS = 500


def batch_policy(config: ModelConfig) -> BatchPolicy:
    batching = config.dynamic_batching
    if batching is None:
        return BatchPolicy(max_batch_rows=max(1, config.max_batch_size), combine_requests=False)
    return BatchPolicy(
        max_batch_rows=config.max_batch_size,
        max_queue_delay_s=batching.max_queue_delay_us / 1e6,
        preferred_rows=batching.preferred_batch_sizes,
        max_queue_size=batching.max_queue_size,
    )


def _describe(error: Exception) -> str:
    """A one-line account of a model failure (TorchScript errors carry a traceback first)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    if not text.startswith(type(error).__name__) and ":" not in text[:40]:
        text = f"{type(error).__name__}: {text}"
    return text[:_MAX_ERROR_CHARS]


def warmup_inputs(config: ModelConfig) -> dict[str, Tensor]:
    """Zeros of batch 1 (variable dims as 1) for every input."""
    inputs = {}
    for spec in config.inputs:
        dims = tuple(d if d > 0 else 1 for d in spec.dims)
        shape = (1, *dims) if config.batching else dims
        inputs[spec.name] = np.zeros(shape, dtype=numpy_dtype(spec.datatype))
    return inputs


class ServedModel:
    """A loaded model version: what a request reaches after the manager has picked it.

    Its bookkeeping is O(1) small objects (batcher, statistics, one metrics array shared
    through :class:`ServingMetrics`), none of which runs or allocates while the model is
    idle: the batcher's scheduler task exists only while requests are queued."""

    __slots__ = ("_executors", "_metrics", "backends", "batcher", "config", "statistics", "version")

    def __init__(
        self,
        source: ModelSource,
        backends: Sequence[Backend],
        metrics: ServingMetrics,
        pools: DevicePools,
    ) -> None:
        self.config = source.config
        self.version = source.version
        self.backends = list(backends)
        self._metrics = metrics
        self.statistics = ModelStatistics()
        count = len(self.backends)
        self._executors: list[Executor] = [
            pools.executor(backend.device, at_least=count) for backend in self.backends
        ]
        self.batcher: DynamicBatcher[Outputs, Outputs] = DynamicBatcher(
            self.config.name, batch_policy(self.config), self._execute, len(self.backends)
        )

    @property
    def memory_bytes(self) -> int:
        """Weights and workspace of each distinct loaded module (instances may share one)."""
        return sum({id(b): b.memory_bytes for b in self.backends}.values())

    @classmethod
    def load(cls, source: ModelSource, metrics: ServingMetrics, pools: DevicePools) -> ServedModel:
        """Blocking: load backends and warm each instance. Call off the event loop."""
        model = cls(source, load_backends(source), metrics, pools)
        if source.config.warmup:
            inputs = warmup_inputs(source.config)
            for instance, backend in enumerate(model.backends):
                model._executors[instance].submit(backend.warm_up, inputs).result()
        return model

    def start(self) -> None:
        self.batcher.start()

    async def infer(self, request: InferRequest, deadline_s: float | None = None) -> Outputs:
        """Validate, queue and await one request; ``deadline_s`` is in the loop's clock."""
        rows, key = validate_request(self.config, request)
        return await self.batcher.submit(request.inputs, rows, key, deadline_s)

    async def close(self) -> None:
        await self.batcher.close()
        for backend in {id(b): b for b in self.backends}.values():
            backend.close()

    async def _execute(
        self, instance: int, items: list[QueuedItem[Outputs, Outputs]]
    ) -> list[Outputs]:
        loop = asyncio.get_running_loop()
        payloads = [item.payload for item in items]
        rows = [item.rows for item in items]
        started = time.perf_counter()
        results, timing = await loop.run_in_executor(
            self._executors[instance], self._run_batch, instance, payloads, rows
        )
        name = self.config.name
        compute_s = time.perf_counter() - started
        waits = [item.dispatched_at - item.enqueued_at for item in items]
        self._metrics.record_batch(name, sum(rows), compute_s)
        self.statistics.record_batch(sum(rows), timing, waits)
        queue_s = self._metrics.queue_s.labels(name)
        for wait in waits:
            queue_s.observe(wait)
        return results

    def _run_batch(
        self, instance: int, payloads: list[Outputs], rows: list[int]
    ) -> tuple[list[Outputs], BatchTiming]:
        """Worker thread: concatenate rows, run the model, split outputs back by rows; time
        each of the three phases (Triton's compute_input / compute_infer / compute_output)."""
        started = time.perf_counter()
        if len(payloads) == 1:
            inputs = payloads[0]
        else:
            inputs = {
                s.name: np.concatenate([p[s.name] for p in payloads]) for s in self.config.inputs
            }
        joined = time.perf_counter()
        try:
            outputs = self.backends[instance].run(inputs)
        except Exception as error:
            raise ModelExecutionError(
                f"model {self.config.name!r} failed on a batch of {len(payloads)} request(s): "
                f"{_describe(error)}"
            ) from error
        ran = time.perf_counter()
        results = self._split_outputs(outputs, rows)
        timing = BatchTiming(joined - started, ran - joined, time.perf_counter() - ran)
        return results, timing

    def _split_outputs(self, outputs: Outputs, rows: list[int]) -> list[Outputs]:
        """One output dict per request: rows ``[sum(rows[:i]), sum(rows[:i+1]))``."""
        if len(rows) == 1:
            return [outputs]
        total = sum(rows)
        for out_name, array in outputs.items():
            if array.shape[:1] != (total,):
                raise ModelExecutionError(
                    f"model {self.config.name!r}: output {out_name!r} has {array.shape[:1]} rows "
                    f"for a batch of {total} rows"
                )
        bounds = itertools.accumulate(rows, initial=0)
        return [
            {k: v[start:end] for k, v in outputs.items()}
            for start, end in itertools.pairwise(bounds)
        ]
