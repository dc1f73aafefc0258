"""Condition A (best at batch 1) and condition B (best throughput), as in the seeds."""

from __future__ import annotations

from typing import Any

_KEYS = (
    "precision",
    "compiled_bucket",
    "batch_size",
    "instances",
    "items_per_s",
    "latency_ms",
    "cost",
)


def _pick(result: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if result is None else {key: result.get(key) for key in _KEYS}


def conditions(results: list[dict[str, Any]]) -> dict[str, Any]:
    batch_one = [r for r in results if r["batch_size"] == 1]
    best_a = max(batch_one, key=lambda r: r["items_per_s"], default=None)
    best_b = max(results, key=lambda r: r["items_per_s"], default=None)
    return {"condition_a": _pick(best_a), "condition_b": _pick(best_b)}
