"""The server process: HTTP app, lifecycle (load, ready, drain) and the run loop."""

from inferpack.server.app import RunningServer, create_app, start_server

__all__ = ["RunningServer", "create_app", "start_server"]
