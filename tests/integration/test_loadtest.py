"""loadtest against a real inferpack server: known answers, Zipf, the three transports."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from inferpack.config import ServerConfig
from inferpack.loadtest.choice import zipf_probabilities
from inferpack.loadtest.runner import run_loadtest
from inferpack.loadtest.spec import LoadSpec
from tests.helpers import ServerThread, edit_model
from tests.integration.test_report_browser import CHROMIUM, HARNESS, _dump_dom, _seen

ZIPF_MODELS = 100
# Short windows keep the suite fast; the known answers hold within their tolerances.
QUICK = {"duration_s": 3.0, "warmup_s": 1.0, "max_windows": 4}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    from inferpack.repository.init import init_repository

    root = tmp_path_factory.mktemp("loadtest-repo")
    init_repository(root, ["sleep", "tiny-mlp"], seed=0)
    # Known-answer model: 20 ms per request, one at a time.
    edit_model(
        root,
        "sleep",
        "sleep20",
        workload_options={"sleep_ms": 20},
        max_batch_size=1,
        instances={"count": 1, "device": "cpu"},
    )
    for index in range(ZIPF_MODELS):
        edit_model(root, "tiny-mlp", f"m{index:03d}")
    thread = ServerThread(ServerConfig(str(root), http_port=0, grpc_port=0)).start()
    yield thread
    thread.stop()


def test_closed_loop_known_answer(target: ServerThread) -> None:
    """One copy sleeping 20 ms a request: at most 50 req/s, whatever the concurrency, and a
    closed loop obeys Little's law (clients = throughput x latency). How far below 50 the
    copy runs is this host's per-request overhead (about 2 ms on the 2-vCPU VMs), so the
    answer at 4 clients is bounded by the pace at 1 client and the sleep's ceiling."""
    spec = LoadSpec(target.url, ("sleep20",), levels=(1, 4), **QUICK)
    one, four = run_loadtest(spec)["levels"]
    assert one["latency_ms"]["p50"] >= 20  # never faster than the sleep
    assert one["throughput_rps"] == pytest.approx(1e3 / one["latency_ms"]["p50"], rel=0.1)
    assert 0.95 * one["throughput_rps"] <= four["throughput_rps"] <= 50 * 1.02
    assert four["latency_ms"]["p50"] == pytest.approx(4e3 / four["throughput_rps"], rel=0.15)
    for level in (one, four):
        assert level["errors"] == {} and level["send_lateness_ms"] is None


def test_open_loop_known_answer(target: ServerThread) -> None:
    spec = LoadSpec(target.url, ("sleep20",), mode="open", levels=(20,), **QUICK)
    [level] = run_loadtest(spec)["levels"]
    assert level["rate_rps"] == 20
    assert level["throughput_rps"] == pytest.approx(20, rel=0.15)
    assert 19 <= level["latency_ms"]["p50"] <= 30
    assert level["send_lateness_ms"]["p50"] < 5  # the generator kept its schedule


def test_zipf_requests_follow_the_distribution(target: ServerThread) -> None:
    models = tuple(f"m{index:03d}" for index in range(ZIPF_MODELS))
    spec = LoadSpec(
        target.url,
        models,
        levels=(8,),
        distribution="zipf:1.1",
        workers=2,
        duration_s=3.0,
        warmup_s=0.5,
        max_windows=3,
    )
    [level] = run_loadtest(spec)["levels"]
    counts = [level["per_model_requests"].get(model, 0) for model in models]
    total = sum(counts)
    assert total > 1000
    expected = zipf_probabilities(ZIPF_MODELS, 1.1)
    top = sum(counts[:5]) / total
    assert top == pytest.approx(expected[:5].sum(), rel=0.1)
    assert counts[0] > counts[4] > counts[49]
    assert sum(counts[50:]) / total == pytest.approx(expected[50:].sum(), rel=0.2)


