"""``inferpack simulate`` through the command line: plan -> simulate, every flag, errors."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from inferpack.plan.formats import Demand, Profile, write_demand, write_profiles
from inferpack.plan.server_model import ServerModel
from tests.integration.cli_server import inferpack

SERVER = ServerModel(
    workers=2,
    frontend_ms=0.2,
    max_batch_size=8,
    max_queue_delay_us=2000,
    instances=1,
    batch_service_ms=((1, 3.0), (4, 6.0), (8, 9.0)),
)


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        inferpack(*args), capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture(scope="module")
def planned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("simulate")
    profile = Profile("small-cnn", "c5.2xlarge", 0.2, 400.0, 50.0, "hand", server=SERVER)
    write_profiles(folder / "profiles.yaml", [profile])
    write_demand(
        folder / "demand.csv", [Demand(f"cnn-{i:02d}", "small-cnn", 20.0) for i in range(12)]
    )
    done = run(
        "plan", "--profiles", str(folder / "profiles.yaml"), "--demand", str(folder / "demand.csv"),
        "--slo-p90-ms", "50", "--output", str(folder / "plan.yaml"),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return {name: folder / name for name in ("profiles.yaml", "demand.csv", "plan.yaml")}


def _simulate(planned: dict[str, Path], out: Path, *extra: str) -> dict:
    done = run(
        "simulate", str(planned["plan.yaml"]), "--profiles", str(planned["profiles.yaml"]),
        "--output", str(out), *extra,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(out.read_text())


def test_simulate_a_plan_at_its_own_rates(planned: dict[str, Path], tmp_path: Path) -> None:
    flags = ("--duration-s", "60", "--network-ms", "0.5", "--router-ms", "0.05", "--seed", "7")
    result = _simulate(planned, tmp_path / "sim.json", *flags)
    fleet = result["fleet"]
    assert fleet["requests"] == pytest.approx(240 * 60, rel=0.05)
    assert 3.0 + 0.5 < fleet["p50_ms"] <= fleet["p90_ms"] <= fleet["p99_ms"]
    assert {row["name"] for row in result["models"]} == {f"cnn-{i:02d}" for i in range(12)}
    for row in result["servers"]:
        assert {"p50_ms", "p90_ms", "p99_ms", "utilization", "meets_slo"} <= set(row)
    assert result["spec"]["network_ms"] == 0.5 and result["spec"]["router_ms"] == 0.05
    again = _simulate(planned, tmp_path / "again.json", *flags)
    assert again["fleet"] == fleet  # the seed makes it repeatable


def test_demand_scaled_and_trace(planned: dict[str, Path], tmp_path: Path) -> None:
    doubled = _simulate(
        planned, tmp_path / "d.json", "--demand", str(planned["demand.csv"]),
        "--rate-scale", "2", "--duration-s", "30",
    )  # fmt: skip
    assert doubled["fleet"]["requests"] == pytest.approx(480 * 30, rel=0.05)
    trace = tmp_path / "trace.csv"
    trace.write_text("t_s,model,rps\n0,cnn-00,10\n10,cnn-00,100\n")
    stepped = _simulate(planned, tmp_path / "t.json", "--trace", str(trace), "--duration-s", "20")
    [row] = [r for r in stepped["models"] if r["requests"]]
    assert row["name"] == "cnn-00" and row["requests"] == pytest.approx(1100, rel=0.15)


def test_refusals(planned: dict[str, Path], tmp_path: Path) -> None:
    both = run(
        "simulate", str(planned["plan.yaml"]), "--profiles", str(planned["profiles.yaml"]),
        "--output", str(tmp_path / "x.json"), "--demand", "a.csv", "--trace", "b.csv",
    )  # fmt: skip
    assert both.returncode == 2 and "not both" in both.stderr
    bare = tmp_path / "bare.yaml"
    write_profiles(bare, [Profile("small-cnn", "c5.2xlarge", 0.2, 400.0, 50.0, "hand")])
    missing = run(
        "simulate", str(planned["plan.yaml"]), "--profiles", str(bare),
        "--output", str(tmp_path / "y.json"),
    )  # fmt: skip
    assert missing.returncode == 1 and "no 'server' block" in " ".join(missing.stderr.split())


def test_the_result_opens_in_the_report_with_its_chart(
    planned: dict[str, Path], tmp_path: Path
) -> None:
    sim = tmp_path / "sim.json"
    _simulate(planned, sim, "--duration-s", "20")
    page = tmp_path / "report.html"
    done = run("report", str(sim), str(planned["plan.yaml"]), "--output", str(page))
    assert done.returncode == 0, done.stdout + done.stderr
    text = page.read_text()
    assert 'class="document simulation"' in text and 'class="simulation-servers"' in text
    assert "Simulated latency per server vs the plan and the SLO" in text
    assert text.count("data:image/png;base64,") >= 2  # the plan's charts and this one


def test_slowdown_margin_plans_for_a_slower_host_and_simulate_replays_one(
    planned: dict[str, Path], tmp_path: Path
) -> None:
    """plan --slowdown-margin: every server still meets the SLO when its batches compute
    that many times slower (its tolerated_slowdown says so); simulate --slowdown replays
    such a host, and the plan made without the margin misses the SLO there."""
    slow_plan = tmp_path / "plan-margin.yaml"
    done = run(
        "plan", "--profiles", str(planned["profiles.yaml"]), "--demand", str(planned["demand.csv"]),
        "--slo-p90-ms", "50", "--slowdown-margin", "3.5", "--output", str(slow_plan),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "slowdown" in done.stderr and re.search(r"x\d\.\d\d", done.stderr)
    plain, margin = (yaml.safe_load(p.read_text()) for p in (planned["plan.yaml"], slow_plan))
    assert margin["plan"]["slowdown_margin"] == 3.5
    assert all(s["tolerated_slowdown"] >= 3.5 for s in margin["servers"])
    assert min(s["tolerated_slowdown"] for s in plain["servers"]) < 3.5
    assert len(margin["servers"]) > len(plain["servers"])
    flags = ("--duration-s", "60", "--slowdown", "3.5")
    on_plain = _simulate(planned, tmp_path / "plain.json", *flags)
    assert on_plain["spec"]["slowdown"] == 3.5
    assert on_plain["fleet"]["servers_over_slo"]
    done = run(
        "simulate", str(slow_plan), "--profiles", str(planned["profiles.yaml"]),
        "--output", str(tmp_path / "margin.json"), *flags,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    on_margin = json.loads((tmp_path / "margin.json").read_text())
    assert not on_margin["fleet"]["servers_over_slo"]
    as_profiled = _simulate(planned, tmp_path / "as.json", "--duration-s", "60")
    assert as_profiled["fleet"]["p90_ms"] < on_plain["fleet"]["p90_ms"]
    # Re-planned from it without the flag, the plan keeps its margin.
    again = tmp_path / "again.yaml"
    done = run(
        "plan", "--profiles", str(planned["profiles.yaml"]), "--demand", str(planned["demand.csv"]),
        "--slo-p90-ms", "50", "--previous", str(slow_plan), "--output", str(again),
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    replanned = yaml.safe_load(again.read_text())
    assert replanned["plan"]["slowdown_margin"] == 3.5
    assert all(s["tolerated_slowdown"] >= 3.5 for s in replanned["servers"])
