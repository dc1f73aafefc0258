"""``deploy --target local --follow`` through the real CLI, under ``loadtest --trace``.

Three tiny models, a profile of 20 req/s a server (at most 3 models each), a plan for the
base demand (one server). The trace triples the demand, then drops it to a third of the
base: the controller must start servers when demand rises and stop them when it falls,
move models between them, and lose no request while doing so.
"""

from __future__ import annotations

import json
import re
import signal
import urllib.request
from pathlib import Path

import pytest
import yaml

from inferpack.deploy.follow import replan_time_limit_s
from inferpack.plan.formats import Profile, write_profiles
from tests.integration.cli_server import wait_for
from tests.integration.test_deploy_local import (
    CATALOG,
    REGION,
    _deploy,
    assert_failed_only_until_back,
    running_fleet,
)
from tests.integration.test_router import build_fleet_repo

_ROUTER = re.compile(r"router\s+listening\s+on\s+(http://[^\s,]+)")
BASE = {"mlp-a": 6.0, "mlp-b": 3.0, "mlp-c": 2.0}
PHASES = ((0.0, 1.0), (8.0, 3.0), (20.0, 0.3))  # (from s, x base)
DURATION_S = 30.0
INTERVAL_S = 2.0


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fleet_repo(tmp_path_factory.mktemp("deploy-follow"))


def _inputs(tmp_path: Path) -> dict[str, Path]:
    catalog = tmp_path / "catalog.yaml"
    catalog.write_text(yaml.safe_dump(CATALOG))
    profiles = tmp_path / "profiles.yaml"
    write_profiles(profiles, [Profile("tiny", "c5.2xlarge", 50.0, 20.0, 100.0, "test", 3)])
    demand = tmp_path / "demand.csv"
    demand.write_text("model,kind,rps\n" + "".join(f"{m},tiny,{r}\n" for m, r in BASE.items()))
    trace = tmp_path / "trace.csv"
    rows = [f"{t},{m},{r * scale}" for t, scale in PHASES for m, r in BASE.items()]
    trace.write_text("t_s,model,rps\n" + "\n".join(rows) + "\n")
    return {"catalog": catalog, "profiles": profiles, "demand": demand, "trace": trace}


def test_the_fleet_follows_a_rising_then_falling_trace_without_losing_a_request(
    repo: Path, tmp_path: Path
) -> None:
    inputs = _inputs(tmp_path)
    plan = tmp_path / "plan.yaml"
    planned = _deploy(
        tmp_path, "plan", "--profiles", str(inputs["profiles"]), "--demand",
        str(inputs["demand"]), "--slo-p90-ms", "100", "--output", str(plan),
        "--catalog", str(inputs["catalog"]), "--region", REGION, "--headroom", "0.2",
    )  # fmt: skip
    assert planned.returncode == 0, planned.stdout
    log = tmp_path / "fleet.log"
    args = [
        "deploy", str(plan), "--target", "local", "--model-repository", str(repo),
        "--catalog", str(inputs["catalog"]), "--region", REGION,
        "--router-http-port", "0", "--router-grpc-port", "-1", "--cpu-threads", "1",
        "--follow", "--interval-s", str(INTERVAL_S), "--profiles", str(inputs["profiles"]),
        "--headroom", "0.2", "--max-moves", "10",
    ]  # fmt: skip
    with running_fleet(tmp_path, args, 120, _ROUTER) as fleet:
        assert fleet.router is not None
        url = fleet.router.group(1)
        result = tmp_path / "load.json"
        load = _deploy(
            tmp_path, "loadtest", "--url", url, "--trace", str(inputs["trace"]),
            "--duration-s", str(DURATION_S), "--window-s", "2", "--rate-scale", "1",
            "--output", str(result),
        )  # fmt: skip
        assert load.returncode == 0, load.stdout + load.stderr
        with urllib.request.urlopen(f"{url}/fleet", timeout=10) as answer:
            fleet_state = json.load(answer)
    text = log.read_text()
    assert fleet.code == 0, text
    level = json.loads(result.read_text())["levels"][0]
    assert level["trace"] and len(level["windows"]) == DURATION_S / 2
    assert level["errors"] == {}, text  # no request lost while servers came and went
    assert sum(w["errors"] for w in level["windows"]) == 0
    sent = sum(r * (end - start) for start, end, r in _spans())
    assert abs(level["requests"] - sent) < 0.25 * sent
    assert "start server" in text and "ready at" in text, text  # demand x3: a server added
    assert re.search(r"stopped server \S+ \(pid", text), text  # demand down: one removed
    assert "router: table switched" in text and re.search(r"step \d+: applied", text)
    plans = sorted(p for p in tmp_path.rglob("plan-*.yaml"))
    assert plans, "each applied step writes its plan"
    controller = fleet_state["controller"]  # /fleet shows what the controller did
    assert controller["following"] and controller["interval_s"] == INTERVAL_S
    assert controller["applying"] is None
    _assert_steps_keep_pace(text, controller["step"])
    assert controller["plan_file"] in {str(p) for p in plans}
    assert {m["model"] for m in fleet_state["models"]} == set(BASE)


_STEP = re.compile(r"^\[\s*([\d.]+) s\] step (\d+): (observed|applied|not applied)", re.MULTILINE)


