"""The ``inferpack`` command line: one verb per step of the loop.

``app`` holds serve, bench, loadtest, report, catalog and repo; each module imported below
adds its verbs to it (compile, profile, plan, simulate, deploy, controller). All of them
import their engines lazily.
"""

from inferpack.cli import (
    compile_cmd,
    controller_cmd,
    deploy_cmd,
    plan_cmd,
    profile_cmd,
    simulate_cmd,
)
from inferpack.cli.app import app, main

__all__ = [
    "app",
    "compile_cmd",
    "controller_cmd",
    "deploy_cmd",
    "main",
    "plan_cmd",
    "profile_cmd",
    "simulate_cmd",
]
