"""Image uploads through the real server: multipart, raw bodies and KServe v2 BYTES (the real
tritonclient), answered as top-k, Triton classification strings and pose keypoints; every
answer checked against the tensor path on the same decoded pixels."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import requests
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from tritonclient.utils import InferenceServerException

from inferpack.config import ServerConfig
from inferpack.config.model_config import parse_model_config
from inferpack.processing.image import image_tensor
from inferpack.processing.pipeline import image_preprocess
from tests.helpers import ServerThread
from tests.integration.cli_server import inferpack

LABELS = [f"class {i}" for i in range(10)]
MAX_BATCH = 4


def _image(width: int, height: int, seed: int, fmt: str = "JPEG") -> bytes:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(width: int, height: int) -> bytes:
    """A PNG of a few dozen bytes that declares width x height (one tiny IDAT, no pixels
    to speak of): what a decompression bomb looks like before it is decoded."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b"")
    )


def _pose_model(repo: Path) -> None:
    """TorchScript 'pose' model: every heatmap channel is the input's red channel pooled
    to 8x8, so each keypoint lands on the brightest red spot of the image."""
    import torch

    class Pose(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            red = torch.nn.functional.avg_pool2d(x[:, :1], 8)
            return red.repeat(1, 38, 1, 1), red.repeat(1, 19, 1, 1)

    folder = repo / "pose"
    (folder / "1").mkdir(parents=True)
    torch.jit.script(Pose()).save(str(folder / "1" / "model.pt"))
    config = {
        "name": "pose",
        "platform": "torchscript",
        "max_batch_size": MAX_BATCH,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [3, 64, 64]}],
        "outputs": [
            {"name": "pafs", "datatype": "FP32", "shape": [38, 8, 8]},
            {"name": "heatmaps", "datatype": "FP32", "shape": [19, 8, 8]},
        ],
        "dynamic_batching": {"max_queue_delay_us": 0},
        "preprocess": {"image": {"resize": [64, 64]}},
        "postprocess": {"pose": {"heatmaps": "heatmaps", "pafs": "pafs", "threshold": 0.05}},
    }
    (folder / "model.yaml").write_text(yaml.safe_dump(config))


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from inferpack.repository.init import init_repository

    root = tmp_path_factory.mktemp("uploads")
    init_repository(root, ["small-cnn"], seed=3)
    config = yaml.safe_load((root / "small-cnn" / "model.yaml").read_text())
    config["max_batch_size"] = MAX_BATCH
    config["postprocess"]["classification"]["labels"] = "labels.txt"
    (root / "small-cnn" / "model.yaml").write_text(yaml.safe_dump(config))
    (root / "small-cnn" / "labels.txt").write_text("\n".join(LABELS) + "\n")
    _pose_model(root)
    return root


@pytest.fixture(scope="module")
def server(repo: Path) -> Iterator[ServerThread]:
    thread = ServerThread(
        ServerConfig(str(repo), http_port=0, grpc_port=0, max_request_bytes=4 * 1024 * 1024)
    ).start()
    yield thread
    thread.stop()


def _decoded(repo: Path, model: str, data: bytes) -> np.ndarray:
    """What the server should make of an upload: the same decode and transform."""
    path = repo / model / "model.yaml"
    config = parse_model_config(yaml.safe_load(path.read_text()), str(path))
    assert config.preprocess is not None and not hasattr(config.preprocess, "tokenizer")
    spec = image_preprocess(config.preprocess, "FP32")  # type: ignore[arg-type]
    tensor, _ = image_tensor(data, spec)
    return tensor


def _tensor_logits(server: ServerThread, pixels: np.ndarray) -> np.ndarray:
    client = httpclient.InferenceServerClient(server.address)
    infer_input = httpclient.InferInput("input", list(pixels.shape), "FP32")
    infer_input.set_data_from_numpy(pixels.astype(np.float32))
    result = client.infer("small-cnn", [infer_input])
    logits = result.as_numpy("logits")
    assert logits is not None
    return logits


