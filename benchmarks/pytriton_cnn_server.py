"""NVIDIA Triton (through PyTriton) serving one TorchScript file: the other side of
benchmarks/json_vs_pytriton.py. Runs with a separate venv that has nvidia-pytriton and
torch (not the project's venv):

    /tmp/pyt/bin/python benchmarks/pytriton_cnn_server.py --model model.pt \
        --http-port 8000 --grpc-port 8001 [--max-batch 32] [--delay-us 2000]

One model ``cnn``: FP32 input "input" [3, 64, 64] -> "logits" [10], dynamic batching up to
``--max-batch`` with ``--delay-us`` queue delay, one instance, one torch thread. Prints
"ready" once serving and stops on SIGTERM.
"""

from __future__ import annotations

import argparse
import logging

import numpy as np
import torch
from pytriton.decorators import batch
from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
from pytriton.triton import Triton

from benchmarks.pytriton_server import serve


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", required=True)
    parser.add_argument("--http-port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, required=True)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--delay-us", type=int, default=2000)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    module = torch.jit.load(args.model).eval()

    @batch
    def cnn(input: np.ndarray) -> dict[str, np.ndarray]:
        with torch.inference_mode():
            return {"logits": module(torch.from_numpy(input)).numpy()}

    def bind(triton: Triton) -> None:
        triton.bind(
            model_name="cnn",
            infer_func=cnn,
            inputs=[Tensor(name="input", dtype=np.float32, shape=(3, 64, 64))],
            outputs=[Tensor(name="logits", dtype=np.float32, shape=(10,))],
            config=ModelConfig(
                batching=True,
                max_batch_size=args.max_batch,
                batcher=DynamicBatcher(max_queue_delay_microseconds=args.delay_us),
            ),
        )

    serve(args.http_port, args.grpc_port, bind)


if __name__ == "__main__":
    main()
