"""Import a model's ``model.py`` and find its class; say where user code failed.

Every load imports the file afresh under a name of its own (``inferpack_model.<model>.v<N>.
<count>``), so two versions, two models with the same file name, and a reload after an
edit never share module state; the version folder is put first on ``sys.path`` while the
file imports, so helpers beside it import as they would under Triton, and the helpers are
dropped from ``sys.modules`` afterwards (another model's ``helpers.py`` is its own). A
helper imported lazily, inside a function, after the load is not found: import helpers at
the top of model.py.

A model.py defines one of two classes (docs/python-models.md):

- ``InferpackModel``: inferpack's contract (a whole batch as a dict of arrays);
- ``TritonPythonModel``: Triton's python backend contract, run unmodified; the module
  ``triton_python_backend_utils`` it imports is inferpack's
  (:mod:`inferpack.backends.python.triton_utils`).
"""

from __future__ import annotations

import importlib.util
import itertools
import sys
import threading
import traceback
from pathlib import Path
from types import ModuleType
from typing import Any, Final

from inferpack.errors import ConfigError, InferpackError, ModelExecutionError

NATIVE_CLASS: Final = "InferpackModel"
TRITON_CLASS: Final = "TritonPythonModel"
TRITON_UTILS: Final = "triton_python_backend_utils"
_MAX_MESSAGE_CHARS: Final = 500
_counter = itertools.count()
_import_lock = threading.Lock()  # sys.path and sys.modules are process-wide


def import_model_file(path: Path, model: str, version: str) -> ModuleType:
    """Run ``path`` as a new module; ConfigError naming the model, file and line if the
    import fails (a syntax error, a missing package, an exception at top level)."""
    _provide_triton_utils()
    name = f"inferpack_model.{_identifier(model)}.v{version}.m{next(_counter)}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError([f"model {model!r}: {path} cannot be imported"])
    module = importlib.util.module_from_spec(spec)
    with _import_lock:
        before = set(sys.modules)
        sys.path.insert(0, str(path.parent))
        try:
            spec.loader.exec_module(module)
        except BaseException as error:  # SystemExit in user code must not stop the server
            what = describe(error, path)
            raise ConfigError([f"model {model!r}: import failed: {what}"]) from None
        finally:
            sys.path.remove(str(path.parent))
            _forget_helpers(set(sys.modules) - before, path.parent)
    return module


def _forget_helpers(names: set[str], folder: Path) -> None:
    """Drop the modules imported from the model's own folder from ``sys.modules``: the
    model keeps them (it holds references), but another model's ``helpers.py`` must not
    be served this one's from the cache, nor an edited one its old copy on reload."""
    for name in names:
        where = getattr(sys.modules.get(name), "__file__", None)
        if where and Path(where).resolve().is_relative_to(folder.resolve()):
            del sys.modules[name]


def model_class(module: ModuleType, model: str, path: Path) -> tuple[str, type[Any]]:
    """The class the file defines (its name says the contract)."""
    for name in (TRITON_CLASS, NATIVE_CLASS):
        found = getattr(module, name, None)
        if isinstance(found, type):
            return name, found
    raise ConfigError(
        [f"model {model!r}: {path} defines neither class {NATIVE_CLASS} nor {TRITON_CLASS}"]
    )


def describe(error: BaseException, path: Path) -> str:
    """``ValueError: bad (model.py line 12, in execute)``: the error and the deepest frame of
    the user's file it passed through (the whole file name when the file is not in the
    traceback, e.g. a syntax error, whose own line is in its message)."""
    where = ""
    for frame in traceback.extract_tb(error.__traceback__):
        if Path(frame.filename) == path:
            where = f" ({path.name} line {frame.lineno}, in {frame.name})"
    if isinstance(error, SyntaxError) and not where:
        where = f" ({path.name} line {error.lineno})"
    text = str(error).strip().splitlines()[-1:] or [""]
    message = f"{type(error).__name__}: {text[0]}" if text[0] else type(error).__name__
    return (message[:_MAX_MESSAGE_CHARS] + where).strip()


def user_error(error: BaseException, model: str, path: Path, during: str) -> InferpackError:
    """An exception raised by model code, as the error a client gets: an InferpackError
    the model raised keeps its status (InvalidInputError: 400); anything else is a 500
    naming the model, the file and the line."""
    if isinstance(error, InferpackError):
        return error
    return ModelExecutionError(f"model {model!r} failed in {during}: {describe(error, path)}")


def _identifier(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text) or "model"


def _provide_triton_utils() -> None:
    """Make ``import triton_python_backend_utils`` find inferpack's module (once)."""
    if TRITON_UTILS not in sys.modules:
        from inferpack.backends.python import triton_utils

        sys.modules[TRITON_UTILS] = triton_utils
