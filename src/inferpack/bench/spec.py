"""What a bench run measures: one model, a sweep of precision x batch size x instances
(x compile batch, with ``compiled_buckets``: see ``compiled.py``)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

SCHEMA = "inferpack.bench/1"


@dataclass(frozen=True, slots=True)
class BenchSpec:
    model: str
    source: str  # "workload" (a reference workload) or "repository"
    repository: str | None = None
    device: str = "auto"
    precisions: tuple[str, ...] = ("fp32",)
    batch_sizes: tuple[int, ...] = (1, 2, 4, 8, 16, 32, 64)
    instances: tuple[int, ...] = (1,)
    duration_s: float = 10.0
    warmup_s: float = 2.0
    repeats: int = 3  # measurement windows, compared for noise
    instance_type: str | None = None
    region: str | None = None
    price_usd_per_hour: float | None = None
    catalog_path: str | None = None  # user catalogue overriding the packaged prices
    profile: bool = False
    seed: int = 0
    compiled_buckets: tuple[int, ...] = ()  # compile batches; () measures the model as loaded
    compile_mode: str | None = None  # inductor | cudagraphs | none; None: by device kind

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("precisions", "batch_sizes", "instances", "compiled_buckets"):
            data[key] = list(data[key])
        return data
