"""``inferpack plan`` through the command line: every flag, the file it writes, its errors."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from inferpack.plan.formats import Demand, Profile, read_plan, write_demand, write_profiles
from tests.integration.cli_server import inferpack
from tests.plan_checker import violations


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        inferpack(*args), capture_output=True, text=True, timeout=120, check=False
    )


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    bert = [
        Profile("bert-base", "inf1.6xlarge", 300.0, 620.0, 100.0, "seeds", max_models=76),
        Profile("bert-base", "g4dn.xlarge", 420.0, 400.0, 100.0, "hand", max_models=18),
    ]
    cnn = [Profile("small-cnn", "c5.2xlarge", 0.2, 700.0, 100.0, "hand")]
    write_profiles(tmp_path / "bert.yaml", bert)
    write_profiles(tmp_path / "cnn.yaml", cnn)
    demand = [Demand(f"bert-{i:03d}", "bert-base", 2.0) for i in range(150)]
    demand += [Demand(f"cnn-{i:02d}", "small-cnn", 30.0) for i in range(20)]
    write_demand(tmp_path / "demand.csv", demand)
    # A regional price for inf1.6xlarge: the plan must use it when --region names it.
    (tmp_path / "prices.yaml").write_text(
        yaml.safe_dump(
            {
                "instances": [
                    {
                        "name": "inf1.6xlarge",
                        "region": "eu-west-1",
                        "basis": "on-demand",
                        "price_usd_per_hour": 1.5,
                        "price_date": "2026-11-01",
                        "source": "test",
                        "vcpu": 24,
                        "memory_gib": 48,
                        "accelerator": "Inferentia",
                        "accelerator_count": 4,
                        "accelerator_memory_gib": 32,
                    },
                    {
                        "name": "c5.2xlarge",
                        "region": "eu-west-1",
                        "basis": "on-demand",
                        "price_usd_per_hour": 0.4,
                        "price_date": "2026-11-01",
                        "source": "test",
                        "vcpu": 8,
                        "memory_gib": 16,
                        "accelerator": None,
                        "accelerator_count": 0,
                        "accelerator_memory_gib": None,
                    },
                ]
            }
        )
    )
    return {
        "bert": tmp_path / "bert.yaml",
        "cnn": tmp_path / "cnn.yaml",
        "demand": tmp_path / "demand.csv",
        "prices": tmp_path / "prices.yaml",
        "plan": tmp_path / "plan.yaml",
    }


def test_plan_with_every_flag_writes_a_feasible_plan(inputs: dict[str, Path]) -> None:
    done = run(
        "plan",
        "--profiles", str(inputs["bert"]),
        "--profiles", str(inputs["cnn"]),
        "--demand", str(inputs["demand"]),
        "--slo-p90-ms", "100",
        "--catalog", str(inputs["prices"]),
        "--region", "eu-west-1",
        "--instance-types", "inf1.6xlarge,c5.2xlarge",
        "--max-memory-utilization", "0.85",
        "--max-compute-utilization", "0.7",
        "--server-overhead-mb", "800",
        "--time-limit-s", "5",
        "--output", str(inputs["plan"]),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "lower bound" in done.stderr and "inf1.6xlarge only" in done.stderr
    document = yaml.safe_load(inputs["plan"].read_text())
    assert {s["instance_type"] for s in document["servers"]} == {"inf1.6xlarge", "c5.2xlarge"}
    prices = {"inf1.6xlarge": 1.5, "c5.2xlarge": 0.4}  # the eu-west-1 override
    profiles = [*yaml.safe_load(inputs["bert"].read_text())["profiles"]]
    profiles += yaml.safe_load(inputs["cnn"].read_text())["profiles"]
    demand = {f"bert-{i:03d}": ("bert-base", 2.0) for i in range(150)}
    demand |= {f"cnn-{i:02d}": ("small-cnn", 30.0) for i in range(20)}
    found = violations(
        document, profiles, demand, prices, {"inf1.6xlarge": 32 * 1024, "c5.2xlarge": 16 * 1024},
        max_memory_utilization=0.85, max_compute_utilization=0.7, overhead_mb=800.0,
    )  # fmt: skip
    assert found == []
    # 150 bert models at 76 per server: 2 servers; 600 rps of small-cnn at 0.7 x 700: 2 more.
    assert document["totals"]["servers"] == 4
    assert document["totals"]["usd_per_hour"] == pytest.approx(2 * 1.5 + 2 * 0.4)
    assert read_plan(inputs["plan"]).plan.gap == pytest.approx(0.0)


def test_previous_and_headroom_replan_with_few_moves(inputs: dict[str, Path]) -> None:
    """plan --previous: the same demand moves nothing; with --headroom 1.0 (twice the
    rates) servers are added, the old ones keep their names and the moves are listed."""
    base = ["plan", "--profiles", str(inputs["bert"]), "--profiles", str(inputs["cnn"]),
            "--demand", str(inputs["demand"]), "--slo-p90-ms", "100",
            "--time-limit-s", "5"]  # fmt: skip
    assert run(*base, "--output", str(inputs["plan"])).returncode == 0
    again = inputs["plan"].with_name("again.yaml")
    done = run(*base, "--max-moves", "3", "--output", str(again))
    assert done.returncode == 2 and "--max-moves needs --previous" in done.stderr
    done = run(*base, "--previous", str(inputs["plan"]), "--max-moves", "0", "--output", str(again))
    assert done.returncode == 0, done.stderr
    assert re.search(
        r"\s0\s+model\(s\)\s+moved,\s+0\s+server\(s\)\s+added,\s+0\s+removed", done.stderr
    )
    busier = inputs["plan"].with_name("busier.yaml")
    done = run(*base, "--previous", str(inputs["plan"]), "--headroom", "1.0",
               "--output", str(busier))  # fmt: skip
    assert done.returncode == 0, done.stderr
    before, after = (yaml.safe_load(p.read_text()) for p in (inputs["plan"], busier))
    assert after["changes"]["servers_added"] and not after["changes"]["servers_removed"]
    assert {s["name"] for s in before["servers"]} <= {s["name"] for s in after["servers"]}
    served = {m["name"]: 0.0 for s in after["servers"] for m in s["models"]}
    for server in after["servers"]:
        for model in server["models"]:
            served[model["name"]] += model["rps"]
    assert served["cnn-00"] == pytest.approx(60.0) and served["bert-000"] == pytest.approx(4.0)
    assert "headroom 1" in after["plan"]["solver"]


def test_unknown_instance_type_is_refused(inputs: dict[str, Path]) -> None:
    done = run(
        "plan", "--profiles", str(inputs["bert"]), "--demand", str(inputs["demand"]),
        "--slo-p90-ms", "100", "--instance-types", "p5.48xlarge", "--output", str(inputs["plan"]),
    )  # fmt: skip
    assert done.returncode == 2
    assert "no profile for instance type(s) p5.48xlarge" in done.stderr


def test_model_that_fits_nowhere_names_it(inputs: dict[str, Path]) -> None:
    done = run(
        "plan", "--profiles", str(inputs["bert"]), "--demand", str(inputs["demand"]),
        "--slo-p90-ms", "100", "--output", str(inputs["plan"]),
    )  # fmt: skip
    assert done.returncode == 1
    assert "cnn-00 (small-cnn): no profile of kind small-cnn" in " ".join(done.stderr.split())
    assert not inputs["plan"].exists()


def test_bad_demand_reports_every_row(inputs: dict[str, Path]) -> None:
    inputs["demand"].write_text("model,kind,rps\na,bert-base,fast\nb,bert-base,-1\nc,x,1\nc,x,2\n")
    done = run(
        "plan", "--profiles", str(inputs["bert"]), "--demand", str(inputs["demand"]),
        "--slo-p90-ms", "100", "--output", str(inputs["plan"]),
    )  # fmt: skip
    assert done.returncode == 1
    text = " ".join(done.stderr.split())
    for problem in (
        "rps of a is not a number",
        "rps of b must be >= 0",
        "line 5: c repeats line 4",
    ):
        assert problem in text