def _assert_steps_keep_pace(log: str, last_step: int) -> None:
    """The controller steps every interval after its previous step ended, to the end.

    Machine-relative: a step that starts a server takes as long as the server takes to
    start on this host, so the count of steps in the run is not fixed; the pace between
    them is (the interval, plus the re-plan's time limit and a second of scheduling slack).
    """
    started: dict[int, float] = {}
    ended: dict[int, float] = {}
    for at, step, what in _STEP.findall(log):
        (started if what == "observed" else ended)[int(step)] = float(at)
    assert "not applied" not in log, log
    # /fleet was read just before the fleet was stopped: one more step may have begun since
    assert set(range(1, last_step + 1)) <= started.keys() and max(started) <= last_step + 1, log
    slack_s = replan_time_limit_s(INTERVAL_S) + 1.0
    previous_end = 0.0  # the loop starts with the controller's clock
    for step in range(1, last_step + 1):
        gap_s = started[step] - previous_end
        assert INTERVAL_S - 0.15 <= gap_s <= INTERVAL_S + slack_s, (step, gap_s, log)
        previous_end = ended.get(step, started[step])
    # /fleet was read after the 30 s trace ended, with no step applying: the loop ran on
    assert previous_end >= DURATION_S - INTERVAL_S - slack_s, log
    assert last_step >= 5, log


def _spans() -> list[tuple[float, float, float]]:
    ends = [t for t, _ in PHASES[1:]] + [DURATION_S]
    return [(t, end, sum(BASE.values()) * x) for (t, x), end in zip(PHASES, ends, strict=True)]


def test_follow_needs_profiles_and_the_local_target(tmp_path: Path) -> None:
    plan = tmp_path / "plan.yaml"
    plan.write_text("plan: {}\n")
    done = _deploy(
        tmp_path, "deploy", str(plan), "--target", "local", "--model-repository", "x",
        "--follow",
    )  # fmt: skip
    assert done.returncode == 2
    assert "--follow needs --target local and --profiles" in done.stderr


def test_loadtest_takes_a_demand_or_a_trace_not_both(tmp_path: Path) -> None:
    inputs = _inputs(tmp_path)
    done = _deploy(
        tmp_path, "loadtest", "--url", "http://127.0.0.1:1", "--output", "x.json",
        "--trace", str(inputs["trace"]), "--demand", str(inputs["demand"]),
    )  # fmt: skip
    assert done.returncode == 2 and "give --demand or --trace, not both" in done.stderr
    done = _deploy(
        tmp_path, "loadtest", "--url", "http://127.0.0.1:1", "--output", "x.json",
        "--trace", str(inputs["trace"]), "--model", "mlp-a",
    )  # fmt: skip
    assert done.returncode == 2 and "--trace sets the models" in done.stderr


def test_a_server_killed_while_following_is_restarted_and_the_controller_goes_on(
    repo: Path, tmp_path: Path
) -> None:
    """kill -9 of the fleet's server under load with --follow: its models fail only until
    it is back (within 10 s), then answer; the controller keeps stepping afterwards."""
    import os
    import threading
    import time

    import numpy as np
    import tritonclient.http as httpclient

    inputs = _inputs(tmp_path)
    plan = tmp_path / "plan.yaml"
    planned = _deploy(
        tmp_path, "plan", "--profiles", str(inputs["profiles"]), "--demand",
        str(inputs["demand"]), "--slo-p90-ms", "100", "--output", str(plan),
        "--catalog", str(inputs["catalog"]), "--region", REGION,
    )  # fmt: skip
    assert planned.returncode == 0, planned.stdout
    log = tmp_path / "fleet.log"
    args = [
        "deploy", str(plan), "--target", "local", "--model-repository", str(repo),
        "--catalog", str(inputs["catalog"]), "--region", REGION, "--router-http-port", "0",
        "--router-grpc-port", "-1", "--cpu-threads", "1", "--follow", "--interval-s", "2",
        "--profiles", str(inputs["profiles"]),
    ]  # fmt: skip
    outcomes: list[tuple[float, bool]] = []
    done = threading.Event()

    def load(address: str) -> None:
        client = httpclient.InferenceServerClient(address, connection_timeout=5.0)
        item = httpclient.InferInput("input", [1, 16], "FP32")
        item.set_data_from_numpy(np.ones((1, 16), np.float32))
        while not done.is_set():
            try:
                client.infer("mlp-a", [item])
                outcomes.append((time.monotonic(), True))
            except Exception:  # any failure counts
                outcomes.append((time.monotonic(), False))
            time.sleep(0.05)

    with running_fleet(tmp_path, args, 120, _ROUTER) as fleet:
        try:
            assert fleet.router is not None
            url = fleet.router.group(1)
            victim = re.search(r"models\s+http://\S+\s+gRPC \S+\s+pid (\d+)", log.read_text())
            assert victim, log.read_text()
            worker = threading.Thread(target=load, args=(url.removeprefix("http://"),))
            worker.start()
            time.sleep(2.0)
            killed_at = time.monotonic()
            os.kill(int(victim.group(1)), signal.SIGKILL)
            wait_for(log, re.compile(r"is back: pid \d+"), fleet.process, 60)
            back_at = time.monotonic()
            time.sleep(5.0)
            done.set()
            worker.join(timeout=30)
        finally:
            done.set()
    text = log.read_text()
    assert fleet.code == 0, text
    failed = [t for t, ok in outcomes if not ok]
    assert_failed_only_until_back(failed, killed_at, back_at)  # mlp-a: one replica
    assert outcomes[-1][1], text  # answered again
    after = text[text.index("is back: pid") :]
    assert re.search(r"step \d+: observed", after), text  # the controller went on
