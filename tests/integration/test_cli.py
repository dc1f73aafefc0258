"""The real CLI: ``repo init`` then ``serve`` in a subprocess, a request, a clean stop."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

SERVE_TIMEOUT_S = 120


def _inferpack(*args: str) -> list[str]:
    return [sys.executable, "-c", "from inferpack.cli import main; main()", *args]


def test_repo_init_and_serve_from_the_command_line(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    subprocess.run(_inferpack("repo", "init", str(repo), "--workloads", "tiny-mlp"), check=True)
    listed = subprocess.run(
        _inferpack("repo", "list", str(repo)), capture_output=True, text=True, check=True
    )
    assert listed.stdout.startswith("tiny-mlp\tworkload")

    log = tmp_path / "serve.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            _inferpack("serve", "--model-repository", str(repo), "--http-port", "0"),
            stderr=sink,
            stdout=sink,
        )
    try:
        curl = _wait_for(log, re.compile(r"curl -s -X POST (\S+) -d '(.*)'"))
        url, body = curl.group(1), curl.group(2)
        request = urllib.request.Request(url, data=body.encode(), method="POST")
        with urllib.request.urlopen(request, timeout=10) as response:
            payload = json.loads(response.read())
        assert payload["outputs"][0]["shape"] == [1, 4]
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    assert "draining" in log.read_text()


def _wait_for(log: Path, pattern: re.Pattern[str]) -> re.Match[str]:
    deadline = time.monotonic() + SERVE_TIMEOUT_S
    while time.monotonic() < deadline:
        found = pattern.search(log.read_text())
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"server never printed its curl line:\n{log.read_text()}")
