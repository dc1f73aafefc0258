"""Time per top-level stage of a model (e.g. OpenPose base, stage1..stage6).

Forward hooks on the module's direct children, with a device synchronisation before each
clock read, so GPU time lands in the stage that launched it. Stage names are the
attribute names (``base``, ``stage1``; ``0``, ``1`` for a Sequential).
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

# Calls averaged per stage: enough for stable means, few enough for large models.
PROFILE_ITERATIONS = 10


def profile_stages(module: Any, run: Callable[[], object], device: str) -> dict[str, float] | None:
    """Mean ms per top-level child over PROFILE_ITERATIONS calls; None if not hookable."""
    import torch

    children = list(module.named_children()) if isinstance(module, torch.nn.Module) else []
    if not children or isinstance(module, torch.jit.ScriptModule):
        return None
    totals: dict[str, float] = defaultdict(float)
    started: dict[str, float] = {}

    def sync() -> None:
        if device.startswith("cuda"):
            torch.cuda.synchronize(device)

    def before(name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            sync()
            started[name] = time.perf_counter()

        return hook

    def after(name: str) -> Callable[..., None]:
        def hook(*_: Any) -> None:
            sync()
            totals[name] += time.perf_counter() - started[name]

        return hook

    handles = []
    for name, child in children:
        handles.append(child.register_forward_pre_hook(before(name)))
        handles.append(child.register_forward_hook(after(name)))
    try:
        run()  # first call pays one-off costs; not counted
        totals.clear()
        for _ in range(PROFILE_ITERATIONS):
            run()
    finally:
        for handle in handles:
            handle.remove()
    return {name: round(total / PROFILE_ITERATIONS * 1e3, 4) for name, total in totals.items()}
