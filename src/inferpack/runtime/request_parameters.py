"""The request parameters the runtime acts on (KServe v2 / Triton request ``parameters``).

- ``timeout``: microseconds (Triton's unit), a non-negative integer; absent or 0 means no
  timeout (as in Triton). The whole request (waiting for its model to load, queueing,
  running) must be answered within it, else DeadlineExceededError (504 / DEADLINE_EXCEEDED).
  A request still queued when its deadline passes is never run.
- ``priority``, ``sequence_id``, ``sequence_start``, ``sequence_end``: Triton scheduling
  options inferpack does not implement. Their defaults (which tritonclient may send) are
  accepted; any other value is refused (400) rather than silently ignored.

Other parameters (``binary_data_output``, ...) belong to the protocol adapters.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from inferpack.errors import DeadlineExceededError, InvalidInputError

# Parameter -> (its accepted defaults, the feature inferpack lacks).
_UNSUPPORTED: dict[str, tuple[tuple[object, ...], str]] = {
    "priority": ((0,), "priority levels"),
    "sequence_id": ((0, ""), "sequence batcher"),
    "sequence_start": ((False,), "sequence batcher"),
    "sequence_end": ((False,), "sequence batcher"),
}


def request_timeout_us(parameters: Mapping[str, object]) -> int | None:
    """Check the parameters above; return the timeout in microseconds (None: no timeout).

    Raises InvalidInputError naming the parameter for a malformed timeout or an unsupported
    scheduling option."""
    for name, (defaults, feature) in _UNSUPPORTED.items():
        value = parameters.get(name)
        if name in parameters and not any(_same(value, d) for d in defaults):
            raise InvalidInputError(
                f"request parameter {name}={value!r} is not supported: inferpack has no {feature}"
            )
    timeout = parameters.get("timeout")
    if timeout is None:
        return None
    if isinstance(timeout, bool) or not isinstance(timeout, int) or timeout < 0:
        raise InvalidInputError(
            f"request parameter timeout={timeout!r} must be a non-negative integer (microseconds)"
        )
    return timeout or None


def _same(value: object, default: object) -> bool:
    """Equal and of the same type (so that priority=False or sequence_start=0 is refused)."""
    return type(value) is type(default) and value == default


@asynccontextmanager
async def request_deadline(timeout_us: int | None, model_name: str) -> AsyncIterator[float | None]:
    """Bound the enclosed work by ``timeout_us``; yield the deadline in the loop's clock.

    When the deadline passes first, the work is cancelled and DeadlineExceededError naming
    the timeout is raised; a DeadlineExceededError from inside (the batcher's) gets the same
    message. Without a timeout, yield None and bound nothing."""
    if timeout_us is None:
        yield None
        return
    deadline_s = asyncio.get_running_loop().time() + timeout_us / 1e6
    timeout = asyncio.timeout_at(deadline_s)
    try:
        async with timeout:
            yield deadline_s
    except (TimeoutError, DeadlineExceededError) as error:
        if isinstance(error, TimeoutError) and not timeout.expired():
            raise  # not ours
        raise DeadlineExceededError(
            f"model {model_name!r}: the request's timeout of {timeout_us} us passed "
            "before it was answered"
        ) from error
