"""A server that a re-plan removed is not restarted (deploy --follow and the restart watcher
share the fleet's members list)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from inferpack.deploy.local import LocalFleetConfig, Member, _restart
from inferpack.deploy.processes import ChildProcess
from inferpack.deploy.spec import ServerSpec
from inferpack.router.table import Backend, Picker, RoutingTable


def test_a_member_no_longer_in_the_fleet_is_not_restarted(tmp_path: Path) -> None:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    backend = Backend("s-001", "http://127.0.0.1:1", "127.0.0.1:2")
    spec = ServerSpec("s-001", "t", "cpu", 0, 2, 1024.0, ("m",), 10.0, "repo")
    member = Member(spec, ChildProcess("s-001", process, tmp_path / "s-001.log"), backend)
    picker = Picker(RoutingTable.from_hosts([(backend, ["m"])]))
    router: Any = SimpleNamespace(picker=picker)
    lines: list[str] = []
    asyncio.run(_restart(member, [], router, LocalFleetConfig(), lines.append, code=-9))
    assert member.child.process is process  # nothing was started
    assert any("no longer in the plan, not restarted" in line for line in lines), lines
