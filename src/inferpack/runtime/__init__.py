"""Runtime: model workers, the model manager and the one engine facade protocols call."""

from inferpack.runtime.engine import Engine

__all__ = ["Engine"]
