"""inferpack profile end to end: copies served, rates searched, profiles.yaml updated."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from inferpack.plan.formats import Profile, read_profiles
from inferpack.profile.search import SearchConfig, failure
from tests.helpers import edit_model

SLEEP_MS = 20
# Short levels keep the test quick; the known answers below hold with wide margins.
QUICK = ["--duration-s", "1.5", "--warmup-s", "0.5", "--fill-levels", "none"]
TEST_BOX = {
    "name": "test-box",
    "region": "test-region-1",
    "basis": "on-demand",
    "price_usd_per_hour": 0.5,
    "price_date": "2026-01-01",
    "source": "test",
    "vcpu": 2,
    "memory_gib": 4,
    "accelerator": None,
    "accelerator_count": 0,
    "accelerator_memory_gib": 0,
}


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inferpack.repository.init import init_repository

    root = tmp_path_factory.mktemp("profile-repo")
    init_repository(root, ["tiny-mlp", "sleep"], seed=0)
    # Known answer: each copy serves one request at a time for 20 ms (50 req/s a copy).
    edit_model(root, "sleep", "sleep20", workload_options={"sleep_ms": SLEEP_MS},
               max_batch_size=1, instances={"count": 1, "device": "cpu"})  # fmt: skip
    return root


def _profile(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from inferpack.cli import main; main()", "profile", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "COLUMNS": "200"},  # one line per message, for the asserts
    )


def _weight_bytes(path: Path) -> int:
    """The data section of a safetensors file: its size less the header."""
    with path.open("rb") as file:
        length = int(struct.unpack("<Q", file.read(8))[0])
    return path.stat().st_size - 8 - length


def _consistent(profile: Profile) -> None:
    """The capacity is what the server answered at a measured rate that met the SLO (never
    above that rate), and every rate above it failed."""
    config = SearchConfig(profile.slo_p90_ms, measured_s=1.5)
    rates = [p.rate_rps for p in profile.points]
    assert rates == sorted(rates)
    [best] = [p for p in profile.points if abs(p.sustained_rps - profile.capacity_rps) < 1e-3]
    assert profile.capacity_rps <= best.rate_rps
    for point in profile.points:
        passed = failure(point, config) is None
        if point is best:
            assert passed, point
        elif point.rate_rps > best.rate_rps:
            assert not passed, point


def test_every_flag_over_grpc_and_other_entries_survive(repository: Path, tmp_path: Path) -> None:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"instances": [TEST_BOX]}))
    output = tmp_path / "profiles.yaml"
    other = {"kind": "mlp-kind", "instance_type": "c5.2xlarge", "model_memory_mb": 1.0,
             "capacity_rps": 123.0, "slo_p90_ms": 50.0, "source": "by hand"}  # fmt: skip
    output.write_text(yaml.safe_dump({"profiles": [other]}))
    done = _profile(
        "--model-repository", str(repository), "--model", "tiny-mlp", "--slo-p90-ms", "50",
        "--instance-type", "test-box", "--output", str(output), "--models-per-server", "3",
        "--kind", "mlp-kind", "--transport", "grpc", "--batch-size", "2", *QUICK,
        "--start-rps", "20", "--max-rps", "60", "--search-steps", "2", "--workers", "1",
        "--cpu-threads", "1", "--catalog", str(catalog), "--region", "test-region-1",
        "--max-models", "500", "--seed", "7", "--fill-levels", "0.5",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "mlp-kind on test-box" in done.stderr
    survivor, profile = read_profiles([output])
    assert (survivor.instance_type, survivor.capacity_rps) == ("c5.2xlarge", 123.0)
    assert (profile.kind, profile.instance_type) == ("mlp-kind", "test-box")
    assert profile.models_per_server == 3 and profile.max_models == 500
    assert 0 < profile.capacity_rps <= 60 and profile.slo_p90_ms == 50
    assert all(p.rate_rps <= 60 for p in profile.points)
    # --fill-levels 0.5: half the highest passing rate was measured after the search (unless
    # a rate lay near it); the capacity is what was sustained there, lower on a slow host
    [best] = [p for p in profile.points if abs(p.sustained_rps - profile.capacity_rps) < 1e-3]
    assert any(p.rate_rps == pytest.approx(best.rate_rps / 2, rel=0.1)
               for p in profile.points)  # fmt: skip
    _consistent(profile)
    # Distinct weights: each copy counts all of its own weights (nothing is shared).
    weights = _weight_bytes(repository / "tiny-mlp" / "1" / "model.safetensors")
    assert profile.model_memory_mb * 2**20 >= weights
    assert "3 copies of tiny-mlp, uniform traffic, transport grpc, batch 2" in profile.source


def test_through_the_router_measures_a_one_server_local_fleet(
    repository: Path, tmp_path: Path
) -> None:
    """--through-router: the copies run as a one-server local fleet (deploy --target local)
    and the load, the statistics and the index go through its router; over gRPC here, so
    the router's gRPC face is what is measured."""
    from inferpack.config import ServerConfig
    from inferpack.config.control import ControlConfig, ControlMode
    from inferpack.profile.serving import BackgroundFleet

    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump({"instances": [TEST_BOX]}))
    output = tmp_path / "profiles.yaml"
    done = _profile(
        "--model-repository", str(repository), "--model", "tiny-mlp", "--slo-p90-ms", "50",
        "--instance-type", "test-box", "--catalog", str(catalog), "--region", "test-region-1",
        "--output", str(output), "--models-per-server", "2", "--transport", "grpc",
        "--through-router", "--cpu-threads", "1", "--start-rps", "20", "--max-rps", "40",
        "--search-steps", "0", *QUICK,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "through the router" in done.stderr
    [profile] = read_profiles([output])
    assert "transport grpc, through the local fleet's router" in profile.source
    _consistent(profile)
    assert profile.model_memory_mb > 0  # the index, merged by the router
    block = profile.server
    assert block is not None and block.workers == 1 and dict(block.batch_service_ms)
    # The child it ran: deploy of a one-server plan, the router on free ports.
    control = ControlConfig(mode=ControlMode.EXPLICIT, startup_models=("a", "b"), cpu_threads=1)
    fleet = BackgroundFleet(ServerConfig("repo", http_port=0, grpc_port=0, control=control),
                            "kind", "test-box", catalog, "test-region-1")  # fmt: skip
    argv = fleet.argv()
    assert not Path(argv[4]).exists()  # the command line alone writes nothing
    fleet.prepare()
    assert argv[2:4] == ["inferpack", "deploy"] and "--through-router" not in argv
    assert argv[argv.index("--router-grpc-port") + 1] == "0"
    assert argv[argv.index("--cpu-threads") + 1] == "1"
    plan = yaml.safe_load(Path(argv[4]).read_text())
    [server] = plan["servers"]
    assert server["instance_type"] == "test-box"
    assert [m["name"] for m in server["models"]] == ["a", "b"]
    fleet.stop()


def test_sleep_model_known_answer_and_replacing_the_entry(repository: Path, tmp_path: Path) -> None:
    """Two copies of a 20 ms model serve 100 req/s at most; a p90 of 80 ms is met at
    40 req/s (each copy 40 % busy: Poisson arrivals queue, p90 ~45-55 ms on the 2-vCPU VMs)
    and missed before 100 (where the copies are saturated)."""
    output = tmp_path / "profiles.yaml"
    args = ["--model-repository", str(repository), "--model", "sleep20", "--slo-p90-ms", "80",
            "--instance-type", "c7i.2xlarge", "--output", str(output),
            "--models-per-server", "2", "--start-rps", "40", "--max-rps", "160",
            "--search-steps", "2", *QUICK]  # fmt: skip
    for _ in range(2):  # the second run replaces the first's entry
        done = _profile(*args)
        assert done.returncode == 0, done.stderr
    [profile] = read_profiles([output])
    assert 40 <= profile.capacity_rps < 100
    highest = profile.points[-1]
    assert highest.rate_rps <= 160 and failure(highest, SearchConfig(80, measured_s=1.5))
    _consistent(profile)
    assert "measured 0 bytes" in done.stderr and profile.model_memory_mb > 0
    # The server block, read off the server's statistics: every batch sleeps 20 ms.
    block = profile.server
    assert block is not None and block.workers >= 1 and block.frontend_ms < 20
    curve = dict(block.batch_service_ms)
    assert curve and all(19 <= ms < 40 for ms in curve.values()), curve


def test_a_list_of_counts_writes_one_entry_per_count(repository: Path, tmp_path: Path) -> None:
    """--models-per-server 1,2 with Zipf traffic: two entries of one kind, each with its
    count, both read by the planner as one family (plan/counts.py)."""
    output = tmp_path / "profiles.yaml"
    done = _profile(
        "--model-repository", str(repository), "--model", "tiny-mlp", "--slo-p90-ms", "50",
        "--instance-type", "c7i.2xlarge", "--output", str(output), "--models-per-server", "2,1",
        "--traffic", "zipf:1.2", "--start-rps", "20", "--max-rps", "40", "--search-steps", "0",
        *QUICK,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "with 1 models" in done.stderr and "with 2 models" in done.stderr
    one, two = read_profiles([output])
    assert (one.models_per_server, two.models_per_server) == (1, 2)
    assert "zipf:1.2 traffic" in two.source and "2 copies" in two.source
    for entry in (one, two):
        _consistent(entry)
        assert entry.server is not None


def test_a_model_that_does_not_load_stops_the_run_with_its_reason(tmp_path: Path) -> None:
    """The server under measurement is a child `inferpack serve`: a copy that fails to load
    leaves it live but not ready, and profile names the copy and the reason (exit 1)."""
    from inferpack.repository.init import init_repository

    root = tmp_path / "repo"
    init_repository(root, ["tiny-mlp"], seed=0)
    edit_model(root, "tiny-mlp", "broken")
    (root / "broken" / "1" / "model.safetensors").write_bytes(b"not a safetensors file")
    done = _profile("--model-repository", str(root), "--model", "broken", "--slo-p90-ms", "50",
                    "--instance-type", "c7i.2xlarge", "--output", str(tmp_path / "p.yaml"),
                    *QUICK)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert "models did not load" in done.stderr and "broken-0" in done.stderr
    assert not (tmp_path / "p.yaml").exists()


def test_bad_inputs_fail_before_measuring(repository: Path, tmp_path: Path) -> None:
    output = tmp_path / "profiles.yaml"
    base = ["--model-repository", str(repository), "--model", "tiny-mlp", "--slo-p90-ms",
            "50", "--output", str(output)]  # fmt: skip
    done = _profile(*base, "--instance-type", "no-such-box")
    assert done.returncode == 2 and "unknown instance type" in done.stderr
    done = _profile(*base, "--instance-type", "c7i.2xlarge", "--start-rps", "10",
                    "--max-rps", "5")  # fmt: skip
    assert done.returncode == 2 and "start_rps <= max_rps" in done.stderr
    done = _profile(*base, "--instance-type", "c7i.2xlarge", "--models-per-server", "0,2")
    assert done.returncode == 2 and "--models-per-server takes counts >= 1" in done.stderr
    done = _profile(*base, "--instance-type", "c7i.2xlarge", "--traffic", "zipf:0")
    assert done.returncode == 2 and "--traffic must be uniform or zipf:S" in done.stderr
    output.write_text("profiles: [{kind: x}]\n")
    done = _profile(*base, "--instance-type", "c7i.2xlarge")
    assert done.returncode == 2 and "instance_type" in done.stderr
    assert output.read_text() == "profiles: [{kind: x}]\n"


@pytest.mark.parametrize(
    ("value", "message"),
    [("0.5,most", "--fill-levels takes shares"), ("0.5,1.5", "fill levels must be shares")],
)
def test_bad_fill_levels_are_refused_before_anything_starts(
    repository: Path, tmp_path: Path, value: str, message: str
) -> None:
    done = _profile("--model-repository", str(repository), "--model", "tiny-mlp",
                    "--slo-p90-ms", "50", "--instance-type", "c7i.2xlarge",
                    "--output", str(tmp_path / "p.yaml"), "--fill-levels", value)  # fmt: skip
    assert done.returncode == 2 and message in done.stdout + done.stderr
    assert not (tmp_path / "p.yaml").exists()
