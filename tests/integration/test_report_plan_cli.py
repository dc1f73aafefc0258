"""``inferpack report plan.yaml`` as a subprocess: the page it writes and its errors."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from inferpack.plan.formats import write_plan
from tests.integration.cli_server import inferpack
from tests.unit.test_report_plan import make_plan

CLI_TIMEOUT_S = 120


def _run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        inferpack("report", *args), cwd=cwd, capture_output=True, text=True,
        timeout=CLI_TIMEOUT_S, check=False,
    )  # fmt: skip


def test_report_renders_a_plan_file(tmp_path: Path) -> None:
    write_plan(tmp_path / "plan.yaml", make_plan())

    done = _run(tmp_path, "plan.yaml", "--output", "out.html")

    assert done.returncode == 0, done.stdout + done.stderr
    assert "wrote out.html" in done.stdout + done.stderr  # the console writes to stderr
    page = (tmp_path / "out.html").read_text(encoding="utf-8")
    assert "<title>inferpack report: plan plan.yaml</title>" in page
    assert "The mixed plan beside each instance type alone" in page
    ids = re.findall(r'<figure id="plot-([a-z-]+)">', page)
    assert ids == ["plan-cost", "plan-utilisation", "plan-latency"]
    assert page.count('src="data:image/png;base64,') == 3


def test_report_names_an_invalid_plan_file_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "plan.yml").write_text("servers: {}\n")

    done = _run(tmp_path, "plan.yml", "--output", "out.html")

    assert done.returncode == 1
    output = " ".join((done.stdout + done.stderr).split())  # rich wraps long lines
    assert "error: plan.yml: expected a plan with a 'servers' list" in output
    assert not (tmp_path / "out.html").exists()
