"""Run one of the vendored Triton example clients unmodified against another address.

    python run_client.py CLIENT.py HOST:PORT

The clients hard-code ``localhost:8000``; this points tritonclient's HTTP client there
instead, then runs the client file as ``__main__`` (its exit status is the result).
"""

from __future__ import annotations

import runpy
import sys

import tritonclient.http as httpclient

client_file, address = sys.argv[1], sys.argv[2]
_init = httpclient.InferenceServerClient.__init__


def _redirected(self: object, url: str, *args: object, **kwargs: object) -> None:
    _init(self, address if url == "localhost:8000" else url, *args, **kwargs)  # type: ignore[arg-type]


httpclient.InferenceServerClient.__init__ = _redirected  # type: ignore[method-assign]
sys.argv = [client_file]
runpy.run_path(client_file, run_name="__main__")
