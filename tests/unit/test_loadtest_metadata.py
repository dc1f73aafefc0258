"""How loadtest names a metadata failure (no sockets: gRPC core's and servers' words)."""

from __future__ import annotations

import json

import pytest

from inferpack.errors import NotFoundError, UnavailableError
from inferpack.loadtest.metadata import grpc_cause, http_failure, unreachable

REFUSED = (
    "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: "
    "Failed to connect to remote host: Connection refused"
)
UNRESOLVED = (
    "errors resolving nohost.invalid:5: [field:hostname lookup error:address lookup failed "
    "for nohost.invalid:5: Domain name not found]"
)


@pytest.mark.parametrize(
    ("details", "cause"), [(REFUSED, "connection refused"), (UNRESOLVED, "domain name not found")]
)
def test_grpc_core_failures_are_named_by_their_cause(details: str, cause: str) -> None:
    assert unreachable(details)
    assert grpc_cause(details) == cause


@pytest.mark.parametrize(
    "details",
    ["model 'm' is not ready: LOADING", "server is shutting down", "model.yaml: inputs: missing"],
)
def test_a_servers_own_unavailable_is_not_called_unreachable(details: str) -> None:
    assert not unreachable(details)


def testhttp_failures_carry_the_servers_words() -> None:
    body = json.dumps({"error": "Request for unknown model: 'm' is not found"}).encode()
    missing = http_failure("http://h:1", "m", 404, body)
    assert isinstance(missing, NotFoundError)
    assert (
        str(missing)
        == "model 'm' not found on http://h:1: Request for unknown model: 'm' is not found"
    )
    loading = http_failure("http://h:1", "m", 503, b'{"error": "model m is loading"}')
    assert isinstance(loading, UnavailableError)
    assert str(loading) == "http://h:1: metadata of model 'm': HTTP 503: model m is loading"
    assert "HTTP 502: <html>" in str(http_failure("http://h:1", "m", 502, b"<html>bad gateway"))
