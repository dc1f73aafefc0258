"""The profile's pure parts: the rate search against fake servers, the level → point
conversion, the distinct-weight copies and the profiles.yaml update."""

from __future__ import annotations

import hashlib
import math
import random
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from inferpack.errors import ConfigError
from inferpack.plan.formats import Profile, RatePoint, read_profiles
from inferpack.profile.copies import make_copies, perturb_safetensors
from inferpack.profile.output import merged, read_existing, write_updated
from inferpack.profile.run import point_from_level
from inferpack.profile.search import (
    MAX_DOWN_LEVELS,
    MIN_GAP_SHARE,
    Measure,
    SearchConfig,
    SearchResult,
    failure,
    search_capacity,
)

SLO_MS = 100.0


def queue_server(capacity_rps: float, noise: float = 0.0, seed: int = 0) -> Measure:
    """A fake M/M/1-like server: p90 grows as 1 / (1 - load) and explodes past capacity,
    where it also falls behind; ``noise`` scales p90 by a random factor in [1-n, 1+n]."""
    rng = random.Random(seed)
    service_ms = 10.0

    def measure(rate: float) -> RatePoint:
        load = rate / capacity_rps
        if load >= 1:
            return RatePoint(rate, capacity_rps, 500.0, 2000.0, 3000.0, 0.0)
        p90 = service_ms * math.log(10) / (1 - load)
        p90 *= 1 + noise * (2 * rng.random() - 1)
        return RatePoint(rate, rate, p90 / 2, p90, 2 * p90, 0.0)

    return measure


def threshold_server(boundary_rps: float) -> Measure:
    """Meets the SLO exactly up to ``boundary_rps`` (p90 1 ms below, 1 s above)."""

    def measure(rate: float) -> RatePoint:
        p90 = 1.0 if rate <= boundary_rps else 1000.0
        return RatePoint(rate, rate, p90, p90, p90, 0.0)

    return measure


def slo_boundary(capacity_rps: float) -> float:
    """The rate at which ``queue_server``'s noiseless p90 equals the SLO."""
    return capacity_rps * (1 - 10.0 * math.log(10) / SLO_MS)


def test_monotone_server_boundary_is_found_within_the_bracket() -> None:
    config = SearchConfig(SLO_MS, start_rps=10, steps=6)
    result = search_capacity(queue_server(1000.0), config)
    boundary = slo_boundary(1000.0)  # 769.7 req/s
    assert result.capacity_rps <= boundary < (result.failed_rps or math.inf)
    # 640 passed, 1280 failed: six halvings of the 640 req/s bracket leave 10 req/s.
    assert boundary - result.capacity_rps <= 640 / 2**6
    assert [p.rate_rps for p in result.points] == sorted(p.rate_rps for p in result.points)
    assert len(result.points) == 8 + 6  # 10 .. 1280, then the bisection


def test_every_rate_above_the_capacity_failed_and_the_capacity_passed() -> None:
    config = SearchConfig(SLO_MS, start_rps=25, steps=5)
    result = search_capacity(queue_server(800.0, noise=0.3, seed=4), config)
    verdicts = {p.rate_rps: failure(p, config) for p in result.points}
    assert verdicts[result.capacity_rps] is None
    assert all(why is not None for rate, why in verdicts.items() if rate > result.capacity_rps)
    # The noise moves the p90 by 30 % at most: the boundary moves with it, but not further.
    low = 800.0 * (1 - 1.3 * 10 * math.log(10) / SLO_MS)
    assert low - 25 <= result.capacity_rps <= slo_boundary(800.0)


def test_the_rate_never_exceeds_max_rps_and_reaching_it_ends_the_search() -> None:
    config = SearchConfig(SLO_MS, start_rps=10, max_rps=300, steps=4)
    result = search_capacity(threshold_server(10_000.0), config)
    assert result.capacity_rps == 300 and result.failed_rps is None
    assert [p.rate_rps for p in result.points] == [10, 20, 40, 80, 160, 300]


def test_a_failing_first_rate_halves_until_one_passes_then_bisects() -> None:
    config = SearchConfig(SLO_MS, start_rps=100, steps=3)
    result = search_capacity(threshold_server(30.0), config)
    assert [p.rate_rps for p in result.points] == [25, 28.125, 31.25, 37.5, 50, 100]
    assert result.capacity_rps == 28.125 and result.failed_rps == 31.25


def test_nothing_passing_gives_capacity_zero() -> None:
    result = search_capacity(threshold_server(0.0), SearchConfig(SLO_MS, start_rps=8, steps=2))
    assert result.capacity_rps == 0 and result.failed_rps == 8 / 2**MAX_DOWN_LEVELS
    assert len(result.points) == 1 + MAX_DOWN_LEVELS


