"""Images/s for squeezenet from JPEG uploads vs from float32 tensors, and bytes per request
(issue [8]).

The server decodes, resizes (shorter side 256), crops (224) and normalises each JPEG on its
processing pool, then batches the tensors with the model; the tensor path sends the same
224 x 224 float32 pixels already made. Each path runs closed-loop at one image per request
and at 8 images per request:

- ``multipart``: ``POST /predictions/squeezenet`` with ``images`` form fields (top-5 back)
- ``v2_bytes``: KServe v2 binary BYTES input ``images`` (what tritonclient sends), logits back
- ``v2_fp32``: KServe v2 binary FP32 input ``input`` [n, 3, 224, 224], logits back

Client and server share this machine's cores (the result names the machine).
Writes benchmarks/results/uploads_cpu.json.

    python benchmarks/uploads.py [--duration-s 15] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import shutil
import struct
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from benchmarks.common import binary_body, closed_loop, served, write_result
from inferpack.repository.init import init_repository

BOUNDARY = "inferpackbenchboundary"
WARMUP_S = 3.0


def photo_like_jpeg(seed: int, size: tuple[int, int] = (500, 375)) -> bytes:
    """A JPEG with the structure of a photo (smooth regions, edges, fine texture), so its
    size and decode cost resemble an ImageNet validation image (~500 x 375, 100-150 KB)."""
    rng = np.random.default_rng(seed)
    width, height = size
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack(
        [
            128 + 100 * np.sin(x / rng.uniform(20, 60) + c) * np.cos(y / rng.uniform(20, 60))
            for c in range(3)
        ],
        axis=-1,
    )
    image = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(30):
        x0, y0 = rng.integers(0, width), rng.integers(0, height)
        box = (x0, y0, x0 + rng.integers(10, 120), y0 + rng.integers(10, 120))
        draw.ellipse(box, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    noise = rng.normal(0, 12, size=(height, width, 3))
    textured = np.clip(np.asarray(image.filter(ImageFilter.GaussianBlur(1.2))) + noise, 0, 255)
    buffer = io.BytesIO()
    Image.fromarray(textured.astype(np.uint8)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def multipart_body(images: list[bytes]) -> tuple[bytes, dict[str, str]]:
    parts = []
    for index, data in enumerate(images):
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="images"; '
            f'filename="{index}.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
        ).encode()
        parts.append(head + data + b"\r\n")
    body = b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()
    return body, {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def v2_bytes_body(images: list[bytes]) -> tuple[bytes, dict[str, str]]:
    """KServe v2 binary BYTES: each element a 4-byte little-endian length and its bytes."""
    raw = b"".join(struct.pack("<I", len(data)) + data for data in images)
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "images",
                    "datatype": "BYTES",
                    "shape": [len(images), 1],
                    "parameters": {"binary_data_size": len(raw)},
                }
            ],
            "outputs": [{"name": "logits", "parameters": {"binary_data": True}}],
        }
    ).encode()
    return header + raw, {"Inference-Header-Content-Length": str(len(header))}


def decoded_pixels(repo: Path, images: list[bytes]) -> np.ndarray:
    """The float32 tensors the server makes of the JPEGs (the tensor path sends these)."""
    import yaml

    from inferpack.config.model_config import parse_model_config
    from inferpack.config.processing_config import ImageInput
    from inferpack.processing.image import image_tensor
    from inferpack.processing.pipeline import image_preprocess

    path = repo / "squeezenet" / "model.yaml"
    config = parse_model_config(yaml.safe_load(path.read_text()), str(path))
    assert isinstance(config.preprocess, ImageInput)
    spec = image_preprocess(config.preprocess, "FP32")
    return np.stack([image_tensor(data, spec)[0] for data in images]).astype(np.float32)


async def measure(url: str, repo: Path, duration_s: float, concurrency: int) -> list[Any]:
    images = [photo_like_jpeg(seed) for seed in range(8)]
    rows: list[dict[str, Any]] = []
    for per_request in (1, 8):
        batch = images[:per_request]
        cases = {
            "multipart": (f"{url}/predictions/squeezenet", *multipart_body(batch)),
            "v2_bytes": (f"{url}/v2/models/squeezenet/infer", *v2_bytes_body(batch)),
            "v2_fp32": (
                f"{url}/v2/models/squeezenet/infer",
                *binary_body("input", decoded_pixels(repo, batch)),
            ),
        }
        for path, (endpoint, body, headers) in cases.items():
            level = await closed_loop(
                endpoint,
                body,
                headers,
                concurrency=concurrency,
                duration_s=duration_s,
                warmup_s=WARMUP_S,
            )
            requests_per_s = float(level["requests_per_s"])  # type: ignore[arg-type]
            rows.append(
                {
                    "path": path,
                    "images_per_request": per_request,
                    "bytes_per_request": len(body),
                    "bytes_per_image": round(len(body) / per_request),
                    "images_per_s": round(requests_per_s * per_request, 1),
                    **level,
                }
            )
            print(json.dumps(rows[-1]))
    return rows


def decode_ms(repo: Path, images: list[bytes], rounds: int = 20) -> dict[str, float]:
    """In-process cost of one image's decode + resize + crop + normalise (one thread)."""
    import time

    import yaml

    from inferpack.config.model_config import parse_model_config
    from inferpack.config.processing_config import ImageInput
    from inferpack.processing.image import image_tensor
    from inferpack.processing.pipeline import image_preprocess

    path = repo / "squeezenet" / "model.yaml"
    config = parse_model_config(yaml.safe_load(path.read_text()), str(path))
    assert isinstance(config.preprocess, ImageInput)
    spec = image_preprocess(config.preprocess, "FP32")
    timings = []
    for _ in range(rounds):
        for data in images:
            started = time.perf_counter()
            image_tensor(data, spec)
            timings.append((time.perf_counter() - started) * 1e3)
    timings.sort()
    return {
        "p50": round(timings[len(timings) // 2], 3),
        "mean": round(sum(timings) / len(timings), 3),
    }


def decode_large_ms(rounds: int = 5) -> dict[str, float]:
    """A 4000 x 3000 (12 MP) photo-like JPEG to squeezenet's input, one thread: the full
    decode (default) vs ``jpeg_draft`` (libjpeg scales at decode)."""
    import time

    from inferpack.processing.image import ImagePreprocess, image_tensor

    data = photo_like_jpeg(0, (4000, 3000))
    result: dict[str, float] = {"jpeg_bytes": float(len(data))}
    for name, draft in (("full_decode_ms", False), ("jpeg_draft_ms", True)):
        spec = ImagePreprocess(resize=256, crop=(224, 224), jpeg_draft=draft)
        image_tensor(data, spec)
        started = time.perf_counter()
        for _ in range(rounds):
            image_tensor(data, spec)
        result[name] = round((time.perf_counter() - started) / rounds * 1e3, 1)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration-s", type=float, default=15.0)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    repo = Path(tempfile.mkdtemp(prefix="inferpack-uploads-"))
    try:
        init_repository(repo, ["squeezenet"], seed=0)
        decode = decode_ms(repo, [photo_like_jpeg(seed) for seed in range(8)])
        decode_large = decode_large_ms()
        with served(repo) as url:
            rows = asyncio.run(measure(url, repo, args.duration_s, args.concurrency))
    finally:
        shutil.rmtree(repo, ignore_errors=True)
    jpeg_sizes = [len(photo_like_jpeg(seed)) for seed in range(8)]
    path = write_result(
        "uploads_cpu.json",
        {
            "model": "squeezenet (seeded weights), 500x375 JPEG q90 -> resize 256, crop 224",
            "jpeg_bytes_mean": round(sum(jpeg_sizes) / len(jpeg_sizes)),
            "decode_preprocess_ms_per_image_one_thread": decode,
            "decode_preprocess_12mp_one_thread": decode_large,
            "concurrency": args.concurrency,
            "duration_s": args.duration_s,
            "results": rows,
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
