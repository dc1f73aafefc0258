"""What a python model instance holds in memory, for the LRU memory budget.

Counted by walking the objects the user's model object refers to (``gc.get_referents``), once after
loading: numpy arrays by the bytes of the buffers they own, torch tensors by their
storage, everything else by ``sys.getsizeof``; modules, classes and functions are shared
code, not the instance's, and are not entered. Growth of the process's resident memory
around a load was tried first and is wrong both ways: another load running at once adds to
it, and memory freed by an evicted model and reused by the next load hides it entirely
(a 24 MB model measured 274 bytes).
"""

from __future__ import annotations

import gc
import os
import sys
import types
from typing import Any, Final

import numpy as np

# Enough for any model's own objects; a walk that reaches this many stops (an estimate
# then, from below) rather than stalling a load.
MAX_OBJECTS: Final = 200_000
_SHARED: Final = (types.ModuleType, type, types.FunctionType, types.BuiltinFunctionType)


def held_bytes(root: Any) -> int:
    """Bytes reachable from ``root`` (each object once)."""
    seen: set[int] = set()
    stack = [root]
    total = 0
    while stack and len(seen) < MAX_OBJECTS:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, _SHARED):
            continue
        seen.add(id(obj))
        total += _own_bytes(obj)
        stack.extend(gc.get_referents(obj))
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of process ``pid`` (Linux /proc; 0 elsewhere): what a ``kind:
    process`` instance's worker holds, read by the worker once it has loaded."""
    try:
        with open(f"/proc/{pid}/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def _own_bytes(obj: Any) -> int:
    if isinstance(obj, np.ndarray):
        return obj.nbytes if obj.base is None else sys.getsizeof(obj)
    storage = getattr(obj, "untyped_storage", None)
    if storage is not None and type(obj).__module__.startswith("torch"):
        try:
            return int(storage().nbytes())
        except (RuntimeError, TypeError):  # meta tensors and the like hold no bytes
            return 0
    try:
        return sys.getsizeof(obj)
    except TypeError:
        return 0
