"""Request bodies read under the size limit, counted in flight as they arrive.

A body announced by Content-Length is reserved whole when the request is admitted. A
chunked body (no Content-Length) announces nothing, so it is counted chunk by chunk as it
is read (:meth:`~inferpack.runtime.inflight.Reservation.grow_to`): the in-flight cap
refuses it (429) as soon as it would pass, instead of after the whole body sits in memory
(aiohttp's ``request.read()`` gives no hook between chunks).
"""

from __future__ import annotations

from aiohttp import web

from inferpack.errors import PayloadTooLargeError
from inferpack.runtime.inflight import Reservation

# The body once read: a handler may look at it twice (an upload that turns out to be JSON
# tensors), and the stream can be read only once.
_BODY = web.RequestKey("inferpack_body", bytes)


async def read_counted_body(
    request: web.Request, limit_bytes: int, reservation: Reservation | None = None
) -> bytes:
    """The whole body; PayloadTooLargeError past ``limit_bytes`` (announced or as read),
    OverloadedError when ``reservation`` cannot grow to what has arrived."""
    cached: bytes | None = request.get(_BODY)
    if cached is not None:
        return cached
    if request.content_length is not None and request.content_length > limit_bytes:
        raise PayloadTooLargeError(
            f"request body of {request.content_length} bytes exceeds the limit of "
            f"{limit_bytes} bytes"
        )
    chunks: list[bytes] = []
    total = 0
    while chunk := await request.content.readany():
        total += len(chunk)
        if total > limit_bytes:
            raise PayloadTooLargeError(f"request body exceeds the limit of {limit_bytes} bytes")
        if reservation is not None:
            reservation.grow_to(total)
        chunks.append(chunk)
    body = b"".join(chunks)
    request[_BODY] = body
    return body