def _top5(logits: np.ndarray) -> dict[str, float]:
    shifted = np.exp(logits - logits.max())
    probabilities = shifted / shifted.sum()
    order = np.argsort(-probabilities, kind="stable")[:5]
    return {LABELS[i]: float(probabilities[i]) for i in order}


def _assert_same_top5(got: dict[str, float], want: dict[str, float]) -> None:
    assert list(got) == list(want)
    assert np.allclose(list(got.values()), list(want.values()), rtol=1e-4, atol=1e-6)


def test_one_image_multipart_equals_tensor_path(server: ServerThread, repo: Path) -> None:
    jpeg = _image(120, 90, seed=1)
    response = requests.post(
        f"{server.url}/predictions/small-cnn", files={"images": ("cat.jpg", jpeg)}, timeout=60
    )
    assert response.status_code == 200, response.text
    expected = _top5(_tensor_logits(server, _decoded(repo, "small-cnn", jpeg)[None])[0])
    _assert_same_top5(response.json(), expected)


def test_several_images_come_back_in_order(server: ServerThread, repo: Path) -> None:
    uploads = [_image(100, 80, 2), _image(64, 64, 3, "PNG"), _image(300, 200, 4)]
    files = [("images", (f"{i}.img", data)) for i, data in enumerate(uploads)]
    response = requests.post(f"{server.url}/predictions/small-cnn", files=files, timeout=60)
    assert response.status_code == 200, response.text
    answers = response.json()
    assert isinstance(answers, list) and len(answers) == 3
    pixels = np.stack([_decoded(repo, "small-cnn", data) for data in uploads])
    logits = _tensor_logits(server, pixels)
    for answer, row in zip(answers, logits, strict=True):
        _assert_same_top5(answer, _top5(row))


@pytest.mark.parametrize("content_type", ["image/jpeg", "application/octet-stream", None])
def test_raw_body_is_one_image(server: ServerThread, repo: Path, content_type: str | None) -> None:
    jpeg = _image(90, 90, seed=5)
    headers = {"Content-Type": content_type} if content_type else {}
    response = requests.post(
        f"{server.url}/predictions/small-cnn", data=jpeg, headers=headers, timeout=60
    )
    assert response.status_code == 200, response.text
    expected = _top5(_tensor_logits(server, _decoded(repo, "small-cnn", jpeg)[None])[0])
    _assert_same_top5(response.json(), expected)


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/x-www-form-urlencoded", None]
)
def test_json_tensors_still_work_on_predictions(
    server: ServerThread, content_type: str | None
) -> None:
    """JSON is told from an image by its type, or by its first byte when the type says
    nothing (curl -d sends form-urlencoded)."""
    body = json.dumps(np.zeros((3, 64, 64), dtype=np.float32).tolist()).encode()
    headers = {"Content-Type": content_type} if content_type else {}
    response = requests.post(
        f"{server.url}/predictions/small-cnn", data=body, headers=headers, timeout=60
    )
    assert response.status_code == 200, response.text
    assert len(response.json()) == 10  # the logits of one sample, as before


def test_tritonclient_http_sends_jpeg_bytes_and_gets_classes(
    server: ServerThread, repo: Path
) -> None:
    uploads = [_image(70, 100, 6), _image(128, 128, 7, "PNG")]
    images = np.array([[data] for data in uploads], dtype=np.object_)
    client = httpclient.InferenceServerClient(server.address)
    infer_input = httpclient.InferInput("images", [2, 1], "BYTES")
    infer_input.set_data_from_numpy(images, binary_data=True)
    outputs = [
        httpclient.InferRequestedOutput("logits", binary_data=True, class_count=3),
    ]
    result = client.infer("small-cnn", [infer_input], outputs=outputs)
    classes = result.as_numpy("logits")
    assert classes is not None and classes.shape == (2, 3)

    pixels = np.stack([_decoded(repo, "small-cnn", data) for data in uploads])
    logits = _tensor_logits(server, pixels)
    for row, expected in zip(classes, logits, strict=True):
        parsed = [item.decode().split(":", 2) for item in row]
        indices = [int(index) for _, index, _ in parsed]
        assert indices == list(np.argsort(-expected, kind="stable")[:3])
        assert [label for _, _, label in parsed] == [LABELS[i] for i in indices]
        assert np.allclose([float(v) for v, _, _ in parsed], expected[indices], atol=1e-5)


