"""Triton's ``auto_complete_config``: a python model fills in its own configuration.

A Triton python model may define ``TritonPythonModel.auto_complete_config(config)``
(a static method) that adds inputs and outputs, sets ``max_batch_size`` and turns dynamic
batching on; with it a model folder needs no config file at all, or one that names only
the backend. As in Triton it is called at load, on a fresh import of ``model.py`` that is
not kept (made only when the file names ``auto_complete_config``: a ``kind: process``
model's code otherwise runs only in its workers), before any instance is built; what it
returns becomes the configuration that metadata and ``/config`` report once the model is
READY. It runs at load, not when the
repository is listed, so ``--allowed-platforms`` has refused a python model before any of
its code runs.
"""

from __future__ import annotations

import dataclasses
from typing import Final

from inferpack.backends.python import triton_utils as pb
from inferpack.backends.python.module import (
    TRITON_CLASS,
    describe,
    import_model_file,
    model_class,
)
from inferpack.config.triton_json import completed_config, triton_model_config
from inferpack.errors import ConfigError
from inferpack.repository import ModelSource

AUTO_COMPLETE: Final = "auto_complete_config"


def complete_source(source: ModelSource) -> ModelSource:
    """``source`` with its config completed by the model (unchanged if the model defines
    no ``auto_complete_config``); ConfigError if it fails or leaves no inputs or outputs."""
    config, path = source.config, source.artifact_path
    complete = None
    if AUTO_COMPLETE in path.read_text(errors="replace"):  # else no need to run its code here
        module = import_model_file(path, config.name, source.version)
        name, cls = model_class(module, config.name, path)
        complete = getattr(cls, AUTO_COMPLETE, None) if name == TRITON_CLASS else None
    if complete is not None:
        given = pb.ModelConfig(triton_model_config(config))
        try:
            returned = complete(given)
        except BaseException as error:
            raise ConfigError(
                [f"model {config.name!r}: auto_complete_config failed: {describe(error, path)}"]
            ) from None
        data = returned.as_dict() if isinstance(returned, pb.ModelConfig) else given.as_dict()
        config = completed_config(config, data, str(path))
    missing = [what for what, specs in (("inputs", config.inputs), ("outputs", config.outputs))
               if not specs]  # fmt: skip
    if missing:
        raise ConfigError(
            [f"model {config.name!r}: no {' and no '.join(missing)} declared (in the config, "
             "or by model.py's auto_complete_config)"]
        )  # fmt: skip
    return dataclasses.replace(source, config=config)
