"""A demand trace as load: its spans (plan/trace.py) and the sends loadtest draws from them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inferpack.errors import ConfigError
from inferpack.loadtest.choice import trace_sends
from inferpack.plan.trace import read_trace, segments


def test_segments_cut_the_trace_where_any_rate_changes(tmp_path: Path) -> None:
    trace = tmp_path / "t.csv"
    trace.write_text("t_s,model,rps\n0,a,10\n5,b,4\n8,a,0\n")
    steps = read_trace(trace, 12.0)
    assert segments(steps, ("a", "b"), 12.0) == [
        (0.0, 5.0, (10.0, 0.0)),
        (5.0, 8.0, (10.0, 4.0)),
        (8.0, 12.0, (0.0, 4.0)),
    ]
    trace.write_text("t_s,model,rps\nx,a,1\n")
    with pytest.raises(ConfigError, match="must be numbers"):
        read_trace(trace, 1.0)


def test_trace_sends_follow_each_span_rate_and_mix() -> None:
    schedule = [(0.0, 20.0, (30.0, 10.0)), (20.0, 40.0, (0.0, 50.0))]
    times, models = trace_sends(schedule, 1.0, seed=3)
    assert np.all(np.diff(times) >= 0) and times.min() >= 0 and times.max() < 40.0
    first, second = models[times < 20.0], models[times >= 20.0]
    assert abs(len(first) - 800) < 4 * np.sqrt(800)  # Poisson: 40 req/s for 20 s
    assert abs(np.mean(first == 0) - 0.75) < 0.06
    assert abs(len(second) - 1000) < 4 * np.sqrt(1000) and np.all(second == 1)
    half, _ = trace_sends(schedule, 0.5, seed=3)  # one of two workers
    assert abs(len(half) - 900) < 4 * np.sqrt(900)