def test_tritonclient_grpc_sends_jpeg_bytes(server: ServerThread, repo: Path) -> None:
    jpeg = _image(64, 64, 8)
    client = grpcclient.InferenceServerClient(server.grpc_address)
    infer_input = grpcclient.InferInput("images", [1, 1], "BYTES")
    infer_input.set_data_from_numpy(np.array([[jpeg]], dtype=np.object_))
    outputs = [
        grpcclient.InferRequestedOutput("logits", class_count=2),
    ]
    result = client.infer("small-cnn", [infer_input], outputs=outputs)
    classes = result.as_numpy("logits")
    assert classes is not None and classes.shape == (1, 2)
    expected = _tensor_logits(server, _decoded(repo, "small-cnn", jpeg)[None])[0]
    assert [int(item.decode().split(":")[1]) for item in classes[0]] == list(
        np.argsort(-expected, kind="stable")[:2]
    )


def test_classification_extension_on_a_tensor_model(server: ServerThread) -> None:
    """Any numeric output can be asked for as top-k, uploads or not (no labels here)."""
    client = httpclient.InferenceServerClient(server.address)
    pixels = np.random.default_rng(9).standard_normal((2, 3, 64, 64)).astype(np.float32)
    infer_input = httpclient.InferInput("input", [2, 3, 64, 64], "FP32")
    infer_input.set_data_from_numpy(pixels)
    result = client.infer(
        "small-cnn",
        [infer_input],
        outputs=[httpclient.InferRequestedOutput("logits", binary_data=False, class_count=4)],
    )
    classes = result.as_numpy("logits")
    logits = _tensor_logits(server, pixels)
    assert classes is not None and classes.shape == (2, 4)
    for row, expected in zip(classes, logits, strict=True):
        texts = [item if isinstance(item, str) else item.decode() for item in row]  # JSON: str
        indices = [int(text.split(":")[1]) for text in texts]
        assert indices == list(np.argsort(-expected, kind="stable")[:4])


def test_pose_keypoints_in_the_uploaded_image_coordinates(server: ServerThread) -> None:
    """A red spot at (x=150, y=40) of a 200x100 image: every keypoint is found there."""
    pixels = np.zeros((100, 200, 3), dtype=np.uint8)
    pixels[30:50, 125:175, 0] = 255  # spans whole heatmap cells after the resize to 64x64
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    response = requests.post(
        f"{server.url}/predictions/pose", files={"images": buffer.getvalue()}, timeout=60
    )
    assert response.status_code == 200, response.text
    keypoints = response.json()["keypoints"]
    assert len(keypoints) == 18
    people = response.json()["people"]  # grouped from the toy PAFs: only its shape is checked
    assert isinstance(people, list) and all(isinstance(person, dict) for person in people)
    for point in keypoints.values():
        assert abs(point["x"] - 150) < 200 / 8 and abs(point["y"] - 40) < 100 / 8
        assert point["score"] > 0.05

    client = httpclient.InferenceServerClient(server.address)
    infer_input = httpclient.InferInput("images", [1, 1], "BYTES")
    infer_input.set_data_from_numpy(np.array([[buffer.getvalue()]], dtype=np.object_))
    result = client.infer(
        "pose", [infer_input], outputs=[httpclient.InferRequestedOutput("keypoints")]
    )
    v2 = result.as_numpy("keypoints")
    assert v2 is not None and v2.shape == (1, 18, 3)
    first = next(iter(keypoints.values()))
    assert np.allclose(v2[0, 0, :2], [first["x"], first["y"]], atol=0.01)


