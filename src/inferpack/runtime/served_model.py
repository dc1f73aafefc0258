"""One version of one model being served: its backends, instance threads and batcher.

With batch buckets (``compile.batch_buckets``) the model runs only at bucket sizes: a
request over the largest bucket is split here into chunks, each queued on its own and the
outputs joined in order (:meth:`ServedModel.infer`); the worker pads every batch up to the
next bucket and slices the outputs back before splitting them by request
(:meth:`ServedModel._run_batch`), so no padded row is ever returned.

A model with ``preprocess``/``postprocess`` (docs/processing.md) decodes a request's uploads
on the processing pool before queueing it and adds post-processed outputs after its rows
come back (:mod:`inferpack.processing.pipeline` says why there).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Hashable, Sequence
from concurrent.futures import Executor
from contextlib import nullcontext
from typing import Any, cast

import numpy as np

from inferpack.backends import Backend, load_backends
from inferpack.backends.base import OwnsThread, RunsRequests, warmup_inputs
from inferpack.backends.python.instances import PythonRequest
from inferpack.batching import BatchPolicy, DynamicBatcher, QueuedItem
from inferpack.batching.buckets import chunk_rows
from inferpack.config.model_config import ModelConfig
from inferpack.errors import ModelExecutionError
from inferpack.processing.pipeline import Pipeline, Prepared, classify
from inferpack.repository import ModelSource
from inferpack.runtime.metrics import ServingMetrics
from inferpack.runtime.statistics import BatchTiming, ModelStatistics
from inferpack.runtime.validation import validate_request
from inferpack.runtime.workers import WIDE_BATCH_MS, CpuShare, DevicePools
from inferpack.types import InferRequest, Tensor

Outputs = dict[str, Tensor]
_MAX_ERROR_CHARS = 500


def batch_policy(config: ModelConfig) -> BatchPolicy:
    batching = config.dynamic_batching
    buckets = config.compile.batch_buckets
    if batching is None:
        return BatchPolicy(
            max_batch_rows=max(1, config.max_batch_size), combine_requests=False, buckets=buckets
        )
    return BatchPolicy(
        max_batch_rows=config.max_batch_size,
        max_queue_delay_s=batching.max_queue_delay_us / 1e6,
        preferred_rows=batching.preferred_batch_sizes,
        max_queue_size=batching.max_queue_size,
        buckets=buckets,
    )


def _describe(error: Exception) -> str:
    """A one-line account of a model failure (TorchScript errors carry a traceback first)."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(error).__name__
    if not text.startswith(type(error).__name__) and ":" not in text[:40]:
        text = f"{type(error).__name__}: {text}"
    return text[:_MAX_ERROR_CHARS]


