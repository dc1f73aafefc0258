"""The repository API policy: open on loopback, refused elsewhere, a token when given."""

from __future__ import annotations

import pytest

from inferpack.errors import PermissionDeniedError, UnauthenticatedError
from inferpack.protocol.access import RepositoryAccess, is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("", False),
        ("10.0.0.7", False),
        ("inference.internal", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


@pytest.mark.parametrize("authorization", [None, "", "Bearer anything"])
def test_without_a_token_loopback_is_open(authorization: str | None) -> None:
    RepositoryAccess("127.0.0.1").check(authorization)


@pytest.mark.parametrize("authorization", [None, "Bearer anything"])
def test_without_a_token_other_hosts_are_refused_naming_the_flag(
    authorization: str | None,
) -> None:
    with pytest.raises(PermissionDeniedError, match="--repository-api-token") as caught:
        RepositoryAccess("0.0.0.0").check(authorization)
    assert caught.value.http_status == 403 and caught.value.grpc_code == "PERMISSION_DENIED"


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
def test_with_a_token_every_host_needs_it(host: str) -> None:
    access = RepositoryAccess(host, "s3cret")
    access.check("Bearer s3cret")
    access.check("bearer s3cret")  # the scheme is case-insensitive (RFC 7235)
    for wrong in (None, "", "s3cret", "Basic s3cret", "Bearer s3cre", "Bearer s3cret2"):
        with pytest.raises(UnauthenticatedError) as caught:
            access.check(wrong)
        assert caught.value.http_status == 401 and caught.value.grpc_code == "UNAUTHENTICATED"


def test_the_token_never_shows_in_repr() -> None:
    assert "s3cret" not in repr(RepositoryAccess("0.0.0.0", "s3cret"))