@pytest.mark.parametrize("transport", ["http-json", "http-binary", "grpc"])
def test_loadtest_sends_an_upload_models_tensors_not_random_bytes(
    server: ServerThread, transport: str
) -> None:
    """Metadata lists the upload input (BYTES) beside the tensors; random bytes cannot be an
    image, so ``inferpack loadtest`` sends the tensors, and they are answered."""
    from inferpack.loadtest.payloads import build_payloads
    from inferpack.protocol.proto import inference_pb2 as pb

    grpc = transport == "grpc"
    url = f"grpc://{server.grpc_address}" if grpc else server.url
    (payload,) = build_payloads(url, transport, ("small-cnn",), 2, seed=0)
    if grpc:
        import grpc as grpc_io

        from inferpack.protocol.proto import inference_pb2_grpc as pb_grpc

        message = pb.ModelInferRequest.FromString(payload.body)
        assert [t.name for t in message.inputs] == ["input"]
        with grpc_io.insecure_channel(server.grpc_address) as channel:
            answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(message, timeout=60)
        assert list(answer.outputs[0].shape) == [2, 10]
        return
    response = requests.post(
        f"{server.url}/v2/models/small-cnn/infer",
        data=payload.body,
        headers=dict(payload.headers),
        timeout=60,
    )
    assert response.status_code == 200, response.text


def test_metadata_and_config_describe_uploads(server: ServerThread) -> None:
    client = httpclient.InferenceServerClient(server.address)
    metadata = client.get_model_metadata("pose")
    names = [o["name"] for o in metadata["outputs"]]
    assert names == ["pafs", "heatmaps", "keypoints", "people"]
    assert [i["name"] for i in metadata["inputs"]] == ["input", "images"]
    config = client.get_model_config("small-cnn")
    inputs = {i["name"]: i for i in config["input"]}
    assert inputs["images"]["data_type"] == "TYPE_STRING" and inputs["images"]["optional"]
    assert config["output"][0]["label_filename"] == "labels.txt"
    assert "classification" in client.get_server_metadata()["extensions"]


BAD_UPLOADS = [
    ("not an image", {"images": b"hello, this is text"}, 400, "not"),
    ("empty", {"images": b""}, 400, "empty"),
    ("truncated", {"images": _image(200, 200, 10)[:600]}, 400, "truncated"),
    ("huge declared size", {"images": _png_header(20000, 20000)}, 413, "pixels"),
    ("over max_pixels", {"images": _png_header(8000, 8000)}, 413, "8000x8000"),
    # Over Pillow's own warning limit too (89.5 M pixels): a warning, an error under pytest.
    ("over Pillow's limit", {"images": _png_header(10000, 10000)}, 413, "pixels"),
    ("wrong field name", {"image": _image(32, 32, 11)}, 400, "images"),
]


@pytest.mark.parametrize(
    ("case", "files", "status", "word"), BAD_UPLOADS, ids=[c[0] for c in BAD_UPLOADS]
)
def test_bad_uploads_get_a_clear_error(
    server: ServerThread, case: str, files: dict[str, bytes], status: int, word: str
) -> None:
    response = requests.post(f"{server.url}/predictions/small-cnn", files=files, timeout=60)
    assert response.status_code == status, (case, response.text)
    assert word in response.json()["error"], response.json()


def test_too_many_images_is_413(server: ServerThread) -> None:
    files = [("images", _image(16, 16, i)) for i in range(MAX_BATCH + 1)]
    response = requests.post(f"{server.url}/predictions/small-cnn", files=files, timeout=60)
    assert response.status_code == 413, response.text
    assert str(MAX_BATCH) in response.json()["error"]


def test_bad_bytes_over_v2_are_400(server: ServerThread) -> None:
    client = httpclient.InferenceServerClient(server.address)
    infer_input = httpclient.InferInput("images", [1, 1], "BYTES")
    infer_input.set_data_from_numpy(np.array([[b"\x89PNG garbage"]], dtype=np.object_))
    with pytest.raises(InferenceServerException) as error:
        client.infer("small-cnn", [infer_input])
    assert error.value.status() == "400"
    assert "image 0 is not a decodable image" in str(error.value.message())


