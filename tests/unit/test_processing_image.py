"""Image decoding and the resize / crop / normalise transform (no server)."""

from __future__ import annotations

import io
import struct
import threading
import time
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile

from inferpack.errors import InvalidInputError, PayloadTooLargeError
from inferpack.processing.image import (
    ImagePreprocess,
    ImageTransform,
    decode_image,
    image_tensor,
    preprocess_image,
)


def _encode(pixels: np.ndarray, fmt: str, mode: str | None = None) -> bytes:
    image = Image.fromarray(pixels)
    if mode is not None:
        image = image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _gradient(width: int, height: int) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x % 256, y % 256, (x + y) % 256], axis=-1).astype(np.uint8)


def test_png_round_trips_exactly() -> None:
    pixels = _gradient(40, 30)
    assert np.array_equal(decode_image(_encode(pixels, "PNG"), 10_000), pixels)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_other_modes_become_rgb(mode: str) -> None:
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    decoded = decode_image(_encode(_gradient(20, 10), fmt, mode), 10_000)
    assert decoded.shape == (10, 20, 3) and decoded.dtype == np.uint8


def test_exif_orientation_is_applied() -> None:
    image = Image.fromarray(_gradient(40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert decode_image(buffer.getvalue(), 10_000).shape == (40, 20, 3)


def test_imagenet_transform_shapes_and_values() -> None:
    spec = ImagePreprocess(
        resize=256, crop=(224, 224), mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)
    )
    row, transform = preprocess_image(_gradient(500, 375), spec)
    assert row.shape == (3, 224, 224) and row.dtype == np.float32
    assert spec.output_dims() == (3, 224, 224)
    # 500 x 375 -> shorter side 256: 341 x 256 (torchvision: int(256 * 500 / 375)).
    assert transform.scale_x == pytest.approx(341 / 500) and transform.scale_y == 256 / 375
    assert (transform.crop_x, transform.crop_y) == (58, 16)
    resized = np.asarray(Image.fromarray(_gradient(500, 375)).resize((341, 256), Image.BILINEAR))
    crop = resized[16:240, 58:282].astype(np.float32) / 255
    expected = (crop - np.array(spec.mean)) / np.array(spec.std)
    assert np.allclose(row, expected.transpose(2, 0, 1), atol=1e-5)


def test_layout_color_and_datatypes() -> None:
    pixels = _gradient(8, 6)
    hwc, _ = preprocess_image(pixels, ImagePreprocess(layout="HWC", scale=1.0))
    assert hwc.shape == (6, 8, 3) and np.array_equal(hwc, pixels.astype(np.float32))
    bgr, _ = preprocess_image(pixels, ImagePreprocess(color="BGR", scale=1.0))
    assert np.array_equal(bgr[0], pixels[..., 2].astype(np.float32))
    raw, _ = preprocess_image(pixels, ImagePreprocess(datatype="UINT8"))
    assert raw.dtype == np.uint8 and np.array_equal(raw, pixels.transpose(2, 0, 1))
    half, _ = preprocess_image(pixels, ImagePreprocess(datatype="FP16"))
    assert half.dtype == np.float16


def test_coordinates_map_back_to_the_upload() -> None:
    spec = ImagePreprocess(resize=(100, 200), crop=(80, 160))
    _, transform = preprocess_image(_gradient(400, 50), spec)
    # The crop's centre is the image's centre.
    x, y = transform.to_original(np.array([79.5]), np.array([39.5]))
    assert x[0] == pytest.approx(199.5) and y[0] == pytest.approx(24.5)
    identity = ImageTransform.identity(10, 10)
    assert identity.to_original(np.array([3.0]), np.array([4.0])) == (3.0, 4.0)


ERRORS = [
    (b"", InvalidInputError, "empty"),
    (b"definitely not an image", InvalidInputError, "not a decodable image"),
    (_encode(_gradient(64, 64), "JPEG")[:300], InvalidInputError, "truncated"),
    (_encode(_gradient(64, 64), "PNG")[:-30], InvalidInputError, "image 3"),
]


@pytest.mark.parametrize(("data", "error", "words"), ERRORS)
def test_bad_data_is_named(data: bytes, error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words):
        decode_image(data, 10_000, index=3)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.mark.parametrize(("side", "words"), [(20000, "too many pixels"), (8000, "8000x8000")])
def test_declared_size_refused_before_decoding(side: int, words: str) -> None:
    ihdr = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0"))
    started = time.perf_counter()
    with pytest.raises(PayloadTooLargeError, match=words):
        decode_image(png, 50_000_000)
    assert time.perf_counter() - started < 1.0  # nothing was allocated or decoded


def test_crop_larger_than_image_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="smaller than the 64x64 crop"):
        preprocess_image(_gradient(30, 30), ImagePreprocess(crop=(64, 64)), index=0)