class ServedModel:
    """A loaded model version: what a request reaches after the manager has picked it.

    Its bookkeeping is O(1) small objects (batcher, statistics, one metrics array shared
    through :class:`ServingMetrics`), none of which runs or allocates while the model is
    idle: the batcher's scheduler task exists only while requests are queued."""

    __slots__ = (
        "_executors",
        "_metrics",
        "_per_request",
        "_processing",
        "_row_work_ms",
        "_shares",
        "backends",
        "batcher",
        "config",
        "pipeline",
        "statistics",
        "version",
    )

    def __init__(
        self,
        source: ModelSource,
        backends: Sequence[Backend],
        metrics: ServingMetrics,
        pools: DevicePools,
        pipeline: Pipeline | None = None,
    ) -> None:
        self.config = source.config
        self.pipeline = pipeline
        self._processing: Executor = pools.processing()
        self.version = source.version
        self.backends = list(backends)
        self._metrics = metrics
        self.statistics = ModelStatistics()
        count = len(self.backends)
        self._executors: list[Executor] = [
            backend.executor
            if isinstance(backend, OwnsThread)
            else pools.executor(backend.device, at_least=count)
            for backend in self.backends
        ]
        # Batches on the shared CPU workers take their intra-op threads from the CPU's share.
        self._shares: list[CpuShare | None] = [
            pools.cpu_share if backend.device == "cpu" and not isinstance(backend, OwnsThread)
            else None
            for backend in self.backends
        ]  # fmt: skip
        # One thread's compute per row (ms, moving average): widens batches worth splitting.
        self._row_work_ms = 0.0
        # Python backends take each request with its id, parameters and requested outputs.
        self._per_request = all(isinstance(b, RunsRequests) for b in self.backends)
        self.batcher: DynamicBatcher[Any, Outputs] = DynamicBatcher(
            self.config.name, batch_policy(self.config), self._execute, len(self.backends)
        )

    @property
    def memory_bytes(self) -> int:
        """Weights and workspace of each distinct loaded module (instances may share one)."""
        return sum({id(b): b.memory_bytes for b in self.backends}.values())

    @classmethod
    def load(cls, source: ModelSource, metrics: ServingMetrics, pools: DevicePools) -> ServedModel:
        """Blocking: load backends and warm each instance. Call off the event loop."""
        if source.config.platform == "python":  # its auto_complete_config, if any
            from inferpack.backends.python.autocomplete import complete_source

            source = complete_source(source)
        config = source.config
        pipeline = None
        if config.preprocess is not None or not config.postprocess.empty:
            pipeline = Pipeline.load(config, source.artifact_path.parent.parent)
        model = cls(source, load_backends(source, pools.calls), metrics, pools, pipeline)
        if source.config.warmup:
            inputs = warmup_inputs(source.config)
            for instance, backend in enumerate(model.backends):
                model._executors[instance].submit(backend.warm_up, inputs).result()
        return model

    def start(self) -> None:
        self.batcher.start()

    async def infer(self, request: InferRequest, deadline_s: float | None = None) -> Outputs:
        """Validate, queue and await one request; ``deadline_s`` is in the loop's clock.

        Uploads are made into the model's tensors first; outputs that post-processing adds
        (and the top-k the classification extension asks for) are made after."""
        prepared = await self._prepare(request) if self.pipeline is not None else None
        inputs = prepared.inputs if prepared is not None else request.inputs
        rows, key = validate_request(self.config, request, inputs)
        largest = self.config.compile.largest_bucket
        if self._per_request:
            payload = PythonRequest.of(
                inputs, request.id, request.parameters, request.requested_outputs
            )
            outputs = await self.batcher.submit(payload, rows, key, deadline_s)
        elif largest is None or rows <= largest:
            outputs = await self.batcher.submit(inputs, rows, key, deadline_s)
        else:
            outputs = await self._infer_chunks(inputs, chunk_rows(rows, largest), key, deadline_s)
        if (self.pipeline is not None and self.pipeline.adds_outputs()) or request.classification:
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(
                self._processing, self._finish, request, inputs, outputs, prepared
            )
        return outputs

    async def _prepare(self, request: InferRequest) -> Prepared | None:
        """The request's uploads decoded into model inputs (None: it sent tensors). Each
        image is its own task on the processing pool, so one request's images decode on
        every core at once; each charges its decoded size to the request before decoding
        (``request.charge``: the server's in-flight cap)."""
        assert self.pipeline is not None
        items = self.pipeline.upload_items(request.inputs)
        if items is None:
            return None
        loop = asyncio.get_running_loop()
        pool = self._processing
        if self.pipeline.image is not None:
            image_row, charge = self.pipeline.image_row, request.charge
            rows = await asyncio.gather(
                *(
                    loop.run_in_executor(pool, image_row, item, i, charge)
                    for i, item in enumerate(items)
                )
            )
            return await loop.run_in_executor(pool, self.pipeline.stack_images, rows)
        return await loop.run_in_executor(pool, self.pipeline.text_inputs, items)

    def _finish(
        self,
        request: InferRequest,
        inputs: dict[str, Tensor],
        outputs: Outputs,
        prepared: Prepared | None,
    ) -> Outputs:
        """Processing pool: outputs post-processing adds, then the classification extension."""
        pipeline = self.pipeline
        if pipeline is not None and pipeline.adds_outputs():
            outputs = pipeline.finish(inputs, outputs, prepared)
        if request.classification:
            labels = pipeline.labels_for if pipeline is not None else _no_labels
            outputs = classify(outputs, request.classification, labels)
        return outputs

    async def close(self) -> None:
        await self.batcher.close()
        for backend in {id(b): b for b in self.backends}.values():
            backend.close()

    async def _infer_chunks(
        self, inputs: Outputs, sizes: list[int], key: Hashable, deadline_s: float | None
    ) -> Outputs:
        """A request over the largest bucket, queued as one request per chunk (in order, so
        its chunks keep their place in the queue); outputs joined in order. The first chunk
        that fails (or is refused at submit) fails the request, once: every other chunk is
        cancelled, so the batcher drops it if still queued and ignores its result."""
        futures: list[asyncio.Future[Outputs]] = []
        try:
            for start, stop in itertools.pairwise(itertools.accumulate(sizes, initial=0)):
                chunk = {name: array[start:stop] for name, array in inputs.items()}
                futures.append(self.batcher.submit(chunk, stop - start, key, deadline_s))
            parts = await asyncio.gather(*futures)
        finally:
            for future in futures:
                future.cancel()  # a no-op once done
        return {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}

    async def _execute(self, instance: int, items: list[QueuedItem[Any, Outputs]]) -> list[Outputs]:
        loop = asyncio.get_running_loop()
        payloads = [item.payload for item in items]
        rows = [item.rows for item in items]
        started = time.perf_counter()
        results, timing, began_s = await loop.run_in_executor(
            self._executors[instance], self._run_batch, instance, payloads, rows
        )
        name = self.config.name
        compute_s = time.perf_counter() - started
        # Queue time runs until a worker thread takes the batch (Triton's queue: until
        # execution starts): a batch handed to a busy worker pool is still waiting.
        waits = [max(began_s - item.enqueued_at, 0.0) for item in items]
        self._metrics.record_batch(name, sum(rows), compute_s)
        self.statistics.record_batch(sum(rows), timing, waits)
        queue_s = self._metrics.queue_s.labels(name)
        for wait in waits:
            queue_s.observe(wait)
        return results

    def _run_batch(
        self, instance: int, payloads: list[Any], rows: list[int]
    ) -> tuple[list[Outputs], BatchTiming, float]:
        """Worker thread: concatenate rows (padded to the next bucket), run the model, split
        outputs back by rows; time each of the three phases (Triton's compute_input /
        compute_infer / compute_output; padding counts as input). Also when it began, in
        the event loop's clock (monotonic), where queue time ends."""
        began_s = time.monotonic()
        started = time.perf_counter()
        if self._per_request:  # python models: requests as they came
            backend = cast(RunsRequests, self.backends[instance])
            answers = backend.run_requests(payloads)  # failed ones: errors, raised per request
            infer_s = time.perf_counter() - started
            return answers, BatchTiming(0.0, infer_s, 0.0), began_s  # type: ignore[return-value]
        if len(payloads) == 1:
            inputs = payloads[0]
        else:
            inputs = {
                s.name: np.concatenate([p[s.name] for p in payloads]) for s in self.config.inputs
            }
        total = sum(rows)
        padded = self.config.compile.bucket_for(total) if self.config.batching else total
        inputs = pad_rows(inputs, padded - total)
        joined = time.perf_counter()
        share = self._shares[instance]
        wide = self._row_work_ms * padded >= WIDE_BATCH_MS
        try:
            with share.batch(wide) if share is not None else nullcontext(1) as threads:
                outputs = self.backends[instance].run(inputs)
        except Exception as error:
            raise ModelExecutionError(
                f"model {self.config.name!r} failed on a batch of {len(payloads)} request(s): "
                f"{_describe(error)}"
            ) from error
        ran = time.perf_counter()
        if share is not None and padded:
            work_ms = (ran - joined) * 1e3 * threads / padded
            last = self._row_work_ms
            self._row_work_ms = work_ms if not last else 0.8 * last + 0.2 * work_ms
        results = self._split_outputs(outputs, rows, padded)
        timing = BatchTiming(joined - started, ran - joined, time.perf_counter() - ran)
        return results, timing, began_s

    def _split_outputs(self, outputs: Outputs, rows: list[int], padded: int) -> list[Outputs]:
        """One output dict per request: rows ``[sum(rows[:i]), sum(rows[:i+1]))`` of the
        ``padded`` rows the model ran (the rows past ``sum(rows)`` are padding, dropped)."""
        total = sum(rows)
        if len(rows) == 1 and padded == total:
            return [outputs]
        for out_name, array in outputs.items():
            if array.shape[:1] != (padded,):
                raise ModelExecutionError(
                    f"model {self.config.name!r}: output {out_name!r} has {array.shape[:1]} rows "
                    f"for a batch of {padded} rows"
                )
        bounds = itertools.accumulate(rows, initial=0)
        return [
            {k: v[start:end] for k, v in outputs.items()}
            for start, end in itertools.pairwise(bounds)
        ]


def _no_labels(output: str) -> None:
    return None


def pad_rows(inputs: Outputs, extra: int) -> Outputs:
    """``inputs`` with ``extra`` copies of their last row appended (new arrays: a request's
    own tensors are never changed).

    A copy of a real row rather than zeros: a row of zeros can be far outside what the model
    was trained and calibrated on (quantisation ranges, normalisation that divides by a
    norm or a variance, log or sqrt of an input) and yield inf/NaN or slow paths (denormals)
    in the padded rows; a real row keeps every padded row as well-behaved as a real one."""
    if extra <= 0:
        return inputs
    return {
        name: np.concatenate([array, np.repeat(array[-1:], extra, axis=0)])
        for name, array in inputs.items()
    }
