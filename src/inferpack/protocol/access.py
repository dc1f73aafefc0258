"""Who may call the repository API (index, load, unload) over REST and gRPC.

The repository API changes what the server holds in memory and makes it read the model
store (an object-store listing per index call), so it is not left open to whoever can
reach the data port. The policy, decided once from the server's settings:

    --repository-api-token set    every call carries ``Authorization: Bearer <token>``
                                  (REST header; gRPC metadata ``authorization``);
                                  missing or wrong: 401 / UNAUTHENTICATED
    no token, loopback host       open, as before: only processes on this host reach it
    no token, any other host      refused: 403 / PERMISSION_DENIED, naming the flag

Refusing by default off loopback (rather than opening with a warning) is deliberate: a
server bound to 0.0.0.0 in a cluster is reachable by every pod, and an operator who wants
the API there states it with a token. Inference, health and metadata stay open.
"""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass, field

from inferpack.errors import PermissionDeniedError, UnauthenticatedError

TOKEN_FLAG = "--repository-api-token"
_BEARER = "bearer "


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server reachable from this machine only."""
    if host.strip("[]").lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # another host name: it may resolve to any address
        return False


@dataclass(frozen=True, slots=True)
class RepositoryAccess:
    """The repository API policy of one server (module docstring)."""

    host: str
    token: str | None = field(default=None, repr=False)

    def check(self, authorization: str | None) -> None:
        """Raise UnauthenticatedError / PermissionDeniedError unless the call may proceed.

        ``authorization`` is the raw ``Authorization`` header or metadata value, if any."""
        if self.token is None:
            if is_loopback(self.host):
                return
            raise PermissionDeniedError(
                f"the repository API is disabled on {self.host}, which is not a loopback "
                f"address: start the server with {TOKEN_FLAG} (or the environment variable "
                "INFERPACK_REPOSITORY_API_TOKEN) and send 'Authorization: Bearer <token>'"
            )
        given = authorization or ""
        if not given.lower().startswith(_BEARER):
            raise UnauthenticatedError(
                "the repository API needs 'Authorization: Bearer <token>' "
                f"(the token given to {TOKEN_FLAG})"
            )
        supplied = given[len(_BEARER) :].strip().encode()
        if not hmac.compare_digest(supplied, self.token.encode()):
            raise UnauthenticatedError("the repository API token is wrong")
