"""The local fleet's one subprocess wrapper: start a server, read its log, stop it.

Children run in their own session, so a Ctrl-C in the terminal reaches the fleet alone
and the fleet decides the order of the stop (router drained first, servers after). A stop
signals the child's whole process group (the session it leads), so anything the server
started goes with it. The price: a fleet killed with SIGKILL leaves its servers running;
their PIDs are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# How often a stopping fleet looks whether its children have exited.
_POLL_S = 0.05


@dataclass
class ChildProcess:
    """One started server: its name (for messages), process and log file."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def exit_code(self) -> int | None:
        """None while running."""
        return self.process.poll()

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def signal(self, signum: int) -> None:
        """Send ``signum`` to this child's process group, unless it already exited (and was
        reaped: its PID, the group's ID, may then belong to another process)."""
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # exited since poll()
                os.killpg(self.process.pid, signum)


def start_child(name: str, argv: Sequence[str], log_path: Path) -> ChildProcess:
    """Start ``argv`` with stdout and stderr to ``log_path``."""
    with log_path.open("wb") as sink:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return ChildProcess(name, process, log_path)


async def _wait_all(children: Sequence[ChildProcess], timeout_s: float) -> list[ChildProcess]:
    """Wait until every child exited or ``timeout_s`` passed; the ones still running."""
    deadline = time.monotonic() + timeout_s
    running = [c for c in children if c.exit_code() is None]
    while running and time.monotonic() < deadline:
        await asyncio.sleep(_POLL_S)
        running = [c for c in running if c.exit_code() is None]
    return running


async def stop_children(children: Sequence[ChildProcess], timeout_s: float) -> list[ChildProcess]:
    """SIGTERM every child (each drains its own requests), wait up to ``timeout_s``, then
    SIGKILL the rest and reap them. Returns the children that had to be killed."""
    for child in children:
        child.signal(signal.SIGTERM)
    stubborn = await _wait_all(children, timeout_s)
    for child in stubborn:
        child.signal(signal.SIGKILL)
    await _wait_all(stubborn, timeout_s)
    return stubborn
