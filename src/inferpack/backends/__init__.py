"""Backends: load an artifact on a device at a precision and run a batch.

Each engine is an optional extra imported only when a model needs it, so that
``import inferpack`` stays light and a missing engine is reported by name.
"""

from __future__ import annotations

from inferpack.backends.base import Backend
from inferpack.backends.python.calls import ModelCalls
from inferpack.errors import ConfigError, MissingExtraError
from inferpack.repository import ModelSource

TORCH_PLATFORMS = frozenset({"torchscript", "torch_export", "workload", "torch_aoti"})


def load_backends(source: ModelSource, calls: ModelCalls | None = None) -> list[Backend]:
    """One backend per configured instance (instances on one device may share a module).
    ``calls``: the server's other models, for python models that call them (BLS)."""
    platform = source.config.platform
    if platform == "python":
        from inferpack.backends.python import load_python_backends

        return list(load_python_backends(source, calls))
    if platform in TORCH_PLATFORMS:
        try:
            from inferpack.backends.torch_backend import TorchBackend
        except ImportError as error:
            raise MissingExtraError("torch", "torch") from error
        return list(TorchBackend.load_instances(source))
    if platform == "onnx":
        try:
            from inferpack.backends.onnx_backend import OnnxBackend
        except ImportError as error:
            raise MissingExtraError("onnxruntime", "onnx") from error
        return list(OnnxBackend.load_instances(source))
    raise ConfigError([f"{source.config.name}: no backend for platform {platform!r}"])


__all__ = ["Backend", "load_backends"]
