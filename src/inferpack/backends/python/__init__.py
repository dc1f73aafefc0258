"""``platform: python``: the user's own Python model code (docs/python-models.md).

``model.py`` in the version folder defines ``InferpackModel`` (inferpack's contract) or
``TritonPythonModel`` (Triton's python backend, run unmodified). Each instance runs on a
thread of its own (``kind: thread``, the default: light enough for thousands of models) or
in a worker process of its own (``kind: process``: isolation, for CPU-bound pure-Python
code that would hold the GIL, or code that may crash).
"""

from __future__ import annotations

from inferpack.backends.python.calls import ModelCalls
from inferpack.backends.python.instances import ModelContext
from inferpack.backends.python.thread_backend import PythonBackend, load_python_backends

__all__ = ["ModelCalls", "ModelContext", "PythonBackend", "load_python_backends"]
