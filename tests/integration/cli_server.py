"""``inferpack serve`` as a subprocess: start it, read its addresses, stop it cleanly."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

SERVE_TIMEOUT_S = 120
# Rich wraps long lines when writing to a file: any whitespace may be a line break.
_LISTENING = re.compile(r"listening\s+on\s+(http://\S+?)(?:,\s+gRPC\s+on\s+(\S+?))?\s")


def inferpack(*args: str) -> list[str]:
    """The command line running the CLI with this interpreter."""
    return [sys.executable, "-c", "from inferpack.cli import main; main()", *args]


def wait_for(
    log: Path,
    pattern: re.Pattern[str],
    process: subprocess.Popen[bytes] | None = None,
    timeout_s: float = SERVE_TIMEOUT_S,
) -> re.Match[str]:
    """The first match of ``pattern`` in the log, polling until ``timeout_s`` (or until
    ``process`` exits)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = pattern.search(log.read_text())
        if found:
            return found
        if process is not None and process.poll() is not None:
            break
        time.sleep(0.1)
    raise AssertionError(f"no {pattern.pattern!r} in the server output:\n{log.read_text()}")


@dataclass
class CliServer:
    process: subprocess.Popen[bytes]
    log: Path
    url: str
    grpc_address: str | None

    def output(self) -> str:
        return self.log.read_text()


@contextmanager
def serve(log: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[CliServer]:
    """Run ``inferpack serve ARGS`` until it printed its addresses and finished loading
    (the ready or not-ready line); SIGTERM it afterwards and check it exits with 0."""
    with log.open("w") as sink:
        process = subprocess.Popen(inferpack("serve", *args), stdout=sink, stderr=sink, env=env)
    try:
        listening = wait_for(log, _LISTENING, process)
        wait_for(log, re.compile(r"ready\s+on|live\s+but\s+not\s+ready"), process)
        yield CliServer(process, log, listening.group(1), listening.group(2))
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=30)
    assert code == 0, log.read_text()