def test_failure_reasons() -> None:
    config = SearchConfig(SLO_MS, measured_s=6.0)
    assert failure(RatePoint(100, 100, 1, 50, 90, 0.0), config) is None
    assert "p90" in str(failure(RatePoint(100, 100, 1, 101, 200, 0.0), config))
    nothing = RatePoint(100, 0, math.inf, math.inf, math.inf, 100.0)
    assert "errors 100.00 %" in str(failure(nothing, config))
    assert "p90 nan" in str(failure(RatePoint(100, 100, 1, math.nan, 9, 0.0), config))
    assert "errors 1.00 %" in str(failure(RatePoint(100, 100, 1, 5, 9, 1.0), config))
    # 100 req/s over 6 s: 90 - 3 * sqrt(100 / 6) = 77.8 req/s is the least accepted.
    assert failure(RatePoint(100, 78.0, 1, 5, 9, 0.0), config) is None
    assert "answered 77%" in str(failure(RatePoint(100, 77.0, 1, 5, 9, 0.0), config))


def test_invalid_configs_report_every_problem() -> None:
    problems = SearchConfig(0, start_rps=10, max_rps=5, steps=-1, growth=1).problems()
    assert len(problems) == 4
    assert SearchConfig(SLO_MS, fill_shares=(0.5, 1.5)).problems() == [
        "fill levels must be shares in (0, 1] (got [0.5, 1.5])"
    ]


def test_fill_levels_measure_where_plans_run_and_keep_the_capacity() -> None:
    """After the search, the fill shares of the capacity are measured where no level lies
    within 10 % of them; the capacity and the failing rate stay what the search found."""
    plain = search_capacity(threshold_server(300.0), SearchConfig(SLO_MS, start_rps=100, steps=1))
    config = SearchConfig(SLO_MS, start_rps=100, steps=1, fill_shares=(0.9, 0.35, 0.6, 0.8))
    seen: list[float] = []
    filled = search_capacity(
        threshold_server(300.0), config, lambda p, why: seen.append(p.rate_rps)
    )
    assert plain.capacity_rps == filled.capacity_rps == 300.0
    assert filled.failed_rps == plain.failed_rps == 400.0
    searched = [p.rate_rps for p in plain.points]
    assert searched == [100, 200, 300, 400]
    added = sorted({p.rate_rps for p in filled.points} - set(searched))
    assert added == pytest.approx([180.0, 240.0, 270.0])  # 35 % = 105 lies within 10 % of 100
    assert seen[-3:] == pytest.approx([180.0, 240.0, 270.0])  # measured last, in order
    assert [p.rate_rps for p in filled.points] == sorted(p.rate_rps for p in filled.points)
    nothing = SearchConfig(SLO_MS, start_rps=100, fill_shares=(0.5,))
    none_passed = search_capacity(threshold_server(1e-6), nothing)
    assert none_passed.capacity_rps == 0 and len(none_passed.points) == 1 + MAX_DOWN_LEVELS


@settings(max_examples=200, deadline=None)
@given(
    boundary=st.floats(0.5, 50_000),
    start=st.floats(0.1, 1000),
    max_rps=st.floats(1, 100_000),
    steps=st.integers(0, 8),
)
def test_property_bracket_and_bounds(
    boundary: float, start: float, max_rps: float, steps: int
) -> None:
    start = min(start, max_rps)
    config = SearchConfig(SLO_MS, start_rps=start, max_rps=max_rps, steps=steps)
    result = search_capacity(threshold_server(boundary), config)
    rates = [p.rate_rps for p in result.points]
    assert max(rates) <= max_rps and min(rates) > 0
    up = math.ceil(math.log2(max_rps / start) - 1e-9) + 1 if max_rps > start else 1
    assert len(rates) <= max(up, 1 + MAX_DOWN_LEVELS) + steps
    if result.failed_rps is None:  # max_rps passed
        assert result.capacity_rps == max_rps <= boundary
        return
    assert result.capacity_rps <= boundary < result.failed_rps
    if result.capacity_rps == 0:  # not even start / 2**MAX_DOWN_LEVELS passed
        assert result.failed_rps == pytest.approx(start / 2**MAX_DOWN_LEVELS)
        return
    # The geometric phase leaves a bracket no wider than the boundary (good <= boundary and
    # bad <= 2 good); each bisection step halves it, unless it stops within MIN_GAP_SHARE.
    gap = result.failed_rps - result.capacity_rps
    assert gap <= max(boundary / 2**steps, MIN_GAP_SHARE * result.failed_rps) * (1 + 1e-9)


