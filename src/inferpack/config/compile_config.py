"""``compile:`` in model.yaml: how a model is optimised at load, and its batch buckets.

    compile:
      mode: inductor            # none | inductor | cudagraphs
      batch_buckets: [1, 2, 4, 8, 16, 32]
      channels_last: false

``batch_buckets`` are the batch sizes the model runs at: the batcher forms batches at
those sizes when that costs no extra wait, a batch is padded up to the next bucket and its
outputs sliced back (never a padded row returned), and a request larger than the largest
bucket is split and answered whole. ``inductor`` compiles one static shape per bucket with
torch.compile, warmed before the model is READY; ``cudagraphs`` captures one CUDA graph
per bucket (the seeds' compile batch size) and needs buckets and a CUDA device.
Artifacts compiled ahead of time (``inferpack compile``: platforms ``torch_aoti`` and
``onnx``) keep ``mode: none`` and may still declare buckets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

COMPILE_MODES: Final[frozenset[str]] = frozenset({"none", "inductor", "cudagraphs"})
# Platforms whose modules torch.compile / CUDA graphs can take.
TORCH_MODULE_PLATFORMS: Final[frozenset[str]] = frozenset({"workload", "torch_export"})


@dataclass(frozen=True, slots=True)
class CompileConfig:
    mode: str = "none"
    batch_buckets: tuple[int, ...] = ()
    channels_last: bool = False

    def bucket_for(self, rows: int) -> int:
        """The smallest bucket holding ``rows`` (``rows`` itself without buckets)."""
        return next((b for b in self.batch_buckets if b >= rows), rows)

    @property
    def largest_bucket(self) -> int | None:
        return self.batch_buckets[-1] if self.batch_buckets else None


def parse_compile(
    raw: Any, platform: str, max_batch_size: int, add: Callable[[str, str], None]
) -> CompileConfig:
    """Validate the ``compile`` mapping; ``add(field, problem)`` collects problems."""
    if raw is None:
        return CompileConfig()
    if not isinstance(raw, Mapping):
        add("compile", f"must be a mapping, got {raw!r}")
        return CompileConfig()
    for key in sorted(set(raw) - {"mode", "batch_buckets", "channels_last"}):
        add(f"compile.{key}", "unknown field (known: batch_buckets, channels_last, mode)")
    mode = raw.get("mode", "none")
    if mode not in COMPILE_MODES:
        add("compile.mode", f"{mode!r} is not one of {sorted(COMPILE_MODES)}")
        mode = "none"
    elif mode != "none" and platform not in TORCH_MODULE_PLATFORMS:
        add("compile.mode", f"{mode} needs platform workload or torch_export, not {platform}")
    buckets = _buckets(raw.get("batch_buckets", ()), max_batch_size, add)
    if mode == "cudagraphs" and not buckets:
        add("compile.batch_buckets", "cudagraphs captures one graph per bucket: list them")
    channels_last = raw.get("channels_last", False)
    if not isinstance(channels_last, bool):
        add("compile.channels_last", f"must be true or false, got {channels_last!r}")
        channels_last = False
    return CompileConfig(str(mode), buckets, channels_last)


def _buckets(raw: Any, max_batch_size: int, add: Callable[[str, str], None]) -> tuple[int, ...]:
    where = "compile.batch_buckets"
    if not isinstance(raw, list | tuple) or not all(
        isinstance(b, int) and not isinstance(b, bool) for b in raw
    ):
        add(where, f"must be a list of integers, got {raw!r}")
        return ()
    buckets = tuple(raw)
    if any(b < 1 for b in buckets) or list(buckets) != sorted(set(buckets)):
        add(where, f"must be positive and strictly increasing, got {list(buckets)}")
        return ()
    if buckets and max_batch_size == 0:
        add(where, "needs max_batch_size > 0 (buckets are batch sizes)")
        return ()
    if buckets and buckets[-1] > max_batch_size:
        add(where, f"{buckets[-1]} exceeds max_batch_size {max_batch_size}")
        return ()
    return buckets


def compile_to_dict(config: CompileConfig) -> dict[str, Any] | None:
    if config == CompileConfig():
        return None
    data: dict[str, Any] = {"mode": config.mode}
    if config.batch_buckets:
        data["batch_buckets"] = list(config.batch_buckets)
    if config.channels_last:
        data["channels_last"] = True
    return data