@pytest.mark.parametrize("transport", ["http-json", "http-binary", "grpc"])
def test_every_transport_against_inferpack(
    target: ServerThread, transport: str, tmp_path: Path
) -> None:
    url = f"grpc://{target.grpc_address}" if transport == "grpc" else target.url
    output = tmp_path / "lt.json"
    args = [
        "loadtest",
        "--url",
        url,
        "--model",
        "m000",
        "--concurrency",
        "2",
        "--duration-s",
        "1.5",
        "--warmup-s",
        "0.5",
        "--max-windows",
        "3",
        "--output",
        str(output),
    ]
    if transport == "http-json":
        args.append("--no-binary")
    done = subprocess.run(
        [sys.executable, "-c", "from inferpack.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(output.read_text())
    assert document["schema"] == "inferpack.loadtest/1"
    assert document["spec"]["transport"] == transport
    [level] = document["levels"]
    assert level["errors"] == {} and level["requests"] > 50
    assert level["latency_ms"]["p50"] > 0


def test_max_requests_ends_each_level_and_the_run_goes_on(
    target: ServerThread, tmp_path: Path
) -> None:
    """A budget that runs out in the middle of the second 1 s window (after 0.5 s warm-up):
    twice what one client gets from sleep20 in a second on this host (at most 50, the sleep's
    ceiling; slower hosts add their per-request overhead), so the level ends on it, not on
    stability (3 windows) or --max-windows."""
    [pace] = run_loadtest(LoadSpec(target.url, ("sleep20",), levels=(1,), **QUICK))["levels"]
    pace_rps = pace["throughput_rps"]
    assert 0 < pace_rps <= 51
    budget = round(2 * pace_rps)
    output = tmp_path / "lt.json"
    args = ["loadtest", "--url", target.url, "--model", "sleep20", "--concurrency", "1,2",
            "--duration-s", "3", "--warmup-s", "0.5", "--max-windows", "3",
            "--max-requests", str(budget), "--output", str(output)]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", "from inferpack.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    document = json.loads(output.read_text())
    assert [level["concurrency"] for level in document["levels"]] == [1, 2]
    for level in document["levels"]:
        assert level["ended_by"] == "max_requests"
        assert len(level["windows"]) < 3  # ended before max_windows
        assert 0 < level["requests"] <= budget and level["errors"] == {}
        # The window cut short by the budget is left out of the throughput.
        assert level["throughput_rps"] == pytest.approx(pace_rps, rel=0.3)
    warnings = document["warnings"]
    assert sum(f"--max-requests {budget}" in warning for warning in warnings) == 2


def test_unknown_model_is_a_clear_error(target: ServerThread) -> None:
    from inferpack.errors import NotFoundError

    with pytest.raises(NotFoundError, match="nope"):
        run_loadtest(LoadSpec(target.url, ("nope",), levels=(1,), **QUICK))


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (scripts/test installs it)")
def test_sweep_feeds_the_report_curve(
    target: ServerThread, tmp_path: Path, static_site: str
) -> None:
    closed = run_loadtest(
        LoadSpec(target.url, ("m000",), levels=(1, 4), duration_s=1.5, warmup_s=0.5, max_windows=3)
    )
    opened = run_loadtest(
        LoadSpec(
            target.url,
            ("m000",),
            mode="open",
            levels=(50, 100),
            duration_s=1.5,
            warmup_s=0.5,
            max_windows=3,
        )
    )
    paths = []
    for name, document in (("closed", closed), ("open", opened)):
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps(document))
        paths.append(str(path))
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from inferpack.cli import main; main()",
            "report",
            *paths,
            "--output",
            str(tmp_path / "report.html"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    page = (tmp_path / "report.html").read_text()
    assert "Throughput-latency curve" in page and "achieved vs target" in page
    assert page.count("<tr") >= 1 + 2 + 1 + 2  # two level tables with their headers
    (tmp_path / "harness.html").write_text(HARNESS)
    seen = _seen(_dump_dom(f"{static_site}/harness.html", tmp_path / "chromium-profile"))
    assert len(seen["images"]) == 2 and seen["fetched"] == []
    for image in seen["images"]:
        assert image["complete"] and image["width"] > 0, image


def _loadtest_cli(url: str, model: str, output: Path) -> subprocess.CompletedProcess[str]:
    args = ["loadtest", "--url", url, "--model", model, "--concurrency", "1"]
    return subprocess.run(
        [sys.executable, "-c", "from inferpack.cli import main; main()", *args,
         "--duration-s", "1.5", "--warmup-s", "0.3", "--max-windows", "3",
         "--output", str(output)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_an_unreachable_server_is_named_as_such(tmp_path: Path, scheme: str) -> None:
    """Not "model 'tiny-mlp': UNAVAILABLE": the cause, and exit 1 with no result written."""
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        url = f"{scheme}://127.0.0.1:{bound.getsockname()[1]}"
        done = _loadtest_cli(url, "tiny-mlp", tmp_path / "lt.json")
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1, said
    assert f"cannot reach {url}: connection refused" in said
    assert "tiny-mlp" not in said and not (tmp_path / "lt.json").exists()


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_an_unknown_model_is_named_not_found(
    target: ServerThread, tmp_path: Path, scheme: str
) -> None:
    url = target.url if scheme == "http" else f"grpc://{target.grpc_address}"
    done = _loadtest_cli(url, "nope", tmp_path / "lt.json")
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1, said
    assert f"model 'nope' not found on {url}" in said
    assert "cannot reach" not in said
