"""A model's metadata from the server under test, and when it cannot be had, why.

A load test starts by asking the server for each model's metadata (REST
``GET /v2/models/{m}`` or gRPC ModelMetadata): it shapes the payloads and proves the
server is there. A failure is named by its cause, since each asks for a different fix:

    the server cannot be reached       UnavailableError  "cannot reach URL: connection refused"
    the server does not know the model NotFoundError     "model 'm' not found on URL: ..."
    the server answered another error  UnavailableError  "URL: metadata of model 'm': CODE: ..."
    no answer within the timeout       UnavailableError  "URL: no answer ... within 10 s"
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from typing import Any

from inferpack.errors import InferpackError, NotFoundError, UnavailableError

METADATA_TIMEOUT_S = 10.0
# How gRPC core words a call that never reached a server (connection refused, name not
# resolved, connection lost): an UNAVAILABLE with these details did not come from the server.
_UNREACHABLE = (
    "failed to connect to all addresses",
    "errors resolving",
    "dns resolution failed",
    "connections to all backends failing",
    "connection refused",
    "connection reset",
    "socket closed",
    "broken pipe",
)


def fetch_metadata(url: str, transport: str, model: str) -> dict[str, Any]:
    """``{"inputs": [{"name", "datatype", "shape"}, ...]}`` of ``model`` on the server at
    ``url`` (``grpc://host:port`` for gRPC, else ``http://host:port``)."""
    if transport == "grpc":
        return _grpc_metadata(url, model)
    return _http_metadata(url, model)


def _http_metadata(url: str, model: str) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"{url}/v2/models/{model}", timeout=METADATA_TIMEOUT_S) as r:
            body = r.read()
    except urllib.error.HTTPError as error:
        raise http_failure(url, model, error.code, error.read()) from None
    except urllib.error.URLError as error:
        raise UnavailableError(f"cannot reach {url}: {_os_cause(error.reason)}") from None
    except TimeoutError:
        raise _no_answer(url, model) from None
    except (OSError, http.client.HTTPException) as error:  # reset, or not an HTTP server
        raise UnavailableError(f"cannot reach {url}: {_os_cause(error)}") from None
    try:
        data: dict[str, Any] = json.loads(body)
    except ValueError:
        raise UnavailableError(
            f"{url}: metadata of model {model!r} is not JSON: is it a KServe v2 server?"
        ) from None
    return data


def http_failure(url: str, model: str, status: int, body: bytes) -> InferpackError:
    """The server's own words (its ``{"error": ...}``) beside the status."""
    try:
        said = str(json.loads(body).get("error", ""))
    except (ValueError, AttributeError):
        said = body.decode("utf-8", "replace")[:200]
    if status == 404:
        return NotFoundError(f"model {model!r} not found on {url}: {said}".rstrip(": "))
    return UnavailableError(f"{url}: metadata of model {model!r}: HTTP {status}: {said}")


def _os_cause(reason: object) -> str:
    """``connection refused`` rather than ``[Errno 111] Connection refused``."""
    text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
    return _lower_first(text or type(reason).__name__)


def _grpc_metadata(url: str, model: str) -> dict[str, Any]:
    import grpc

    from inferpack.protocol.proto import inference_pb2 as pb

    with grpc.insecure_channel(url.removeprefix("grpc://")) as channel:
        call = channel.unary_unary(
            "/inference.GRPCInferenceService/ModelMetadata",
            request_serializer=pb.ModelMetadataRequest.SerializeToString,
            response_deserializer=pb.ModelMetadataResponse.FromString,
        )
        try:
            reply = call(pb.ModelMetadataRequest(name=model), timeout=METADATA_TIMEOUT_S)
        except grpc.RpcError as error:
            raise _grpc_failure(url, model, error) from None
    return {
        "inputs": [
            {"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in reply.inputs
        ]
    }


def _grpc_failure(url: str, model: str, error: Any) -> InferpackError:
    """``error``: the grpc.RpcError raised, a grpc.Call too."""
    import grpc

    code, details = error.code(), error.details() or ""
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFoundError(f"model {model!r} not found on {url}: {details}".rstrip(": "))
    if code == grpc.StatusCode.UNAVAILABLE and unreachable(details):
        return UnavailableError(f"cannot reach {url}: {grpc_cause(details)}")
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return _no_answer(url, model)
    return UnavailableError(f"{url}: metadata of model {model!r}: {code.name}: {details}")


def unreachable(details: str) -> bool:
    """Whether an UNAVAILABLE's details say the call never reached a server."""
    lowered = details.lower()
    return any(words in lowered for words in _UNREACHABLE)


def grpc_cause(details: str) -> str:
    """The last clause of gRPC core's account: ``failed to connect to all addresses; last
    error: UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to remote host: Connection refused``
    is ``connection refused``."""
    last = details.rsplit(": ", 1)[-1].strip(" []")
    return _lower_first(last or details)


def _no_answer(url: str, model: str) -> UnavailableError:
    return UnavailableError(
        f"{url}: no answer to the metadata of model {model!r} within {METADATA_TIMEOUT_S:g} s"
    )


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]
