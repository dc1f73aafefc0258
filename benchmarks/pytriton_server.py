"""NVIDIA Triton (through PyTriton) serving two models, to check `inferpack loadtest` against
another KServe v2 server. Runs with a separate venv that has nvidia-pytriton (not the
project's venv):

    /tmp/pyt/bin/python benchmarks/pytriton_server.py --http-port 8000 --grpc-port 8001

Models:
  sleep20  FP32 input "input" shape (-1,) -> "output" (same tensor); sleeps 20 ms per call;
           batching disabled, one instance: a known-answer model (concurrency C gives
           ~50 req/s whatever C, p50 ~ C x 20 ms).
  tiny     FP32 [16] -> [4], a fixed random linear layer (seed 0) in numpy; max_batch_size
           64 with dynamic batching.

HTTP and gRPC bind 127.0.0.1 only; metrics are disabled; no endpoint is restricted (PyTriton
0.7 restricts statistics by default, and perf_analyzer reads them). Prints "ready" once serving and
stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import sysconfig
import threading
import time
from collections.abc import Callable

import numpy as np
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

SLEEP_S = 0.020
_RNG = np.random.default_rng(0)
WEIGHT = _RNG.standard_normal((16, 4)).astype(np.float32)
BIAS = _RNG.standard_normal(4).astype(np.float32)


def _use_this_libpython() -> None:
    """Make Triton's Python backend stub load this interpreter's libpython.

    The stub links ``libpython3.X.so.1.0`` by soname; on Debian 12 the loader finds the
    system's 3.11.2 while the stub runs this venv's stdlib (pyenv 3.11.7 here), and the
    mismatch breaks model loading (``'_thread.RLock' object has no attribute
    '_recursion_count'`` from multiprocessing.resource_tracker). PyTriton keeps an existing
    LD_LIBRARY_PATH for tritonserver and its stubs, so put this interpreter's LIBDIR first.
    """
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME")
    if libdir and soname and os.path.exists(os.path.join(libdir, soname)):
        current = os.environ.get("LD_LIBRARY_PATH", "")
        os.environ["LD_LIBRARY_PATH"] = libdir + (":" + current if current else "")


def sleep20(requests: list) -> list:  # type: ignore[type-arg]
    """Unbatched model: one call per request (no dynamic batcher), 20 ms each."""
    time.sleep(SLEEP_S)
    return [{"output": np.asarray(request["input"], dtype=np.float32)} for request in requests]


@batch
def tiny(input: np.ndarray) -> dict[str, np.ndarray]:
    return {"output": (input.astype(np.float32) @ WEIGHT + BIAS).astype(np.float32)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--log-verbose", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")

    serve(args.http_port, args.grpc_port, _bind_models, args.log_verbose)


def _bind_models(triton: Triton) -> None:
    triton.bind(
        model_name="sleep20",
        infer_func=sleep20,
        inputs=[Tensor(name="input", dtype=np.float32, shape=(-1,))],
        outputs=[Tensor(name="output", dtype=np.float32, shape=(-1,))],
        config=ModelConfig(batching=False),
    )
    triton.bind(
        model_name="tiny",
        infer_func=tiny,
        inputs=[Tensor(name="input", dtype=np.float32, shape=(16,))],
        outputs=[Tensor(name="output", dtype=np.float32, shape=(4,))],
        config=ModelConfig(batching=True, max_batch_size=64, batcher=DynamicBatcher()),
    )


def serve(
    http_port: int, grpc_port: int, bind: Callable[[Triton], None], log_verbose: int = 0
) -> None:
    """Triton on 127.0.0.1 (no metrics) with the models ``bind`` adds; prints "ready" once
    serving and returns after SIGTERM or SIGINT (exits 1 if Triton dies first)."""
    config = TritonConfig(
        http_address="127.0.0.1",
        http_port=http_port,
        grpc_address="127.0.0.1",
        grpc_port=grpc_port,
        allow_metrics=False,
        allow_gpu_metrics=False,
        allow_cpu_metrics=False,
        log_verbose=log_verbose,
        exit_timeout_secs=5,
    )
    _use_this_libpython()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    # Statistics and the repository API open (127.0.0.1 only): perf_analyzer reads them.
    triton = Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=[]))
    try:
        bind(triton)
        triton.run()
        print("ready", flush=True)
        while not stop.is_set():
            if not triton.is_alive():
                print("triton is no longer alive", file=sys.stderr, flush=True)
                sys.exit(1)
            stop.wait(1.0)
    finally:
        triton.stop()
    print("stopped", flush=True)


if __name__ == "__main__":
    main()
