"""Per-model request queues that form batches (see :mod:`inferpack.batching.batcher`)."""

from inferpack.batching.batcher import BatchPolicy, DynamicBatcher, QueuedItem

__all__ = ["BatchPolicy", "DynamicBatcher", "QueuedItem"]
