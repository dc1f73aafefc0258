"""``inferpack compile``: an optimised version of a model, checked for accuracy."""

from __future__ import annotations

from inferpack.cli.app import app, console  # noqa: F401