def test_point_from_a_loadtest_level() -> None:
    level = {
        "requests": 200,
        "errors": {"429": 3, "503": 1},
        "throughput_rps": 98.5,
        "latency_ms": {"p50": 2.0, "p90": 4.5, "p95": 5.0, "p99": 9.0, "max": 12.0},
    }
    assert point_from_level(100.0, level) == RatePoint(100.0, 98.5, 2.0, 4.5, 9.0, 2.0)
    empty = {"requests": 0, "errors": {}, "throughput_rps": 0.0, "latency_ms": {}}
    point = point_from_level(50.0, empty)
    assert point.error_pct == 100 and math.isinf(point.p90_ms)


# ---------------------------------------------------------------- copies


def _write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    from safetensors.numpy import save_file

    save_file(tensors, str(path))


def _load(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


def test_perturbed_copies_differ_by_at_most_one_ulp_and_pairwise(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    original: dict[str, np.ndarray] = {
        "w": rng.standard_normal((16, 16)).astype(np.float32),
        "h": rng.standard_normal(300).astype(np.float16),
        "steps": np.arange(4, dtype=np.int64),
    }
    digests = set()
    for index in range(12):
        path = tmp_path / f"{index}.safetensors"
        _write_safetensors(path, original)
        perturb_safetensors(path, index)
        copy = _load(path)
        np.testing.assert_array_equal(copy["steps"], original["steps"])
        for name in ("w", "h"):
            bits = np.int32 if name == "w" else np.int16
            ulps = np.abs(copy[name].view(bits).astype(np.int64) - original[name].view(bits))
            assert ulps.max() <= 1 and int(ulps.sum()) == index.bit_count()
        digests.add(hashlib.sha256(copy["w"].tobytes()).hexdigest())
    assert len(digests) == 12


def test_make_copies_renames_and_keeps_the_repository_valid(tmp_path: Path) -> None:
    from inferpack.repository import LocalRepository

    source = tmp_path / "src"
    (source / "mlp" / "1").mkdir(parents=True)
    config = {
        "name": "mlp",
        "platform": "workload",
        "workload": "tiny-mlp",
        "max_batch_size": 8,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [16]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [4]}],
    }
    (source / "mlp" / "model.yaml").write_text(yaml.safe_dump(config))
    weights = {"w": np.ones((8, 64), dtype=np.float32)}
    _write_safetensors(source / "mlp" / "1" / "model.safetensors", weights)
    names, distinct = make_copies(source, "mlp", 3, tmp_path / "copies")
    assert names == ("mlp-0", "mlp-1", "mlp-2") and distinct
    repository = LocalRepository(tmp_path / "copies")
    assert repository.model_names() == list(names)
    blobs = {(tmp_path / "copies" / n / "1" / "model.safetensors").read_bytes() for n in names}
    assert len(blobs) == 3 and all(repository.config(n).name == n for n in names)


# ---------------------------------------------------------------- profiles.yaml


def _profile(instance_type: str, capacity: float) -> Profile:
    return Profile("mlp", instance_type, 1.5, capacity, SLO_MS, "test", models_per_server=2)


def test_update_replaces_the_same_pair_keeps_others_and_extra_keys(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    assert read_existing(path).profiles == ()
    hand = {"kind": "mlp", "model_memory_mb": 1, "slo_p90_ms": 100, "source": "hand"}
    entries = [{**hand, "instance_type": "a", "capacity_rps": 5},
               {**hand, "instance_type": "b", "capacity_rps": 7}]  # fmt: skip
    path.write_text(yaml.safe_dump({"note": "kept", "profiles": entries}))
    write_updated(path, read_existing(path), _profile("a", 42.0))
    profiles = read_profiles([path])
    assert [(p.instance_type, p.capacity_rps) for p in profiles] == [("a", 42.0), ("b", 7.0)]
    assert yaml.safe_load(path.read_text())["note"] == "kept"
    added = merged(read_existing(path), _profile("c", 1.0))
    assert [p.instance_type for p in added] == ["a", "b", "c"]


def test_a_broken_profiles_file_is_refused_before_measuring(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text("profiles: [{kind: mlp}]\n")
    with pytest.raises(ConfigError, match="instance_type"):
        read_existing(path)


def test_the_stated_capacity_is_never_above_the_answered_rate() -> None:
    """A level may pass a little below its offered rate (Poisson slack): the profile states
    what was answered, not what was offered."""
    points = (RatePoint(100, 100, 5, 9, 12, 0), RatePoint(200, 188, 6, 11, 15, 0))
    result = SearchResult(capacity_rps=200, failed_rps=None, points=points)
    assert result.answered_capacity_rps == 188
    assert SearchResult(100, 200, points[:1]).answered_capacity_rps == 100
