"""NVIDIA Triton (through PyTriton) serving one TorchScript file: the other side of
benchmarks/json_vs_pytriton.py and benchmarks/vs_triton.py. Runs with a separate venv
that has nvidia-pytriton and torch (not the project's venv):

    /tmp/pyt/bin/python benchmarks/pytriton_cnn_server.py --model model.pt \
        --http-port 8000 --grpc-port 8001 [--max-batch 32] [--delay-us 2000] \
        [--name cnn] [--input input:3,64,64] [--output logits:10] [--instances 1] \
        [--threads 1]

One model (default ``cnn``: FP32 input "input" [3, 64, 64] -> "logits" [10]), dynamic
batching up to ``--max-batch`` with ``--delay-us`` queue delay, ``--instances`` copies of
the module (PyTriton binds one inference function per instance), ``--threads`` torch
threads (0: torch's default, every core). Prints "ready" once serving and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

import numpy as np
import torch
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton

from benchmarks.pytriton_server import serve


def _tensor(spec: str) -> tuple[str, tuple[int, ...]]:
    """``name:3,64,64`` -> ("name", (3, 64, 64))."""
    name, dims = spec.split(":")
    return name, tuple(int(d) for d in dims.split(","))


def _infer_function(module: torch.jit.ScriptModule, input_name: str, output_name: str
                    ) -> Callable[..., dict[str, np.ndarray]]:  # fmt: skip
    @batch  # type: ignore[misc]
    def infer(**inputs: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return {output_name: module(torch.from_numpy(inputs[input_name])).numpy()}

    return infer  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--delay-us", type=int, default=2000)
    parser.add_argument("--name", default="cnn")
    parser.add_argument("--input", default="input:3,64,64")
    parser.add_argument("--output", default="logits:10")
    parser.add_argument("--instances", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    (input_name, input_shape), (output_name, output_shape) = map(_tensor, (args.input, args.output))
    functions = [
        _infer_function(torch.jit.load(args.model).eval(), input_name, output_name)
        for _ in range(args.instances)
    ]

    def bind(triton: Triton) -> None:
        triton.bind(
            model_name=args.name,
            infer_func=functions if len(functions) > 1 else functions[0],
            inputs=[Tensor(name=input_name, dtype=np.float32, shape=input_shape)],
            outputs=[Tensor(name=output_name, dtype=np.float32, shape=output_shape)],
            config=ModelConfig(
                batching=True,
                max_batch_size=args.max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.delay_us),
            ),
        )

    serve(args.http_port, args.grpc_port, bind)


if __name__ == "__main__":
    main()
