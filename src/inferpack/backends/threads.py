"""Intra-op threads of the compute engines, set per calling thread.

torch keeps the intra-op thread count as a process-wide value that each thread reads once,
at its first parallel op (an OpenMP team per calling thread): a thread that already ran an
op keeps its team size when the value changes later. So the value is set on each worker
thread before it runs a model, and threads started afterwards inherit it.
"""

from __future__ import annotations


def set_intra_op_threads(count: int) -> int | None:
    """Set torch's intra-op threads for the calling thread (and the process default).

    Returns the count torch reports on this thread afterwards, or None without torch.
    Imports torch lazily: only worker threads, which run models, call this."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(count)
    return int(torch.get_num_threads())