def test_image_tensor_is_decode_then_preprocess() -> None:
    data = _encode(_gradient(90, 70), "PNG")
    spec = ImagePreprocess(resize=64, crop=(64, 64))
    row, _ = image_tensor(data, spec)
    assert np.array_equal(row, preprocess_image(decode_image(data, 10**6), spec)[0])


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(1, 300),
    height=st.integers(1, 300),
    resize=st.one_of(st.integers(32, 200), st.tuples(st.integers(8, 120), st.integers(8, 120))),
    layout=st.sampled_from(["CHW", "HWC"]),
)
def test_fixed_output_dims_always_hold(
    width: int, height: int, resize: int | tuple[int, int], layout: str
) -> None:
    crop = (min(32, resize) if isinstance(resize, int) else min(resize),) * 2
    spec = ImagePreprocess(resize=resize, crop=crop, layout=layout)
    row, transform = preprocess_image(np.zeros((height, width, 3), np.uint8), spec)
    assert row.shape == spec.output_dims()
    assert transform.width == width and transform.height == height


def test_matches_torchvision_when_present() -> None:
    transforms = pytest.importorskip("torchvision.transforms")
    image = Image.fromarray(_gradient(300, 200))
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    reference = transforms.Compose(
        [
            transforms.Resize(256),
            transforms.CenterCrop(224),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )(image).numpy()
    row, _ = preprocess_image(
        np.asarray(image), ImagePreprocess(resize=256, crop=(224, 224), mean=mean, std=std)
    )
    assert np.allclose(row, reference, atol=1e-2)


def _smooth_jpeg(width: int, height: int, exif: Image.Exif | None = None) -> bytes:
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    pixels = np.stack([128 + 100 * np.sin(x / 90 + c) * np.cos(y / 70) for c in range(3)], -1)
    buffer = io.BytesIO()
    image = Image.fromarray(pixels.astype(np.uint8))
    image.save(buffer, format="JPEG", quality=92, **({"exif": exif} if exif else {}))
    return buffer.getvalue()


def test_jpeg_draft_decodes_smaller_and_maps_back_to_the_full_image() -> None:
    from inferpack.processing.image import decode_image_sized

    data = _smooth_jpeg(2000, 1500)
    pixels, full = decode_image_sized(data, 10**8, draft_side=256)
    assert full == (2000, 1500)
    assert 256 <= min(pixels.shape[:2]) < 1500 // 2  # libjpeg scaled it at decode
    exact = ImagePreprocess(resize=256, crop=(224, 224))
    fast = ImagePreprocess(resize=256, crop=(224, 224), jpeg_draft=True)
    row_exact, t_exact = image_tensor(data, exact)
    row_fast, t_fast = image_tensor(data, fast)
    assert row_fast.shape == row_exact.shape == (3, 224, 224)
    assert np.abs(row_fast - row_exact).mean() < 2 / 255  # smooth image: nearly the same pixels
    assert (t_fast.width, t_fast.height) == (2000, 1500)
    centre = (np.array([111.5]), np.array([111.5]))
    for got, want in zip(t_fast.to_original(*centre), t_exact.to_original(*centre), strict=True):
        assert got[0] == pytest.approx(want[0], abs=3.0)  # the crop's centre, in full pixels


def test_jpeg_draft_keeps_exif_rotation_and_ignores_other_formats() -> None:
    from inferpack.processing.image import decode_image_sized

    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated: 1200 wide, 1600 high
    pixels, full = decode_image_sized(_smooth_jpeg(1600, 1200, exif), 10**8, draft_side=200)
    assert full == (1200, 1600) and pixels.shape[0] > pixels.shape[1] >= 200
    png = _encode(_gradient(800, 600), "PNG")
    pixels, full = decode_image_sized(png, 10**8, draft_side=100)
    assert pixels.shape[:2] == (600, 800) and full == (800, 600)


# A minimal EPS: what reaches Pillow's EpsImagePlugin (and, to load it, Ghostscript).
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 8 8\n0 0 moveto 8 8 lineto stroke\nshowpage\n"


def test_eps_is_refused_by_name_before_any_eps_code_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import EpsImagePlugin

    def parsed(*args: object) -> None:
        raise AssertionError("the EPS plugin parsed an upload")

    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", parsed)
    with pytest.raises(InvalidInputError, match=r"image 2 is EPS, not an accepted image format"):
        decode_image(EPS, 10_000, index=2)


@pytest.mark.parametrize("fmt", ["TIFF", "PPM", "ICO", "PCX", "SGI"])
def test_formats_off_the_allow_list_are_refused_by_name(fmt: str) -> None:
    data = _encode(_gradient(16, 16), fmt)
    Image.open(io.BytesIO(data)).load()  # Pillow itself reads it
    with pytest.raises(InvalidInputError, match=rf"is {fmt}, not an accepted image format"):
        decode_image(data, 10_000)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "GIF"])
