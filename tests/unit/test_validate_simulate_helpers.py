"""The [11] validation's host check: the batches a point ran against the profile's curve."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from benchmarks.validate_simulate import scaled_profiles, service_delta, service_ratio
from inferpack.plan.server_model import ServerModel


def _rows(*batches: tuple[int, int, float]) -> list[dict[str, Any]]:
    return [
        {"batch_size": b, "compute_input": {"count": c, "ns": int(c * 1e6)},
         "compute_infer": {"count": c, "ns": int(c * (ms - 1) * 1e6)},
         "compute_output": {"count": c, "ns": 0}}
        for b, c, ms in batches
    ]  # fmt: skip


def _document(*models: list[dict[str, Any]]) -> dict[str, Any]:
    stats = [{"name": f"m{i}", "batch_stats": rows} for i, rows in enumerate(models)]
    return {"model_stats": stats}


def test_delta_is_the_batches_between_the_snapshots_over_every_model() -> None:
    before = _document(_rows((1, 10, 2.0)), _rows((1, 5, 2.0), (4, 1, 8.0)))
    after = _document(_rows((1, 30, 3.0)), _rows((1, 5, 2.0), (4, 3, 6.0), (8, 2, 10.0)))
    delta = service_delta(before, after)
    # size 1: 20 new batches of model 0 took 90 - 20 = 70 ms, model 1 none: 3.5 ms each
    assert delta == {1: (20, 3.5), 4: (2, 5.0), 8: (2, 10.0)}
    assert service_delta(after, after) == {}


def test_ratio_weighs_each_size_by_its_batches_and_interpolates_the_curve() -> None:
    profiled = ServerModel(1, 0.2, 32, 0.0, 1, ((1, 2.0), (4, 5.0), (8, 9.0)))
    # 2 is between 1 and 4 on the curve: 3.0 ms expected
    measured = {1: (10, 2.2), 2: (5, 3.3), 8: (1, 9.9)}
    spent = 10 * 2.2 + 5 * 3.3 + 9.9
    assert service_ratio(measured, profiled) == pytest.approx(spent / (20 + 15 + 9), abs=1e-4)
    assert service_ratio(measured, None) is None
    assert service_ratio({}, profiled) is None


def test_scaled_profiles_scale_only_the_batch_curve(tmp_path: Path) -> None:
    source = tmp_path / "profiles.yaml"
    entry = {"kind": "k", "server": {"frontend_ms": 0.3, "batch_service_ms": {1: 2.0, 8: 10.0}}}
    source.write_text(yaml.safe_dump({"profiles": [entry, {"kind": "no-server"}]}))
    out = scaled_profiles(source, 1.5, tmp_path / "scaled.yaml")
    [scaled, plain] = yaml.safe_load(out.read_text())["profiles"]
    assert scaled["server"] == {"frontend_ms": 0.3, "batch_service_ms": {1: 3.0, 8: 15.0}}
    assert plain == {"kind": "no-server"}
