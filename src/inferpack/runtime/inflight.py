"""One cap on the request bytes in flight in a server, shared by REST and gRPC.

A request holds the size of its body from the moment it is admitted (before the body is
read, when the length is announced; as it arrives, when it is not) until its response is
encoded: decoding, queueing and running all count. What serving a request makes beyond its
body counts too, from before it is allocated: an upload's decoded pixels while it is
decoded (a 143 KB PNG can decode to hundreds of MB) and its model rows until the answer
(:mod:`inferpack.processing.image`). Past the cap a request is refused (OverloadedError:
429 with Retry-After, or RESOURCE_EXHAUSTED) instead of waiting in memory, so a burst of
large bodies or images cannot balloon the server (TEI refuses by cost the same way).

A request is always admitted while nothing else is in flight, so a cap below the body
limit never locks out a legal request: a refusal is always "retry later" (429), never
"too large" (413, which the per-request limits give). Reservations are taken on the event
loop and grown from the processing pool's threads (one per image, in parallel): a lock
keeps the count exact, and a reservation released (its request answered or cancelled)
refuses to grow, so a decode still running then cannot leave bytes counted forever.
"""

from __future__ import annotations

import threading
from types import TracebackType

from inferpack.errors import OverloadedError, UnavailableError

# Seconds a refused client is told to wait: about the time a queue of large requests
# takes to drain on a CPU host, short enough that a retry soon finds room.
RETRY_AFTER_S = 1.0


class InflightBytes:
    """The bytes that requests admitted and not yet answered hold (their bodies, their
    decoded images), capped at ``limit_bytes``."""

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

    def _add(self, nbytes: int, held: int) -> None:
        """Count ``nbytes`` more for a reservation already holding ``held``; the caller
        holds the lock."""
        others = self._bytes - held
        if nbytes > 0 and others and self._bytes + nbytes > self.limit_bytes:
            raise OverloadedError(
                f"server overloaded: {self._bytes} bytes of requests in flight, another "
                f"{nbytes} would pass the limit of {self.limit_bytes} bytes; retry later",
                retry_after_s=RETRY_AFTER_S,
            )
        self._bytes += nbytes


class Reservation:
    """Bytes held in an InflightBytes; released once, by ``release`` or leaving ``with``.
    Safe to grow from several threads at once."""

    def __init__(self, budget: InflightBytes) -> None:
        self._budget = budget
        self.nbytes = 0
        self._released = False

    def grow_to(self, nbytes: int) -> None:
        """Hold ``nbytes`` in all (a body of unannounced length, as it is read); never shrinks.

        Raises OverloadedError (holding what it held before) when the cap would be passed.
        """
        with self._budget._lock:
            self._check_open()
            if nbytes > self.nbytes:
                self._budget._add(nbytes - self.nbytes, held=self.nbytes)
                self.nbytes = nbytes

    def add(self, nbytes: int) -> None:
        """Hold ``nbytes`` more (what serving the request is about to allocate: decoded
        images), or with a negative ``nbytes`` give that much back (what it freed).

        Raises OverloadedError (holding what it held before) when the cap would be passed.
        """
        with self._budget._lock:
            if nbytes < 0:
                given = min(-nbytes, self.nbytes)
                self._budget._bytes -= given
                self.nbytes -= given
                return
            self._check_open()
            self._budget._add(nbytes, held=self.nbytes)
            self.nbytes += nbytes

    def _check_open(self) -> None:
        if self._released:
            raise UnavailableError("the request was answered or cancelled: nothing more to hold")

    def release(self) -> None:
        with self._budget._lock:
            self._released = True
            self._budget._bytes -= self.nbytes
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
