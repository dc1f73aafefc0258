"""One cap on the request bytes in flight in a server, shared by REST and gRPC.

A request holds the size of its body from the moment it is admitted (before the body is
read, when the length is announced) until its response is encoded: decoding, queueing and
running all count. Past the cap a request is refused at the door (OverloadedError: 429 with
Retry-After, or RESOURCE_EXHAUSTED) instead of waiting in memory, so a burst of large
bodies cannot balloon the server (TEI refuses by cost the same way).

A request is always admitted while nothing else is in flight, so a cap below the body
limit never locks out a legal request. Reservations are taken and returned on the event
loop; a lock keeps the count exact should a worker thread ever take one.
"""

from __future__ import annotations

import threading
from types import TracebackType

from inferpack.errors import OverloadedError

# Seconds a refused client is told to wait: about the time a queue of large requests
# takes to drain on a CPU host, short enough that a retry soon finds room.
RETRY_AFTER_S = 1.0


class InflightBytes:
    """The bytes of request bodies admitted and not yet answered, capped at ``limit_bytes``."""

    def __init__(self, limit_bytes: int) -> None:
        if limit_bytes < 1:
            raise ValueError(f"limit_bytes must be positive, got {limit_bytes}")
        self.limit_bytes = limit_bytes
        self._bytes = 0
        self._lock = threading.Lock()

    @property
    def in_flight_bytes(self) -> int:
        return self._bytes

    def reserve(self, nbytes: int) -> Reservation:
        """Hold ``nbytes`` until the returned reservation is released (use it with ``with``).

        Raises OverloadedError when the cap would be passed and something else is in flight.
        """
        reservation = Reservation(self)
        reservation.grow_to(nbytes)
        return reservation

    def _add(self, nbytes: int, held: int = 0) -> None:
        """Count ``nbytes`` more for a reservation already holding ``held``."""
        with self._lock:
            others = self._bytes - held
            if nbytes > 0 and others and self._bytes + nbytes > self.limit_bytes:
                raise OverloadedError(
                    f"server overloaded: {self._bytes} bytes of requests in flight, another "
                    f"{nbytes} would pass the limit of {self.limit_bytes} bytes; retry later",
                    retry_after_s=RETRY_AFTER_S,
                )
            self._bytes += nbytes


class Reservation:
    """Bytes held in an InflightBytes; released once, by ``release`` or leaving ``with``."""

    def __init__(self, budget: InflightBytes) -> None:
        self._budget = budget
        self.nbytes = 0

    def grow_to(self, nbytes: int) -> None:
        """Hold ``nbytes`` in all (a body of unannounced length, once read); never shrinks.

        Raises OverloadedError (holding what it held before) when the cap would be passed.
        """
        if nbytes > self.nbytes:
            self._budget._add(nbytes - self.nbytes, held=self.nbytes)
            self.nbytes = nbytes

    def release(self) -> None:
        if self.nbytes:
            self._budget._add(-self.nbytes)
            self.nbytes = 0

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()
