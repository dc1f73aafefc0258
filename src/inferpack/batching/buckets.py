"""Batch buckets as the batcher sees them: plain row counts, no tensors, no config.

A model compiled per batch size (CUDA graphs, torch.compile static shapes) runs only at
its buckets (``compile.batch_buckets`` in model.yaml). Three parts share the work:

- the batcher caps a batch at the largest bucket and treats the buckets as Triton treats
  preferred batch sizes (:func:`batch_limit`, :func:`preferred_sizes`): it never waits
  longer to reach one, and when the queue delay expires it dispatches what it has;
- the worker pads a batch up to the next bucket and slices the outputs back;
- the served model splits a request larger than the largest bucket into chunks
  (:func:`chunk_rows`) and answers it whole.
"""

from __future__ import annotations


def batch_limit(max_batch_rows: int, buckets: tuple[int, ...]) -> int:
    """The most rows one batch may hold: the largest bucket caps ``max_batch_rows``."""
    return min(max_batch_rows, buckets[-1]) if buckets else max_batch_rows


def preferred_sizes(preferred: tuple[int, ...], buckets: tuple[int, ...]) -> tuple[int, ...]:
    """The batch sizes worth forming, ascending.

    With buckets, a preferred size that is no bucket would run padded to the next bucket,
    so it is not kept; when none is left, every bucket is preferred."""
    if not buckets:
        return tuple(sorted(preferred))
    return tuple(sorted(set(preferred) & set(buckets))) or buckets


def chunk_rows(rows: int, largest_bucket: int) -> list[int]:
    """Split a request of ``rows`` rows into chunks that each fit a batch, largest first:
    40 rows with buckets up to 32 give [32, 8] (the last chunk is padded, not the others)."""
    if rows < 1 or largest_bucket < 1:
        raise ValueError(f"cannot split {rows} rows into chunks of {largest_bucket}")
    full, rest = divmod(rows, largest_bucket)
    return [largest_bucket] * full + ([rest] if rest else [])
