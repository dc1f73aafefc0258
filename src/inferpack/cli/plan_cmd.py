"""``inferpack plan``: profiles + demand + prices → the cheapest fleet."""

from __future__ import annotations

from inferpack.cli.app import app, console  # noqa: F401