def test_allowed_formats_decode(fmt: str) -> None:
    assert decode_image(_encode(_gradient(16, 12), fmt), 10_000).shape == (12, 16, 3)


def test_the_decoded_size_is_charged_before_decoding() -> None:
    """From the header: a 3000 x 2000 PNG of a few KB is charged 11 bytes a pixel, and a
    refused charge stops it before a pixel is decoded."""
    from inferpack.errors import OverloadedError
    from inferpack.processing.image import decode_image_sized, decoded_bytes

    data = _encode(np.zeros((2000, 3000, 3), np.uint8), "PNG")
    assert len(data) < 100_000
    charged: list[int] = []
    decode_image_sized(data, 10**8, charge=charged.append)
    assert charged == [decoded_bytes(3000, 2000, "RGB")] == [3000 * 2000 * 11]

    def refuse(nbytes: int) -> None:
        raise OverloadedError(f"{nbytes} would not fit")

    def never(*args: object) -> None:
        raise AssertionError("pixels were decoded")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ImageFile.ImageFile, "load", never)
        with pytest.raises(OverloadedError, match="66000000 would not fit"):
            decode_image_sized(data, 10**8, charge=refuse)


def test_image_tensor_trades_the_pixels_for_the_row() -> None:
    """While decoding: the pixels; once the row is made, only the row stays charged; a
    JPEG decoded at a draft scale is charged at that scale."""
    charges: list[int] = []
    spec = ImagePreprocess(resize=64, crop=(64, 64))
    row, _ = image_tensor(_encode(_gradient(400, 300), "PNG"), spec, charge=charges.append)
    assert charges == [400 * 300 * 11, row.nbytes - 400 * 300 * 11]
    assert sum(charges) == row.nbytes == 3 * 64 * 64 * 4
    charges.clear()
    fast = ImagePreprocess(resize=256, crop=(224, 224), jpeg_draft=True)
    image_tensor(_smooth_jpeg(2000, 1500), fast, charge=charges.append)
    assert charges[0] <= 1000 * 750 * 11  # decoded at 1/2 scale or less


def test_decoding_in_threads_leaves_the_warning_filters_alone() -> None:
    """Decoding runs on pool threads; warnings.catch_warnings there swaps the process's
    filters under every other thread (and can restore the wrong ones)."""
    before = list(warnings.filters)
    seen_changed = threading.Event()
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            if warnings.filters != before:
                seen_changed.set()

    data = _encode(_gradient(600, 400), "PNG")
    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda _: decode_image(data, 10**6), range(24)))
    finally:
        done.set()
        watcher.join()
    assert not seen_changed.is_set() and warnings.filters == before


@pytest.mark.parametrize("action", ["error", "default", "ignore"])
def test_a_size_over_pillows_own_limit_is_413_whatever_the_warning_filters(action: str) -> None:
    """10000 x 10000 passes Pillow's warning limit (89.5 M pixels): a warning, or an error
    where warnings are errors; either way the upload is 413, never an unhandled warning."""
    ihdr = struct.pack(">IIBBBBB", 10000, 10000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"\0"))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter(action)
        with pytest.raises(PayloadTooLargeError, match="pixels"):
            decode_image(png, 50_000_000)
