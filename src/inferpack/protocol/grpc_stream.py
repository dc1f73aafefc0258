"""``ModelStreamInfer``'s relay, for the server and the router: requests in, answers out.

Each request of the stream is answered by its own task, so requests run concurrently (and
batch together); answers leave in completion order. At most ``window`` requests are held
at a time, answered or not: a client that writes faster than it reads is slowed (reading
stops), not buffered. The stream ends once the client has closed its side and every
request is answered.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

Request = TypeVar("Request")
Answer = TypeVar("Answer")
# Requests of one stream answered but not yet sent, plus those running: bounds memory when a
# client writes faster than it reads (reading stops until answers drain). Generous, as the
# model queues (default 1024 requests) refuse far earlier under a real overload.
STREAM_WINDOW = 1024


async def relay_stream(
    requests: AsyncIterator[Request],
    answer: Callable[[Request], Awaitable[Answer]],
    window: int = STREAM_WINDOW,
) -> AsyncIterator[Answer]:
    """Yield ``answer(request)`` for each request; ``answer`` turns failures into answers
    (one that raises ends the stream with its error)."""
    answers: asyncio.Queue[Answer | None] = asyncio.Queue()  # None: the stream has ended
    slots = asyncio.Semaphore(window)
    reader = asyncio.create_task(_read(requests, answer, answers, slots))
    try:
        while (item := await answers.get()) is not None:
            yield item
            slots.release()
        await reader  # re-raises a failure of the request side
    finally:
        reader.cancel()


async def _read(
    requests: AsyncIterator[Request],
    answer: Callable[[Request], Awaitable[Answer]],
    answers: asyncio.Queue[Answer | None],
    slots: asyncio.Semaphore,
) -> None:
    try:
        async with asyncio.TaskGroup() as group:
            async for request in requests:
                await slots.acquire()
                group.create_task(_answer(request, answer, answers))
    finally:
        answers.put_nowait(None)


async def _answer(
    request: Request,
    answer: Callable[[Request], Awaitable[Answer]],
    answers: asyncio.Queue[Answer | None],
) -> None:
    answers.put_nowait(await answer(request))
