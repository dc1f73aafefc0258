"""``import inferpack`` (and the server and CLI modules) must not import torch."""

from __future__ import annotations

import subprocess
import sys


def test_core_modules_do_not_import_torch() -> None:
    code = (
        "import sys, inferpack, inferpack.cli, inferpack.server, inferpack.runtime, "
        "inferpack.workloads\n"
        "heavy = [m for m in ('torch', 'safetensors', 'transformers') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""
