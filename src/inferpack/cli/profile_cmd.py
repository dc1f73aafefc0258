"""``inferpack profile``: what one server sustains for a model kind at a p90 SLO."""

from __future__ import annotations

from inferpack.cli.app import app, console  # noqa: F401
