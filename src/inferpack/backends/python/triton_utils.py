"""``triton_python_backend_utils``: the module Triton python-backend models import, for
inferpack.

A Triton ``model.py`` does ``import triton_python_backend_utils as pb_utils`` and uses this
surface: tensors (:class:`Tensor`), the requests it is given and the responses it returns
(:class:`InferenceRequest`, :class:`InferenceResponse`), errors (:class:`TritonError`,
:class:`TritonModelException`), config helpers (``get_output_config_by_name``,
``triton_string_to_numpy``, ...), :class:`ModelConfig` for ``auto_complete_config``, the
:class:`Logger`, and BLS: ``InferenceRequest(...).exec()`` / ``async_exec()`` run another
model of the same server, in process. The backend registers this module under Triton's
name when it loads such a model (``python_models.module``), so the file runs unmodified.

Written for inferpack against Triton's documented surface (names, argument names, error
codes and type numbers are Triton's); the implementation is inferpack's. Not provided:
decoupled response senders (such models are refused at config time), GPU tensors (every
tensor is a numpy array on the CPU), custom metrics.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Sequence
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt

from inferpack.backends.python.calls import current_calls
from inferpack.datatypes import bytes_elements
from inferpack.datatypes import deserialize_bytes_tensor as _deserialize
from inferpack.datatypes import serialize_bytes_tensor as _serialize
from inferpack.errors import InferpackError

log = logging.getLogger("inferpack.python_model")

# Triton's config data types: name -> numpy type, and Triton's numbering (its DataType enum).
TRITON_STRING_TO_NUMPY: Final[dict[str, type]] = {
    "TYPE_BOOL": bool,
    "TYPE_UINT8": np.uint8,
    "TYPE_UINT16": np.uint16,
    "TYPE_UINT32": np.uint32,
    "TYPE_UINT64": np.uint64,
    "TYPE_INT8": np.int8,
    "TYPE_INT16": np.int16,
    "TYPE_INT32": np.int32,
    "TYPE_INT64": np.int64,
    "TYPE_FP16": np.float16,
    "TYPE_FP32": np.float32,
    "TYPE_FP64": np.float64,
    "TYPE_STRING": np.object_,
}
_TYPE_NUMBERS: Final[dict[int, type]] = {
    number: TRITON_STRING_TO_NUMPY[name]
    for number, name in enumerate(TRITON_STRING_TO_NUMPY, start=1)
}

TRITONSERVER_REQUEST_FLAG_SEQUENCE_START: Final = 1
TRITONSERVER_REQUEST_FLAG_SEQUENCE_END: Final = 2
TRITONSERVER_RESPONSE_COMPLETE_FINAL: Final = 1
TRITONSERVER_REQUEST_RELEASE_ALL: Final = 1
TRITONSERVER_REQUEST_RELEASE_RESCHEDULE: Final = 2
TRITONSERVER_MEMORY_CPU: Final = 0
TRITONSERVER_MEMORY_CPU_PINNED: Final = 1
TRITONSERVER_MEMORY_GPU: Final = 2


class TritonError:
    """An error for one response (not an exception: a model puts it in a response)."""

    UNKNOWN: ClassVar[int] = 0
    INTERNAL: ClassVar[int] = 1
    NOT_FOUND: ClassVar[int] = 2
    INVALID_ARG: ClassVar[int] = 3
    UNAVAILABLE: ClassVar[int] = 4
    UNSUPPORTED: ClassVar[int] = 5
    ALREADY_EXISTS: ClassVar[int] = 6
    CANCELLED: ClassVar[int] = 7

    def __init__(self, message: str, code: int = 1) -> None:
        self._message = str(message)
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code

    def __repr__(self) -> str:
        return f"TritonError({self._message!r}, {self._code})"


class TritonModelException(Exception):  # noqa: N818 - Triton's name
    """Raised by a model (or by a failed BLS call it re-raises): fails its requests."""

    def message(self) -> str:
        return str(self.args[0]) if self.args else ""


class Tensor:
    """A named tensor, always a numpy array on the CPU (BYTES: an object array of bytes)."""

    def __init__(self, name: str, data: Any) -> None:
        array = np.asarray(data)
        if array.dtype.kind in "SU":  # numpy strings: BYTES, as Triton's Tensor takes them
            array = bytes_elements(array)
        self._name = name
        self._array = array

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> npt.NDArray[Any]:
        return self._array

    def shape(self) -> list[int]:
        return list(self._array.shape)

    def is_cpu(self) -> bool:
        return True

    def to_dlpack(self) -> Any:
        return self._array.__dlpack__()

    @staticmethod
    def from_dlpack(name: str, capsule: Any) -> Tensor:
        """From an object with ``__dlpack__`` (a torch tensor, an array), or a raw capsule
        (``torch.utils.dlpack.to_dlpack``), read through torch when torch made it."""
        if hasattr(capsule, "__dlpack__"):
            return Tensor(name, np.from_dlpack(capsule))
        import torch.utils.dlpack  # a capsule comes from torch; torch is then installed

        return Tensor(name, torch.utils.dlpack.from_dlpack(capsule).cpu().numpy())

    def __repr__(self) -> str:
        return f"Tensor({self._name!r}, shape={self.shape()}, dtype={self._array.dtype})"


def _json(parameters: dict[str, Any] | str | None) -> str:
    return parameters if isinstance(parameters, str) else json.dumps(parameters or {})


class InferenceResponse:
    """The answer to one request: output tensors, or an error."""

    def __init__(
        self,
        output_tensors: Sequence[Tensor] = (),
        error: TritonError | None = None,
        parameters: dict[str, Any] | str | None = None,
    ) -> None:
        self._outputs = list(output_tensors)
        self._error = error
        self._parameters = (
            parameters if isinstance(parameters, str) else json.dumps(parameters or {})
        )

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error

    def parameters(self) -> str:
        return self._parameters


class InferenceRequest:
    """A request given to ``execute``, or one the model builds to call another model (BLS)."""

    def __init__(  # noqa: PLR0917 - Triton's signature
        self,
        model_name: str | bytes = "",
        inputs: Sequence[Tensor] = (),
        requested_output_names: Sequence[str] = (),
        request_id: str = "",
        correlation_id: int | str = 0,
        flags: int = 0,
        timeout: int = 0,
        model_version: int = -1,
        parameters: dict[str, Any] | str | None = None,
        **_ignored: Any,  # preferred_memory, trace: no effect on a CPU-only in-process call
    ) -> None:
        self.model_name = model_name.decode() if isinstance(model_name, bytes) else model_name
        self.model_version = model_version
        self._inputs = list(inputs)
        self._requested = [str(n) for n in requested_output_names]
        self._request_id = request_id
        self._correlation_id = correlation_id
        self._flags = flags
        self._timeout = timeout
        self._parameters = (
            parameters if isinstance(parameters, str) else json.dumps(parameters or {})
        )

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def requested_output_names(self) -> list[str]:
        return self._requested

    def request_id(self) -> str:
        return self._request_id

    def correlation_id(self) -> int | str:
        return self._correlation_id

    def flags(self) -> int:
        return self._flags

    def timeout(self) -> int:
        return self._timeout

    def parameters(self) -> str:
        return self._parameters

    def is_cancelled(self) -> bool:
        return False

    def get_response_sender(self) -> Any:
        raise TritonModelException(
            "get_response_sender() is for decoupled models, which inferpack does not serve"
        )

    def exec(self, decoupled: bool = False) -> InferenceResponse:
        """Run the request on the named model of this server; errors come back in the
        response (``has_error()``), as in Triton."""
        _refuse_decoupled(decoupled)
        try:
            return _response(self._submit().result())
        except InferpackError as error:
            return InferenceResponse(error=TritonError(error.message, _code_of(error)))

    def async_exec(self, decoupled: bool = False) -> Awaitable[InferenceResponse]:
        """As :meth:`exec`, awaitable from an ``async def execute``."""
        _refuse_decoupled(decoupled)
        future = self._submit()

        async def answer() -> InferenceResponse:
            try:
                return _response(await asyncio.wrap_future(future))
            except InferpackError as error:
                return InferenceResponse(error=TritonError(error.message, _code_of(error)))

        return answer()

    def _submit(self) -> Any:
        version = str(self.model_version) if self.model_version >= 0 else None
        inputs = {t.name(): t.as_numpy() for t in self._inputs}
        return current_calls().submit(self.model_name, inputs, self._requested or None, version)


def _refuse_decoupled(decoupled: bool) -> None:
    if decoupled:
        raise TritonModelException("decoupled BLS calls are not supported by inferpack")


def _response(outputs: dict[str, Any]) -> InferenceResponse:
    return InferenceResponse([Tensor(name, array) for name, array in outputs.items()])


def _code_of(error: InferpackError) -> int:
    return {
        400: TritonError.INVALID_ARG,
        404: TritonError.NOT_FOUND,
        503: TritonError.UNAVAILABLE,
    }.get(error.http_status, TritonError.INTERNAL)


def get_input_tensor_by_name(inference_request: InferenceRequest, name: str) -> Tensor | None:
    return next((t for t in inference_request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(inference_response: InferenceResponse, name: str) -> Tensor | None:
    return next((t for t in inference_response.output_tensors() if t.name() == name), None)


def get_input_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((c for c in model_config.get("input", []) if c["name"] == name), None)


def get_output_config_by_name(model_config: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((c for c in model_config.get("output", []) if c["name"] == name), None)


def using_decoupled_model_transaction_policy(model_config: dict[str, Any]) -> bool:
    return bool(model_config.get("model_transaction_policy", {}).get("decoupled", False))


def triton_string_to_numpy(triton_type_string: str) -> type:
    return TRITON_STRING_TO_NUMPY[triton_type_string]


def triton_to_numpy_type(data_type: int) -> type | None:
    return _TYPE_NUMBERS.get(data_type)


def numpy_to_triton_type(data_type: Any) -> int | None:
    dtype = np.dtype(data_type)
    if dtype.kind in "OSU":
        return 13
    for number, numpy_type in _TYPE_NUMBERS.items():
        if np.dtype(numpy_type) == dtype:
            return number
    return None


def serialize_byte_tensor(input_tensor: npt.NDArray[Any]) -> npt.NDArray[np.uint8] | None:
    """The length-prefixed encoding of a BYTES tensor, as a flat uint8 array."""
    if input_tensor.size == 0:
        return None
    return np.frombuffer(_serialize(input_tensor), dtype=np.uint8)


def deserialize_bytes_tensor(encoded_tensor: bytes) -> npt.NDArray[np.object_]:
    return _deserialize(encoded_tensor, "tensor")


def is_model_ready(model_name: str, model_version: str = "") -> bool:
    return current_calls().ready(model_name, model_version or None)


def load_model(model_name: str, config: str = "", files: Any = None) -> None:
    if config or files:
        raise TritonModelException("load_model with a config or files is not supported")
    current_calls().load(model_name)


def unload_model(model_name: str, unload_dependents: bool = False) -> None:
    current_calls().unload(model_name)


class Logger:
    """Triton's model logger, writing to the server's log (logger ``inferpack.python_model``)."""

    INFO: ClassVar[int] = logging.INFO
    WARNING: ClassVar[int] = logging.WARNING
    ERROR: ClassVar[int] = logging.ERROR
    VERBOSE: ClassVar[int] = logging.DEBUG

    @staticmethod
    def log(message: str, level: int = logging.INFO) -> None:
        log.log(level, "%s", message)

    @staticmethod
    def log_info(message: str) -> None:
        log.info("%s", message)

    @staticmethod
    def log_warn(message: str) -> None:
        log.warning("%s", message)

    @staticmethod
    def log_error(message: str) -> None:
        log.error("%s", message)

    @staticmethod
    def log_verbose(message: str) -> None:
        log.debug("%s", message)


class LogLevel:
    INFO: ClassVar[int] = Logger.INFO
    WARNING: ClassVar[int] = Logger.WARNING
    ERROR: ClassVar[int] = Logger.ERROR
    VERBOSE: ClassVar[int] = Logger.VERBOSE


class ModelConfig:
    """The config ``auto_complete_config`` is given and returns (Triton's JSON shape)."""

    def __init__(self, model_config: dict[str, Any] | str) -> None:
        config = json.loads(model_config) if isinstance(model_config, str) else model_config
        self._config: dict[str, Any] = dict(config)
        self._config.setdefault("input", [])
        self._config.setdefault("output", [])

    def as_dict(self) -> dict[str, Any]:
        return self._config

    def set_max_batch_size(self, max_batch_size: int) -> None:
        current = self._config.get("max_batch_size", 0)
        if current not in (0, max_batch_size) and max_batch_size < current:
            raise ValueError(
                f"set_max_batch_size: {max_batch_size} is below the configured {current}"
            )
        self._config["max_batch_size"] = max_batch_size

    def set_dynamic_batching(self) -> None:
        self._config.setdefault("dynamic_batching", {})

    def add_input(self, input: dict[str, Any]) -> None:
        self._add("input", input)

    def add_output(self, output: dict[str, Any]) -> None:
        self._add("output", output)

    def set_model_transaction_policy(self, transaction_policy_dict: dict[str, Any]) -> None:
        self._config["model_transaction_policy"] = dict(transaction_policy_dict)

    def _add(self, kind: str, tensor: dict[str, Any]) -> None:
        """Add a tensor; one of the same name is accepted when its data_type and dims
        agree (the config may list it already), refused when they differ."""
        missing = [k for k in ("name", "data_type", "dims") if k not in tensor]
        if missing:
            raise ValueError(f"add_{kind}: {tensor!r} lacks {missing}")
        same = next((t for t in self._config[kind] if t["name"] == tensor["name"]), None)
        if same is None:
            self._config[kind].append(dict(tensor))
        elif same.get("data_type") != tensor["data_type"] or [
            int(d) for d in same.get("dims", [])
        ] != [int(d) for d in tensor["dims"]]:
            raise ValueError(
                f"add_{kind}: {tensor['name']!r} is in the config as {same!r}, not {tensor!r}"
            )
