"""What both kinds of python instance (thread, process) give the server beyond their own
``run_requests``: the :class:`~inferpack.backends.base.Backend` surface."""

from __future__ import annotations

from inferpack.backends.python.instances import PythonRequest, Result
from inferpack.errors import InferpackError
from inferpack.types import Tensor


class PythonBackendBase:
    device: str
    _memory_bytes: int = 0

    @property
    def memory_bytes(self) -> int:
        return self._memory_bytes

    def run_requests(self, requests: list[PythonRequest]) -> list[Result]:
        raise NotImplementedError

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """One request alone (the Backend interface); its error raised."""
        result = self.run_requests([PythonRequest(inputs)])[0]
        if isinstance(result, InferpackError):
            raise result
        return result

    def warm_up(self, inputs: dict[str, Tensor]) -> None:
        """Nothing: a python model's inputs need not be zeros it accepts (Triton does not
        warm python models up either, unless a config asks)."""