def test_bad_uploads_do_not_disturb_good_ones(server: ServerThread, repo: Path) -> None:
    """Good and corrupt uploads at once: every good one answered right, every bad one 400."""
    good = _image(64, 48, 12)
    expected = _top5(_tensor_logits(server, _decoded(repo, "small-cnn", good)[None])[0])
    results: list[tuple[bool, int, object]] = []
    lock = threading.Lock()

    def send(is_good: bool) -> None:
        data = good if is_good else good[: len(good) // 3]
        response = requests.post(
            f"{server.url}/predictions/small-cnn", files={"images": data}, timeout=60
        )
        with lock:
            results.append((is_good, response.status_code, response.json()))

    threads = [threading.Thread(target=send, args=(i % 2 == 0,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert len(results) == 16
    for is_good, status, body in results:
        if is_good:
            assert status == 200
            assert isinstance(body, dict)
            _assert_same_top5(body, expected)
        else:
            assert status == 400, body
    assert requests.get(f"{server.url}/v2/health/ready", timeout=10).status_code == 200


def test_both_upload_and_tensor_is_refused(server: ServerThread) -> None:
    body = {
        "inputs": [
            {"name": "images", "datatype": "BYTES", "shape": [1, 1], "data": ["x"]},
            {"name": "input", "datatype": "FP32", "shape": [1, 3, 64, 64], "data": [0.0] * 12288},
        ]
    }
    response = requests.post(
        f"{server.url}/v2/models/small-cnn/infer", data=json.dumps(body), timeout=60
    )
    assert response.status_code == 400
    assert "either" in response.json()["error"]


@settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    kinds=st.lists(
        st.sampled_from(["jpeg", "png", "corrupt", "tensor", "pair", "bytes"]),
        min_size=4,
        max_size=14,
    ),
    seed=st.integers(0, 1000),
)
def test_random_mixes_are_each_answered_once_and_right(
    server: ServerThread, repo: Path, kinds: list[str], seed: int
) -> None:
    """Concurrent random mixes of uploads (single, pairs, corrupt), v2 BYTES and tensor
    requests: each gets exactly its own answer, nothing hangs."""
    rng = np.random.default_rng(seed)
    jobs: list[tuple[str, object]] = []
    for kind in kinds:
        size = (int(rng.integers(20, 160)), int(rng.integers(20, 160)))
        if kind == "pair":
            jobs.append((kind, [_image(*size, int(rng.integers(10**6))) for _ in range(2)]))
        elif kind == "corrupt":
            jobs.append((kind, _image(*size, int(rng.integers(10**6)))[:100]))
        else:
            jobs.append(
                (kind, _image(*size, int(rng.integers(10**6)), "PNG" if kind == "png" else "JPEG"))
            )
    expected = {
        i: [
            _top5(row)
            for row in _tensor_logits(
                server,
                np.stack(
                    [_decoded(repo, "small-cnn", d) for d in (data if kind == "pair" else [data])]
                ),
            )
        ]
        for i, (kind, data) in enumerate(jobs)
        if kind != "corrupt"
    }
    answers: dict[int, list[object]] = {}
    lock = threading.Lock()

    def run(index: int, kind: str, data: object) -> None:
        if kind == "tensor":
            pixels = _decoded(repo, "small-cnn", data)[None]  # type: ignore[arg-type]
            got: object = [_top5(_tensor_logits(server, pixels)[0])]
        elif kind == "bytes":
            client = httpclient.InferenceServerClient(server.address)
            infer_input = httpclient.InferInput("images", [1, 1], "BYTES")
            infer_input.set_data_from_numpy(np.array([[data]], dtype=np.object_))
            logits = client.infer("small-cnn", [infer_input]).as_numpy("logits")
            assert logits is not None
            got = [_top5(logits[0])]
        else:
            items = data if kind == "pair" else [data]
            files = [("images", item) for item in items]  # type: ignore[union-attr]
            response = requests.post(f"{server.url}/predictions/small-cnn", files=files, timeout=60)
            body = response.json()
            got = (
                response.status_code if kind == "corrupt" else (body if kind == "pair" else [body])
            )
        with lock:
            answers.setdefault(index, []).append(got)

    threads = [threading.Thread(target=run, args=(i, k, d)) for i, (k, d) in enumerate(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive()
    assert sorted(answers) == list(range(len(jobs)))
    for index, (kind, _) in enumerate(jobs):
        (got,) = answers[index]  # exactly once
        if kind == "corrupt":
            assert got == 400
            continue
        assert isinstance(got, list) and len(got) == len(expected[index])
        for answer, want in zip(got, expected[index], strict=True):
            _assert_same_top5(answer, want)


def _loadtest(*args: str) -> subprocess.CompletedProcess[str]:
    command = ["loadtest", "--duration-s", "1.5", "--warmup-s", "0.3", "--max-windows", "3"]
    return subprocess.run(
        inferpack(*command, *args), capture_output=True, text=True, timeout=120, check=False
    )


@pytest.mark.parametrize("transport", ["http", "grpc"])
def test_loadtest_sends_a_file_as_the_upload(
    server: ServerThread, tmp_path: Path, transport: str
) -> None:
    image = tmp_path / "cat.jpg"
    image.write_bytes(_image(120, 90, seed=21))
    url = server.url if transport == "http" else f"grpc://{server.grpc_address}"
    output = tmp_path / "lt.json"
    result = _loadtest(
        "--url", url, "--model", "small-cnn", "--input-file", f"images={image}",
        "--concurrency", "2", "--batch-size", "2", "--output", str(output),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr + result.stdout
    document = json.loads(output.read_text())
    assert document["spec"]["input_files"] == [["images", str(image)]]
    [level] = document["levels"]
    assert level["errors"] == {} and level["requests"] > 0
    assert level["items_per_s"] == pytest.approx(2 * level["throughput_rps"], rel=1e-3)


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--input-file", "images"], 2, "NAME=PATH"),
        (["--input-file", "images=/nowhere/cat.jpg"], 1, "No such file"),
        (["--input-file", "images={jpeg}", "--no-binary"], 1, "not UTF-8 text"),
        (["--input-file", "image={jpeg}"], 0, "errors"),  # the server names the input: 400s
    ],
)
def test_loadtest_input_file_errors_are_named(
    server: ServerThread, tmp_path: Path, args: list[str], code: int, message: str
) -> None:
    jpeg = tmp_path / "cat.jpg"
    jpeg.write_bytes(_image(32, 32, seed=22))
    output = tmp_path / "lt.json"
    filled = [arg.format(jpeg=jpeg) for arg in args]
    result = _loadtest(
        "--url", server.url, "--model", "small-cnn", "--concurrency", "1",
        "--output", str(output), *filled,
    )  # fmt: skip
    assert result.returncode == code, result.stdout + result.stderr
    assert message in " ".join((result.stdout + result.stderr).split())


def test_uint8_pixels_are_taken_as_they_are(server: ServerThread, repo: Path) -> None:
    """Decoded RGB frames (UINT8 [n, H, W, 3]) in the upload input skip decoding and get the
    same resize, crop and normalisation as an uploaded PNG of the same pixels."""
    from inferpack.processing.image import decode_image

    pngs = [_image(100, 70, 23, "PNG"), _image(100, 70, 24, "PNG")]
    pixels = np.stack([decode_image(data, 10**6) for data in pngs])
    client = httpclient.InferenceServerClient(server.address)
    frames = httpclient.InferInput("images", list(pixels.shape), "UINT8")
    frames.set_data_from_numpy(pixels)
    logits = client.infer("small-cnn", [frames]).as_numpy("logits")
    expected = _tensor_logits(server, np.stack([_decoded(repo, "small-cnn", d) for d in pngs]))
    assert logits is not None
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)

    wrong = httpclient.InferInput("images", [1, 70, 100], "UINT8")
    wrong.set_data_from_numpy(pixels[:1, :, :, 0])
    with pytest.raises(InferenceServerException) as error:
        client.infer("small-cnn", [wrong])
    assert error.value.status() == "400" and "[n, H, W, 3]" in str(error.value.message())
