from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from inferpack.config import ServerConfig
from tests.helpers import ServerThread, edit_model

# 1 MiB: small enough that the over-limit test sends little, large enough for small-cnn batches.
TEST_MAX_REQUEST_BYTES = 1024 * 1024


def _poison_model(repo: Path) -> None:
    """A TorchScript model that raises on a poisoned row: any value below -1000."""
    import torch

    class Poison(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if bool((x < -1000.0).any()):
                raise RuntimeError("poisoned input: a value below -1000")
            return x * 2.0

    folder = repo / "poison"
    (folder / "1").mkdir(parents=True)
    torch.jit.script(Poison()).save(str(folder / "1" / "model.pt"))
    config = {
        "name": "poison",
        "platform": "torchscript",
        "max_batch_size": 4,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [4]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [4]}],
        # A long delay makes batch formation deterministic: a batch leaves when 4 rows wait.
        "dynamic_batching": {"max_queue_delay_us": 3_000_000},
        "instances": {"count": 1, "device": "cpu"},
    }
    (folder / "model.yaml").write_text(yaml.safe_dump(config))


IDENTITY_DATATYPES = ("BOOL", "UINT8", "INT8", "INT16", "INT32", "INT64", "FP16", "FP32", "FP64")


def _identity_model(repo: Path) -> None:
    """TorchScript identity over one input per datatype torch can hold."""
    import torch

    class Identity(torch.nn.Module):
        def forward(
            self,
            a: torch.Tensor,
            b: torch.Tensor,
            c: torch.Tensor,
            d: torch.Tensor,
            e: torch.Tensor,
            f: torch.Tensor,
            g: torch.Tensor,
            h: torch.Tensor,
            i: torch.Tensor,
        ) -> tuple[
            torch.Tensor,
            torch.Tensor,
            torch.Tensor,
            torch.Tensor,
            torch.Tensor,
            torch.Tensor,
            torch.Tensor,
            torch.Tensor,
            torch.Tensor,
        ]:
            return (
                a.clone(),
                b.clone(),
                c.clone(),
                d.clone(),
                e.clone(),
                f.clone(),
                g.clone(),
                h.clone(),
                i.clone(),
            )

    folder = repo / "identity"
    (folder / "1").mkdir(parents=True)
    torch.jit.script(Identity()).save(str(folder / "1" / "model.pt"))
    names = "abcdefghi"
    config = {
        "name": "identity",
        "platform": "torchscript",
        "max_batch_size": 8,
        "inputs": [
            {"name": f"in_{n}", "datatype": t, "shape": [-1]}
            for n, t in zip(names, IDENTITY_DATATYPES, strict=True)
        ],
        "outputs": [
            {"name": f"out_{n}", "datatype": t, "shape": [-1]}
            for n, t in zip(names, IDENTITY_DATATYPES, strict=True)
        ],
        "dynamic_batching": {"max_queue_delay_us": 1000},
        "instances": {"count": 2, "device": "cpu"},
    }
    (folder / "model.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inferpack.repository.init import init_repository

    repo = tmp_path_factory.mktemp("repo")
    init_repository(repo, ["tiny-mlp", "small-cnn", "sleep"], seed=0)
    edit_model(
        repo,
        "tiny-mlp",
        "tiny-mlp-b16",
        max_batch_size=16,
        dynamic_batching={"max_queue_delay_us": 20_000},
    )
    edit_model(
        repo,
        "sleep",
        "slow",
        workload_options={"sleep_ms": 300},
        max_batch_size=1,
        dynamic_batching={"max_queue_size": 2},
    )
    _poison_model(repo)
    _identity_model(repo)
    return repo


@pytest.fixture(scope="session")
def server(model_repo: Path) -> Iterator[ServerThread]:
    config = ServerConfig(
        str(model_repo), http_port=0, grpc_port=0, max_request_bytes=TEST_MAX_REQUEST_BYTES
    )
    thread = ServerThread(config).start()
    yield thread
    thread.stop()
